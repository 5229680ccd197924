"""The gate's host: what a kernel's gate (``gate.Gate``) asks of the gateway, answered here.

:class:`CellHost` implements :class:`~.gate.GateHost` with the task flow, the relay, the open
sockets and the store, so the gate depends on one typed interface and is unit-tested with fakes
(``tests/gateway/test_gate_unit.py``).
"""

from __future__ import annotations

from typing import Any

from . import audit, auth
from .agents import AgentRegistry
from .auth import Identity
from .events import TaskEvents
from .flow import TaskFlow
from .kernels import LiveKernel, Outcome
from .models import Target, Task
from .relay import Relay
from .sockets import SocketRegistry
from .store import Store


class CellHost:
    def __init__(self, store: Store, events: TaskEvents, agents: AgentRegistry, sockets: SocketRegistry,
                 flow: TaskFlow, relay: Relay) -> None:
        self.store = store
        self.events = events
        self.agents = agents
        self.sockets = sockets
        self.flow = flow
        self.relay = relay

    @property
    def max_code_bytes(self) -> int:
        return self.flow.max_code_bytes

    @property
    def task_poll(self) -> float:
        return self.flow.timeouts.task_poll

    def token_refused(self, ident: Identity) -> bool:
        return self.sockets.refused(ident)

    def check_size(self, code: str) -> None:
        self.flow.check_size(code)

    def agent_connected(self, agent_id: str) -> bool:
        return self.agents.get(agent_id) is not None

    async def submit(self, ident: Identity, target_name: str, code: str, *, kind: str, refuse: str | None,
                     dispatch_to: str | None, **context: Any) -> Task:
        return await self.flow.submit(ident, target_name, code, kind=kind, refuse=refuse, dispatch_to=dispatch_to, **context)

    async def target_kind(self, name: str) -> str:
        target = await self.store.run(lambda s: s.get(Target, name))
        return (target.kind if target is not None else "") or ""

    async def still_valid(self, ident: Identity) -> bool:
        valid: bool = await self.store.run(auth.still_valid, ident)
        return valid

    async def too_large(self, ident: Identity, kernel: LiveKernel, msg_id: str, size: int) -> None:
        detail = {"bytes": size, "limit": self.flow.max_code_bytes, "msg_id": msg_id}
        await self.store.run(lambda s: audit.append(s, ident.actor, "cell.too_large", target=kernel.target,
                                                    kernel_id=kernel.id, detail=detail))

    async def cancel(self, task_id: int, ident: Identity, reason: str) -> Task:
        return await self.flow.cancel(task_id, ident, reason)

    async def cancel_approved(self, task_id: int, why: str) -> Task:
        return await self.flow.cancel_approved(task_id, why)

    async def changed(self, task_id: int, timeout: float) -> None:
        await self.events.wait(task_id, timeout)

    async def get_task(self, task_id: int) -> Task:
        return await self.flow.get_task(task_id)

    async def dispatch(self, kernel: LiveKernel, task: Task, msg: dict[str, Any]) -> Outcome:
        return await self.relay.dispatch(kernel, task, msg)

    def refusal(self, task: Task) -> tuple[str, str]:
        return self.flow.refusal(task)

    def task_url(self, task_id: int) -> str:
        return self.flow.task_url(task_id)
