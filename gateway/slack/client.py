"""Calls to the Slack Web API, with retries, off the event loop.

slack-sdk's ``WebClient`` (urllib) runs in a small thread pool of its own, so a slow or absent
Slack never holds the tornado loop nor the store's threads. (``AsyncWebClient`` would need
aiohttp, which cellgate does not depend on.) A call is tried ``Slack.retries`` times with
exponential backoff when the failure is transient (network, 5xx, rate limits); a permanent answer
(``channel_not_found``, ``invalid_auth``…) is not retried. What finally fails raises
:class:`SlackCallFailed`; callers in the background log it and go on.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from .config import Slack

log = logging.getLogger("cellgate.gateway.slack")

#: ``ok: false`` errors worth another try
TRANSIENT_ERRORS = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "team_added_to_org"})
#: methods Slack answers only with query or form parameters
READ_METHODS = frozenset({"users.info", "users.lookupByEmail", "auth.test"})
#: longest wait honoured from a ``Retry-After`` header
MAX_RETRY_AFTER = 30.0


class SlackCallFailed(Exception):
    """A Slack API call failed for good; ``error`` is Slack's error code or the transport's message."""

    def __init__(self, method: str, error: str, attempts: int) -> None:
        super().__init__(f"Slack {method} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {error}")
        self.method, self.error, self.attempts = method, error, attempts


def _classify(exc: Exception) -> tuple[str, bool, float]:
    """(error, transient, retry_after seconds) of a failed call."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 0) or 0
        data = response.data if isinstance(getattr(response, "data", None), dict) else {}
        error = str(data.get("error") or "no error code")
        if status != 200:
            error = f"HTTP {status}: {error}"
        retry_after = 0.0
        if status == 429:
            try:
                retry_after = min(float(response.headers.get("Retry-After", "1")), MAX_RETRY_AFTER)
            except (TypeError, ValueError, AttributeError):
                retry_after = 1.0
        return error, status >= 500 or status == 429 or error in TRANSIENT_ERRORS, retry_after
    # network errors (refused, reset, timeout) and unreadable answers: try again
    return f"{type(exc).__name__}: {exc}", True, 0.0


class SlackClient:
    """The bot's Web API client. ``enabled`` is False without a bot token: every call then fails at once."""

    def __init__(self, config: Slack) -> None:
        self.config = config
        self.enabled = bool(config.bot_token)
        self._web = WebClient(token=config.bot_token or None, base_url=config.api_url,
                              timeout=max(1, int(config.timeout)), retry_handlers=[])
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="slack")

    async def call(self, method: str, attempts: int | None = None, **params: Any) -> dict[str, Any]:
        """POST ``method`` with ``params`` (JSON body); the answer's data. Raises :class:`SlackCallFailed`."""
        if not self.enabled:
            raise SlackCallFailed(method, "no bot token configured (Slack.bot_token)", 0)
        attempts = attempts or self.config.retries
        loop = asyncio.get_running_loop()
        error = "?"
        for attempt in range(1, attempts + 1):
            try:
                response = await loop.run_in_executor(self._pool, self._post, method, params)
                return dict(response.data) if isinstance(response.data, dict) else {}
            except Exception as exc:  # noqa: BLE001 - classified, retried or raised as SlackCallFailed
                error, transient, retry_after = _classify(exc)
                if not transient or attempt == attempts:
                    raise SlackCallFailed(method, error, attempt) from None
                delay = max(retry_after, self.config.retry_delay * 2 ** (attempt - 1))
                log.info("Slack %s failed (%s); attempt %d of %d in %.1f s", method, error, attempt + 1, attempts, delay)
                await asyncio.sleep(delay)
        raise SlackCallFailed(method, error, attempts)  # not reached

    def _post(self, method: str, params: dict[str, Any]) -> Any:
        if method in READ_METHODS:  # Slack's read methods take no JSON body
            return self._web.api_call(method, http_verb="GET", params=params)
        return self._web.api_call(method, json=params)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
