"""``/api/v1/agent``: the WebSocket agents dial out to (docs/agent-protocol.md)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from tornado import web, websocket

from cellgate import protocol

from ..agents import AgentConnection, AgentRefused
from ..auth import Identity
from ..errors import CellgateError
from ..sockets import CLOSE_REVOKED
from .base import Parts, authenticate, check_access, require_upgrade

log = logging.getLogger("cellgate.gateway.agent_ws")
#: invalid frames logged per connection (each one is still refused with an error frame)
INVALID_LOGGED = 10


class AgentSocketHandler(Parts, websocket.WebSocketHandler):
    access = {"GET": "agent"}
    ident: Identity | None = None
    conn: AgentConnection | None = None
    revoked: str | None = None  # why the socket was closed under the agent (sockets.py)
    _pinger: asyncio.Task[None] | None = None
    _greeted = False  # a hello arrived (being decided, accepted or refused)
    _invalid = 0  # frames refused as invalid on this socket


    async def get(self, *args: Any) -> None:
        try:
            self.ident = await authenticate(self.store, self.request)
            check_access(self, self.ident)
            require_upgrade(self.request)
        except web.HTTPError as exc:
            self._refuse(exc.status_code, exc.reason or "refused")
            return
        except CellgateError as exc:  # the store did not answer (StoreUnavailable): 503, the agent retries
            self._refuse(exc.status, exc.message)
            return
        await super().get(*args)

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"status": status, "message": message}))

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self, *args: Any) -> None:
        self.set_nodelay(True)
        self.sockets.add(self)

    def revoke(self, reason: str) -> None:
        """The agent token was revoked: refuse what follows and close (sockets.py)."""
        self.revoked = reason
        log.warning("closing the socket of agent %s: %s", self.conn.agent_id if self.conn else "?", reason)
        self.close(CLOSE_REVOKED, reason)

    async def on_message(self, message: str | bytes) -> None:
        if self.revoked:
            return
        if self.conn is None and self._greeted:  # frames behind a hello still being decided, or after a refusal
            return
        try:
            frame = protocol.parse(message, protocol.AGENT)
        except protocol.ProtocolError as exc:
            self._refuse_frame(exc)
            return
        if self.conn is None:
            await self._hello(frame)
            return
        self.conn.heard()
        self.sessions.on_message(self.conn, frame)
        await self.sessions.room(frame)  # tornado reads the next frame once this returns: back-pressure

    def _refuse_frame(self, exc: protocol.ProtocolError) -> None:
        """An invalid frame: nothing of it is applied; the agent gets an ``error`` frame, we a log line.

        An invalid first frame that says it is a ``hello`` refuses the connection (close 4000);
        later ones leave it open. An invalid ``reply`` fails the request it names at once."""
        self._invalid += 1
        who = self.conn.agent_id if self.conn is not None else "(before hello)"
        if self._invalid <= INVALID_LOGGED:
            log.warning("agent %s sent an invalid frame, refused: %s%s", who, exc.message,
                        " (further invalid frames on this connection are not logged)" if self._invalid == INVALID_LOGGED else "")
        if self.conn is None and exc.frame_type == "hello":
            self._greeted = True
            self._send_error(protocol.CLOSE_NOT_HELLO, f"invalid hello: {exc.message}", close=True)
            return
        self._send_error(protocol.INVALID_FRAME, exc.message)
        if self.conn is not None:
            self.conn.heard()  # invalid, but it is alive
            if exc.frame_type == "reply" and exc.req_id is not None:
                self.conn.on_invalid_reply(exc.req_id, exc.message)

    def _send_error(self, code: int, message: str, *, close: bool = False) -> None:
        if self._closed():
            return
        try:
            self.write_message(protocol.Error(code=code, message=message).to_json())
        except websocket.WebSocketClosedError:
            return
        if close:
            self.close(code, _close_reason(message))

    async def _hello(self, frame: protocol.Frame) -> None:
        if not isinstance(frame, protocol.Hello):
            self._greeted = True
            self._send_error(protocol.CLOSE_NOT_HELLO, f"the first message must be hello, got {frame.type}", close=True)
            return
        self._greeted = True
        assert self.ident is not None
        conn = AgentConnection(agent_id=frame.agent_id, token_name=self.ident.name, send_text=self.write_message,
                               version=frame.version, tags=list(frame.tags),
                               token_id=self.ident.token_id, is_closed=self._closed, close=self.close)
        try:
            accepted, refused, adopted = await self.sessions.hello(conn, frame)
        except AgentRefused as exc:
            log.warning("refused agent %r (token %s): %s", conn.agent_id, self.ident.name, exc.reason)
            self._send_error(exc.code, exc.reason, close=True)
            return
        if self._closed():  # it went away while the hello was decided
            self.background.spawn(self.sessions.gone(conn))
            return
        self.conn = conn
        self.write_message(protocol.Welcome(agent_id=conn.agent_id, targets=accepted, refused=refused,
                                            kernels=adopted).to_json())
        self._pinger = asyncio.ensure_future(self._ping())
        log.info("agent %s connected, serving %s", conn.agent_id, ", ".join(accepted) or "nothing")

    def _closed(self) -> bool:
        return self.ws_connection is None or self.ws_connection.is_closing()

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self.timeouts.agent_ping)
            try:
                self.write_message(protocol.Ping(ts=asyncio.get_running_loop().time()).to_json())
            except websocket.WebSocketClosedError:
                return

    def on_close(self) -> None:
        self.sockets.discard(self)
        if self._pinger is not None:
            self._pinger.cancel()
        if self.conn is not None:
            log.info("agent %s disconnected", self.conn.agent_id)
            self.background.spawn(self.sessions.gone(self.conn))


def _close_reason(reason: str) -> str:
    """A close frame's reason holds at most 123 bytes (RFC 6455); the error frame before it has it all."""
    raw = reason.encode()
    return reason if len(raw) <= 123 else raw[:120].decode(errors="ignore") + "…"


default_handlers = [(r"/api/v1/agent", AgentSocketHandler)]
