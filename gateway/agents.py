"""Connected agents: who serves which target, and request/reply over their WebSocket.

One connection per agent id. A second connection under an id already connected does not take
its place silently: :meth:`AgentRegistry.claim` pings the connection there and refuses the new
one when it answers (close code ``CLOSE_DUPLICATE``); one that stays silent for
``PROBE_TIMEOUT`` seconds is closed and replaced. See docs/agent-protocol.md for the messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cellgate import protocol

from .errors import Unavailable

log = logging.getLogger("cellgate.gateway.agents")

#: WebSocket close codes of a refused hello (docs/agent-protocol.md)
CLOSE_FORBIDDEN = 4003  # the token may not speak as this agent (wrong agent_id, unbound token)
CLOSE_DUPLICATE = 4009  # another connection of this agent id is alive
CLOSE_GOING_AWAY = 1001  # the gateway stops (RFC 6455 "going away"): reconnect to the next one
#: seconds a connected agent has to answer the ping sent when a second connection claims its id
PROBE_TIMEOUT = 3.0
#: a refusal repeated by a reconnecting agent is audited once per this many seconds (always logged)
REFUSAL_AUDIT_INTERVAL = 600.0


class AgentRefused(Exception):
    """The hello is refused: the socket is closed with ``code`` after an ``error`` frame with ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _never_closed() -> bool:
    return False


@dataclass
class AgentConnection:
    agent_id: str
    token_name: str
    #: write one text frame to the socket (a returned future, as tornado's write_message gives, is not awaited)
    send_text: Callable[[str], object]
    version: str = ""
    tags: list[str] = field(default_factory=list)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, asyncio.Future[protocol.Reply]] = field(default_factory=dict)
    #: the kernels this connection hosts: frames about any other kernel are dropped
    kernels: set[str] = field(default_factory=set)
    token_id: int | None = None
    #: whether the socket under this connection is closed or closing
    is_closed: Callable[[], bool] = _never_closed
    #: close the socket (code, reason)
    close: Callable[[int, str], None] | None = None
    #: frames about kernels this connection does not host (warned about and audited once)
    foreign_frames: int = 0
    _heard: asyncio.Event | None = None

    def send(self, frame: protocol.Frame) -> None:
        """Write a frame; raises :class:`Unavailable` when the socket is closed (nothing was written)."""
        try:
            self.send_text(frame.to_json())
        except Exception as exc:  # tornado's WebSocketClosedError, or a stream closed under it
            raise Unavailable(f"agent {self.agent_id} is not connected (its socket closed: "
                              f"{type(exc).__name__})") from None

    async def request(self, frame: protocol.Request, timeout: float = 60.0) -> protocol.Reply:
        """Send a request with a fresh ``req_id``; return the agent's ``reply`` or raise."""
        req_id = uuid.uuid4().hex
        fut: asyncio.Future[protocol.Reply] = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        try:
            self.send(dataclasses.replace(frame, req_id=req_id))
            reply = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Unavailable(f"agent {self.agent_id} did not answer {frame.type} within {timeout:.0f} s") from None
        finally:
            self.pending.pop(req_id, None)
        if not reply.ok:
            raise Unavailable(f"agent {self.agent_id}: {reply.error or frame.type + ' failed'}")
        return reply

    def on_reply(self, reply: protocol.Reply) -> None:
        fut = self.pending.get(reply.req_id)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def on_invalid_reply(self, req_id: str, why: str) -> None:
        """A ``reply`` that failed validation: its request fails (nothing of the reply is used)."""
        self.on_reply(protocol.Reply(req_id=req_id, ok=False, error=f"its reply was invalid: {why}"))

    def heard(self) -> None:
        """A frame arrived on this connection: it is alive."""
        if self._heard is not None:
            self._heard.set()

    async def alive(self, timeout: float) -> bool:
        """Ping; whether any frame comes back within ``timeout`` seconds."""
        if self.is_closed():
            return False
        self._heard = asyncio.Event()
        try:
            self.send(protocol.Ping(ts=time.time()))
            await asyncio.wait_for(self._heard.wait(), timeout)
            return True
        except Exception:  # closed while sending, or silent
            return False
        finally:
            self._heard = None

    def fail_pending(self, reason: str) -> None:
        for req_id, fut in self.pending.items():
            if not fut.done():
                fut.set_result(protocol.Reply(req_id=req_id, ok=False, error=reason))
        self.pending.clear()


