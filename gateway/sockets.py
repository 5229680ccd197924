"""Open WebSockets by token and user, so that revocation reaches connections already open.

A request is authenticated when it arrives; a WebSocket (a kernel's channels, an agent's
socket) lives on. So every open socket is registered here with the identity that opened it:

- revoking a token (``DELETE /api/v1/tokens/{id}``) or deactivating a user
  (``DELETE /api/v1/users/{name}``) closes, in this process, the sockets it knows about at once;
- :meth:`SocketRegistry.watch` re-checks every open socket's token against the store every
  ``Gateway.socket_recheck_interval`` seconds (10 by default), for changes made elsewhere: another
  gateway replica, the CLI on the gateway host, or a token reaching its expiry.

A closed socket is closed with code 1008 (policy violation) and the reason; the client's next
attempt is refused with 401. Held cells are checked again before they run (``gate.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from . import auth
from .auth import Identity
from .errors import StoreUnavailable
from .store import Store

log = logging.getLogger("cellgate.gateway.sockets")

#: WebSocket close code for "your credentials no longer hold" (RFC 6455: policy violation)
CLOSE_REVOKED = 1008
REVOKED = "the token was revoked"
DEACTIVATED = "the user was deactivated"
INVALID = "the token is no longer valid (revoked, expired, or its user deactivated)"


class Revocable(Protocol):
    ident: Identity | None

    def revoke(self, reason: str) -> None:
        """Stop accepting messages and close the socket with ``CLOSE_REVOKED`` and ``reason``."""


class SocketRegistry:
    def __init__(self) -> None:
        self._open: set[Revocable] = set()
        #: what this process saw revoked, deactivated or found invalid: refused without a store trip
        self._revoked_tokens: set[int] = set()
        self._deactivated_users: set[int] = set()

    def __len__(self) -> int:
        return len(self._open)

    def add(self, sock: Revocable) -> None:
        self._open.add(sock)

    def discard(self, sock: Revocable) -> None:
        self._open.discard(sock)

    def _close_where(self, match: Callable[[Identity], bool], reason: str) -> int:
        closing = [s for s in self._open if s.ident is not None and match(s.ident)]
        for sock in closing:
            self._open.discard(sock)
            try:
                sock.revoke(reason)
            except Exception:  # already closing: nothing left to do
                log.debug("closing a socket that was already closed", exc_info=True)
        if closing:
            log.info("closed %d socket(s): %s", len(closing), reason)
        return len(closing)

    def refused(self, ident: Identity) -> bool:
        """Whether this process knows ``ident`` no longer holds (cheap: no store trip)."""
        return (ident.token_id is not None and ident.token_id in self._revoked_tokens) or \
            (ident.kind == "user" and ident.user_id in self._deactivated_users)

    def close_token(self, token_id: int, reason: str = REVOKED) -> int:
        self._revoked_tokens.add(token_id)
        return self._close_where(lambda ident: ident.token_id == token_id, reason)

    def close_user(self, user_id: int, reason: str = DEACTIVATED) -> int:
        self._deactivated_users.add(user_id)
        return self._close_where(lambda ident: ident.kind == "user" and ident.user_id == user_id, reason)

    async def recheck(self, store: Store) -> int:
        """Close every open socket whose token no longer works; returns how many."""
        token_ids = {s.ident.token_id for s in self._open if s.ident is not None and s.ident.token_id is not None}
        if not token_ids:
            return 0
        valid = await store.run(auth.valid_tokens, token_ids)
        gone = token_ids - valid
        self._revoked_tokens |= gone
        return self._close_where(lambda ident: ident.token_id in gone, INVALID) if gone else 0

    async def watch(self, store: Store, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recheck(store)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # an outage, not a bug: one line
                log.warning("re-checking the tokens of open sockets waits for the store (%s); trying again in %.0f s",
                            exc.message, interval)
            except Exception:
                log.exception("re-checking the tokens of open sockets failed; trying again in %.0f s", interval)
