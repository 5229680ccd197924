"""Is this request from Slack, now, and the first time? (Slack's request signing.)

Slack signs every request it sends: ``X-Slack-Signature: v0=HMAC-SHA256(signing secret,
"v0:{X-Slack-Request-Timestamp}:{raw body}")``. A request is accepted only when

1. a signing secret is configured (without one, every request is refused),
2. its timestamp is within five minutes of now,
3. its signature matches (checked with slack-sdk's ``SignatureVerifier``, a constant-time compare),
4. its signature was not accepted before (a replay).

Replays are caught in the store, so they are refused after a restart and by every replica: the
SHA-256 of each accepted signature is inserted into ``slack_seen_requests`` with ``expires_at`` =
its timestamp + five minutes (after that the timestamp check refuses it anyway); the primary key
makes a second insert fail, and that failure is the replay. Expired rows are deleted now and then
by the inserts. :meth:`RequestVerifier.verify` does the store work on the store's thread pool (off
the event loop); without a store (unit tests) the signatures are remembered in this process only.

Each refusal raises :class:`~cellgate.gateway.errors.Unauthorized` (401) with the reason.

An Events API event is redelivered by Slack with a new timestamp and signature (a retry), so its
``event_id`` is recorded the same way (:meth:`RequestVerifier.first_delivery`, the SHA-256 of
``event:`` + the ID, kept for :data:`EVENT_WINDOW`): an event is handled once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from slack_sdk.signature import Clock, SignatureVerifier
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import Unauthorized
from ..models import SlackSeenRequest

if TYPE_CHECKING:
    from ..store import Store

#: seconds a request stays acceptable, and a signature stays remembered
WINDOW = 300
#: signatures remembered at most in memory (the oldest go first; without a store only)
MAX_SEEN = 100_000
#: expired rows of slack_seen_requests are deleted on one insert in this many (and on the first)
PURGE_EVERY = 32

#: seconds an event's ID stays remembered (Slack's last retry comes about 5 minutes after the event)
EVENT_WINDOW = 3600

REPLAY = "this Slack request was already received (a replay)"


class _Clock(Clock):
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


class RequestVerifier:
    """Slack's signature, timestamp and replay checks; replays are recorded in ``store`` when given."""

    def __init__(self, signing_secret: str, now: Callable[[], float] = time.time, store: Store | None = None) -> None:
        self._now = now
        self._verifier = SignatureVerifier(signing_secret, _Clock(now)) if signing_secret.strip() else None
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._store = store
        self._inserts = 0

    @property
    def configured(self) -> bool:
        return self._verifier is not None

    def check(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Return if the request is authentic, fresh and new; raise :class:`Unauthorized` otherwise.

        Synchronous (the store call, if any, runs here): for threads and tests; handlers use :meth:`verify`.
        """
        digest, until = self.authentic(body, headers)
        if self._store is None:
            self._remember(digest, until)
        else:
            self._store.call(lambda session: self._record(session, digest, until))

    async def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        """:meth:`check`, with the replay check on the store's thread pool."""
        digest, until = self.authentic(body, headers)
        if self._store is None:
            self._remember(digest, until)
        else:
            await self._store.run(self._record, digest, until)

    async def first_delivery(self, event_id: str) -> bool:
        """Whether the event ``event_id`` is delivered for the first time (recorded in the store, as signatures are)."""
        digest = hashlib.sha256(f"event:{event_id}".encode()).hexdigest()
        until = self._now() + EVENT_WINDOW
        try:
            if self._store is None:
                self._remember(digest, until)
            else:
                await self._store.run(self._record, digest, until)
        except Unauthorized:
            return False
        return True

    def authentic(self, body: bytes, headers: Mapping[str, str]) -> tuple[str, float]:
        """Checks 1-3 (cheap, no I/O): (SHA-256 of the signature, until when it must be remembered)."""
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
        return hashlib.sha256(signature.encode("utf-8")).hexdigest(), float(int(timestamp) + WINDOW)

    def _record(self, session: Session, digest: str, until: float) -> None:
        """Insert the signature's hash; a unique violation is a replay. Purge expired rows now and then."""
        if self._inserts % PURGE_EVERY == 0:
            now = dt.datetime.fromtimestamp(self._now(), dt.UTC)
            session.execute(delete(SlackSeenRequest).where(SlackSeenRequest.expires_at < now))
        self._inserts += 1
        try:
            with session.begin_nested():
                session.add(SlackSeenRequest(signature=digest, expires_at=dt.datetime.fromtimestamp(until, dt.UTC)))
        except IntegrityError:
            raise Unauthorized(REPLAY) from None

    def _remember(self, signature: str, until: float) -> None:
        """Refuse ``signature`` if seen; else keep it until its timestamp is stale anyway (in memory)."""
        now = self._now()
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= MAX_SEEN):
            self._seen.popitem(last=False)
        if signature in self._seen:
            raise Unauthorized(REPLAY)
        self._seen[signature] = until
