"""The agent's WebSocket to the gateway: dial out, say hello, answer pings, reconnect forever.

See docs/agent-protocol.md. The connection owns the protocol-level frames (``hello``, ``welcome``,
``ping``/``pong``, ``error``); every other frame goes to ``dispatch``, typed (``cellgate.protocol``).
A frame from the gateway that fails validation is logged and dropped, never handed on; when it
carries a ``req_id`` it is answered with a ``reply`` ``ok: false`` naming the field. Kernels are not its business: they
outlive a dropped connection, and what they emit while it is down is dropped by ``send``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from jupyter_client.jsonutil import json_default
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from cellgate import protocol

from .timeouts import Timeouts

log = logging.getLogger(__name__)

AGENT_PATH = "/api/v1/agent"


def agent_ws_url(gateway_url: str) -> str:
    """``http(s)://host[:port][/prefix]`` → ``ws(s)://host[:port][/prefix]/api/v1/agent``."""
    parts = urlsplit(gateway_url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"gateway URL must start with http://, https://, ws:// or wss://, "
                         f"got {gateway_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + AGENT_PATH, "", ""))


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: ``base * 2**attempt`` capped at ``cap``, then 50–100 %."""
    delay: float = min(cap, base * 2 ** min(attempt, 16))
    return delay * random.uniform(0.5, 1.0)


class GatewayConnection:
    """Keeps one WebSocket open to the gateway until ``close()``; waits as ``timeouts`` say
    (``reconnect_min``/``reconnect_max``, ``connect``, ``ws_ping``)."""

    def __init__(self, gateway_url: str, token: str, hello: Callable[[], protocol.Hello],
                 dispatch: Callable[[protocol.Frame], None], *,
                 on_welcome: Callable[[protocol.Welcome], None] | None = None,
                 on_lost: Callable[[], None] | None = None,
                 timeouts: Timeouts | None = None) -> None:
        self.url = agent_ws_url(gateway_url)
        self._token = token
        self._hello = hello
        self._dispatch = dispatch
        self._on_welcome = on_welcome
        self._on_lost = on_lost
        timeouts = timeouts or Timeouts()
        self._backoff = (timeouts.reconnect_min, timeouts.reconnect_max)
        self._connect_timeout = timeouts.connect
        self._ws_ping_interval = timeouts.ws_ping
        self._ws: WebSocketClientConnection | None = None
        self._closing = asyncio.Event()
        self._attempt = 0

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def send(self, frame: protocol.Frame) -> bool:
        """Send a frame now; return False (the frame is dropped) when not connected."""
        return self.send_text(json.dumps(frame.frame(), default=json_default))

    def send_text(self, text: str) -> bool:
        """Send a frame's JSON text now; return False (dropped) when not connected."""
        ws = self._ws
        if ws is None:
            return False
        try:
            future = ws.write_message(text)
        except WebSocketClosedError:
            return False
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # consume errors
        return True

    def close(self) -> None:
        self._closing.set()
        if self._ws is not None:
            self._ws.close()

    async def run(self) -> None:
        """Connect, serve, reconnect with backoff, until ``close()``."""
        while not self._closing.is_set():
            ws = await self._connect()
            if ws is not None:
                self._ws = ws
                log.info("connected to %s", self.url)
                self.send(self._hello())
                await self._serve(ws)
                self._ws = None
                if self._on_lost is not None:
                    self._on_lost()
                if self._closing.is_set():
                    break
                log.warning("connection to the gateway lost")
            delay = backoff_delay(self._attempt, *self._backoff)
            self._attempt += 1
            log.info("reconnecting in %.1f s", delay)
            try:
                await asyncio.wait_for(self._closing.wait(), delay)
            except TimeoutError:
                pass

    async def _connect(self) -> WebSocketClientConnection | None:
        request = HTTPRequest(self.url, headers={"Authorization": f"token {self._token}"},
                              connect_timeout=self._connect_timeout,
                              request_timeout=self._connect_timeout)
        try:
            ws = await websocket_connect(request, ping_interval=self._ws_ping_interval,
                                         ping_timeout=self._ws_ping_interval)
            # websocket_connect resolves once the handshake is done, so the protocol and its stream exist
            assert ws.protocol is not None and ws.protocol.stream is not None
            ws.protocol.stream.set_nodelay(True)  # small frames both ways: no Nagle/delayed-ACK stalls
            return ws
        except HTTPClientError as exc:
            if exc.code in (401, 403):
                log.error("the gateway refused the agent token (HTTP %d): check --token or "
                          "CELLGATE_AGENT_TOKEN; it must be an agent token, not a user token",
                          exc.code)
            else:
                log.warning("cannot connect to %s: HTTP %d %s", self.url, exc.code, exc.message)
        except Exception as exc:  # refused, unreachable, TLS, timeout…
            log.warning("cannot connect to %s: %s", self.url, exc or type(exc).__name__)
        return None

    async def _serve(self, ws: WebSocketClientConnection) -> None:
        while True:
            raw = await ws.read_message()
            if raw is None:
                return
            try:
                frame = protocol.parse(raw, protocol.GATEWAY)
            except protocol.ProtocolError as exc:
                self._refuse(exc)
                continue
            if isinstance(frame, protocol.Ping):
                self.send(protocol.Pong(ts=frame.ts))
            elif isinstance(frame, protocol.Welcome):
                self._attempt = 0
                log.info("welcomed by the gateway as %s; targets accepted: %s",
                         frame.agent_id, ", ".join(frame.targets) or "none")
                for refused in frame.refused:  # binding: the gateway says why (docs/agent-protocol.md)
                    log.error("the gateway refused target %s: %s", refused.target, refused.reason)
                if self._on_welcome is not None:
                    self._on_welcome(frame)
            elif isinstance(frame, protocol.Error):
                if frame.code == protocol.INVALID_FRAME:  # one frame of ours refused; the connection stays
                    log.error("the gateway refused a frame of this agent: %s", frame.message)
                else:  # sent before the gateway closes a refused hello (4000, 4003, 4009)
                    log.error("the gateway refused this agent: %s", frame.message)
            else:
                try:
                    self._dispatch(frame)
                except Exception:
                    log.exception("error handling a %r frame", frame.type)

    def _refuse(self, exc: protocol.ProtocolError) -> None:
        """An invalid frame from the gateway: dropped whole; a request among them is answered ``ok: false``."""
        log.warning("ignoring an invalid frame from the gateway: %s", exc.message)
        if exc.req_id is not None:
            self.send(protocol.Reply(req_id=exc.req_id, ok=False, error=f"invalid frame: {exc.message}"))
