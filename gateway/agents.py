"""Connected agents: who serves which target, and request/reply over their WebSocket.

See docs/agent-protocol.md for the messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import Unavailable

log = logging.getLogger("cellgate.gateway.agents")


@dataclass
class AgentConnection:
    agent_id: str
    token_name: str
    send_text: Callable[[str], None]
    version: str = ""
    tags: list[str] = field(default_factory=list)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    kernels: set[str] = field(default_factory=set)

    def send(self, msg: dict[str, Any]) -> None:
        self.send_text(json.dumps(msg))

    async def request(self, msg: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send a request carrying a fresh ``req_id``; return the agent's ``reply`` or raise."""
        req_id = uuid.uuid4().hex
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[req_id] = fut
        try:
            self.send({**msg, "req_id": req_id})
            reply = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"agent {self.agent_id} did not answer {msg['type']} within {timeout:.0f} s") from None
        finally:
            self.pending.pop(req_id, None)
        if not reply.get("ok"):
            raise Unavailable(f"agent {self.agent_id}: {reply.get('error') or msg['type'] + ' failed'}")
        return reply

    def on_reply(self, msg: dict[str, Any]) -> None:
        fut = self.pending.get(msg.get("req_id", ""))
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def fail_pending(self, reason: str) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_result({"ok": False, "error": reason})
        self.pending.clear()


class AgentRegistry:
    def __init__(self) -> None:
        self.agents: dict[str, AgentConnection] = {}

    def add(self, conn: AgentConnection) -> AgentConnection | None:
        """Register ``conn``; returns the connection it replaces (same agent id), if any."""
        old = self.agents.get(conn.agent_id)
        self.agents[conn.agent_id] = conn
        if old is not None:
            conn.kernels |= old.kernels
        return old

    def remove(self, conn: AgentConnection) -> None:
        if self.agents.get(conn.agent_id) is conn:
            del self.agents[conn.agent_id]
        conn.fail_pending(f"agent {conn.agent_id} disconnected")

    def get(self, agent_id: str) -> AgentConnection | None:
        return self.agents.get(agent_id)

    def serving(self, target: str) -> list[AgentConnection]:
        return [a for a in self.agents.values() if target in a.targets]

    def pick(self, target: str) -> AgentConnection:
        candidates = self.serving(target)
        if not candidates:
            raise Unavailable(f"no agent serving {target!r} is connected; start one with `cellgate agent --config …`")
        return min(candidates, key=lambda a: len(a.kernels))
