"""Is this request from Slack, now, and the first time? (Slack's request signing.)

Slack signs every request it sends: ``X-Slack-Signature: v0=HMAC-SHA256(signing secret,
"v0:{X-Slack-Request-Timestamp}:{raw body}")``. A request is accepted only when

1. a signing secret is configured (without one, every request is refused),
2. its timestamp is within five minutes of now,
3. its signature matches (checked with slack-sdk's ``SignatureVerifier``, a constant-time compare),
4. its signature was not seen in the last five minutes in this process (a replay).

Each refusal raises :class:`~cellgate.gateway.errors.Unauthorized` (401) with the reason.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from slack_sdk.signature import Clock, SignatureVerifier

from ..errors import Unauthorized

#: seconds a request stays acceptable, and a signature stays remembered
WINDOW = 300
#: signatures remembered at most (the oldest go first)
MAX_SEEN = 100_000


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class RequestVerifier:
    def __init__(self, signing_secret: str, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self._verifier = SignatureVerifier(signing_secret, _Clock(now)) if signing_secret.strip() else None
        self._seen: OrderedDict[str, float] = OrderedDict()

    @property
    def configured(self) -> bool:
        return self._verifier is not None

    def check(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Return if the request is authentic, fresh and new; raise :class:`Unauthorized` otherwise."""
        if self._verifier is None:
            raise Unauthorized("Slack requests are refused: no signing secret is configured on this gateway "
                               "(set Slack.signing_secret or CELLGATE_SLACK_SIGNING_SECRET)")
        timestamp = headers.get("X-Slack-Request-Timestamp", "")
        signature = headers.get("X-Slack-Signature", "")
        if not timestamp or not signature:
            raise Unauthorized("not a Slack request: X-Slack-Request-Timestamp and X-Slack-Signature are required")
        try:
            age = self._now() - int(timestamp)
        except ValueError:
            raise Unauthorized("X-Slack-Request-Timestamp is not a Unix time") from None
        if abs(age) > WINDOW:
            raise Unauthorized(f"the Slack request's timestamp is {int(abs(age))} s {'old' if age > 0 else 'ahead'}; "
                               f"requests older than {WINDOW // 60} minutes are refused (check the clocks)")
        if not self._verifier.is_valid(body=body, timestamp=timestamp, signature=signature):
            raise Unauthorized("the Slack request's signature is invalid")
        self._remember(signature, int(timestamp) + WINDOW)

    def _remember(self, signature: str, until: float) -> None:
        """Refuse ``signature`` if seen; else keep it until its timestamp is stale anyway."""
        now = self._now()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= MAX_SEEN):
            self._seen.popitem(last=False)
        if signature in self._seen:
            raise Unauthorized("this Slack request was already received (a replay)")
        self._seen[signature] = until
