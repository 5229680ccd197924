"""``/api/v1/agent``: the WebSocket agents dial out to (docs/agent-protocol.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from tornado import web, websocket

from ..agents import AgentConnection, AgentRefused
from ..auth import Identity
from ..service import Service
from ..sockets import CLOSE_REVOKED
from .base import authenticate, check_access, require_upgrade

log = logging.getLogger("cellgate.gateway.agent_ws")
PING_INTERVAL = 10.0


class AgentSocketHandler(websocket.WebSocketHandler):
    access = {"GET": "agent"}
    ident: Identity | None = None
    conn: AgentConnection | None = None
    revoked: str | None = None  # why the socket was closed under the agent (sockets.py)
    _pinger: asyncio.Task[None] | None = None
    _greeted = False  # a hello arrived (being decided, accepted or refused)

    @property
    def service(self) -> Service:
        return self.settings["service"]

    async def get(self, *args: Any) -> None:  # type: ignore[override]
        try:
            self.ident = await authenticate(self.service, self.request)
            check_access(self, self.ident)
            require_upgrade(self.request)
        except web.HTTPError as exc:
            self.set_status(exc.status_code)
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps({"status": exc.status_code, "message": exc.reason}))
            return
        await super().get(*args)

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: Any) -> None:  # type: ignore[override]
        self.set_nodelay(True)
        self.service.sockets.add(self)

    def revoke(self, reason: str) -> None:
        """The agent token was revoked: refuse what follows and close (sockets.py)."""
        self.revoked = reason
        log.warning("closing the socket of agent %s: %s", self.conn.agent_id if self.conn else "?", reason)
        self.close(CLOSE_REVOKED, reason)

    async def on_message(self, message: str | bytes) -> None:
        if self.revoked:
            return
        try:
            msg = json.loads(message)
        except ValueError:
            log.warning("agent sent a malformed frame")
            return
        if not isinstance(msg, dict):
            log.warning("agent sent a frame that is not an object")
            return
        if self.conn is None:
            await self._hello(msg)
            return
        self.conn.heard()
        self.service.on_agent_message(self.conn, msg)

    async def _hello(self, msg: dict[str, Any]) -> None:
        if self._greeted:  # frames behind a hello still being decided, or after a refusal
            return
        if msg.get("type") != "hello" or not isinstance(msg.get("agent_id"), str):
            self.close(4000, "the first message must be hello")
            return
        self._greeted = True
        assert self.ident is not None
        conn = AgentConnection(agent_id=msg["agent_id"], token_name=self.ident.name, send_text=self.write_message,
                               version=str(msg.get("version", "")), tags=[str(t) for t in msg.get("tags") or []],
                               token_id=self.ident.token_id, is_closed=self._closed, close=self.close)
        try:
            accepted, refused, adopted = await self.service.agent_hello(conn, msg)
        except AgentRefused as exc:
            log.warning("refused agent %r (token %s): %s", conn.agent_id, self.ident.name, exc.reason)
            if not self._closed():
                self.write_message(json.dumps({"type": "error", "code": exc.code, "message": exc.reason}))
                self.close(exc.code, _close_reason(exc.reason))
            return
        if self._closed():  # it went away while the hello was decided
            self.service.spawn(self.service.agent_gone(conn))
            return
        self.conn = conn
        self.write_message(json.dumps({"type": "welcome", "agent_id": conn.agent_id, "targets": accepted,
                                       "refused": refused, "kernels": adopted}))
        self._pinger = asyncio.ensure_future(self._ping())
        log.info("agent %s connected, serving %s", conn.agent_id, ", ".join(accepted) or "nothing")

    def _closed(self) -> bool:
        return self.ws_connection is None or self.ws_connection.is_closing()

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            try:
                self.write_message(json.dumps({"type": "ping", "ts": asyncio.get_running_loop().time()}))
            except websocket.WebSocketClosedError:
                return

    def on_close(self) -> None:
        self.service.sockets.discard(self)
        if self._pinger is not None:
            self._pinger.cancel()
        if self.conn is not None:
            log.info("agent %s disconnected", self.conn.agent_id)
            self.service.spawn(self.service.agent_gone(self.conn))


def _close_reason(reason: str) -> str:
    """A close frame's reason holds at most 123 bytes (RFC 6455); the error frame before it has it all."""
    raw = reason.encode()
    return reason if len(raw) <= 123 else raw[:120].decode(errors="ignore") + "…"


default_handlers = [(r"/api/v1/agent", AgentSocketHandler)]