class AgentRegistry:
    def __init__(self) -> None:
        self.agents: dict[str, AgentConnection] = {}
        #: connections registered per agent id so far: a grace timer belongs to one disconnect
        self.generations: dict[str, int] = {}
        self._claims: dict[str, asyncio.Lock] = {}
        self._refusals: dict[tuple[Any, ...], float] = {}

    def claim_lock(self, agent_id: str) -> asyncio.Lock:
        """Held from the duplicate check to :meth:`add`: two hellos of one id are decided one at a time."""
        return self._claims.setdefault(agent_id, asyncio.Lock())

    async def check_duplicate(self, conn: AgentConnection, timeout: float = PROBE_TIMEOUT) -> AgentConnection | None:
        """Raise :class:`AgentRefused` when another live connection holds ``conn``'s id; return a dead one it replaces."""
        old = self.agents.get(conn.agent_id)
        if old is None or old is conn:
            return None
        if await old.alive(timeout):
            raise AgentRefused(CLOSE_DUPLICATE, f"agent {conn.agent_id!r} is already connected and answering; "
                                                "stop the other agent process using this id (each agent needs its own id and token)")
        log.warning("agent %s: the previous connection did not answer within %.0f s; the new one replaces it",
                    conn.agent_id, timeout)
        return old

    def add(self, conn: AgentConnection) -> AgentConnection | None:
        """Register ``conn``; returns the connection it replaces (same agent id), if any. That one
        hosts nothing any more: frames it still sends are dropped."""
        old = self.agents.get(conn.agent_id)
        self.agents[conn.agent_id] = conn
        self.generations[conn.agent_id] = self.generations.get(conn.agent_id, 0) + 1
        if old is not None and old is not conn:
            old.kernels.clear()
            old.targets.clear()
        return old

    def remove(self, conn: AgentConnection) -> None:
        if self.agents.get(conn.agent_id) is conn:
            del self.agents[conn.agent_id]
        conn.fail_pending(f"agent {conn.agent_id} disconnected")

    def current(self, conn: AgentConnection) -> bool:
        """Whether ``conn`` is the registered connection of its agent id."""
        return self.agents.get(conn.agent_id) is conn

    def get(self, agent_id: str) -> AgentConnection | None:
        return self.agents.get(agent_id)

    def close_all(self, code: int, reason: str) -> None:
        """Close every agent's socket (the gateway stops): each agent reconnects to the next gateway process."""
        for conn in list(self.agents.values()):
            if conn.close is not None:
                try:
                    conn.close(code, reason)
                except Exception:  # already closing
                    log.debug("closing agent %s", conn.agent_id, exc_info=True)

    def serving(self, target: str) -> list[AgentConnection]:
        return [a for a in self.agents.values() if target in a.targets]

    def pick(self, target: str) -> AgentConnection:
        candidates = self.serving(target)
        if not candidates:
            raise Unavailable(f"no agent serving {target!r} is connected; start one with `cellgate agent --config …`")
        return min(candidates, key=lambda a: len(a.kernels))

    def audit_refusal(self, *key: Any, now: float | None = None) -> bool:
        """Whether a refusal with this key should be audited now (once per ``REFUSAL_AUDIT_INTERVAL``)."""
        now = time.monotonic() if now is None else now
        last = self._refusals.get(key)
        if last is not None and now - last < REFUSAL_AUDIT_INTERVAL:
            return False
        self._refusals[key] = now
        if len(self._refusals) > 10000:  # bounded: forget the oldest
            for stale in sorted(self._refusals, key=self._refusals.__getitem__)[:5000]:
                del self._refusals[stale]
        return True
