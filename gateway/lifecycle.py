"""Kernel lifecycle: start, attach, stop, interrupt, restart and loss of live kernels.

A kernel is started by asking an agent serving its target; once recorded it is *attached*:
registered, given its gate (``make_gate``) and a recorder (the relay's). Stopping writes what the
kernel recorded before the executions it ends. A kernel whose agent is gone is *lost*: what ran
on it ends ``lost`` and is never re-run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.orm import Session

from cellgate import protocol

from . import access, audit, jmsg, policy, tasks
from .agents import AgentConnection, AgentRegistry
from .auth import Identity
from .errors import NotFound, Unavailable
from .flow import TaskFlow
from .kernels import KernelGate, KernelRegistry, LiveKernel
from .models import Kernel, utcnow
from .relay import Relay
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.lifecycle")


class KernelLifecycle:
    def __init__(self, store: Store, agents: AgentRegistry, kernels: KernelRegistry, flow: TaskFlow, relay: Relay,
                 make_gate: Callable[[LiveKernel], KernelGate], timeouts: Timeouts | None = None) -> None:
        self.store = store
        self.agents = agents
        self.kernels = kernels
        self.flow = flow
        self.relay = relay
        self.make_gate = make_gate
        self.timeouts = timeouts or Timeouts()

    async def start(self, ident: Identity, target_name: str, env: dict[str, str] | None = None,
                    *, ephemeral: bool = False) -> LiveKernel:
        """Start a kernel for ``ident`` on a target they may use, on the least busy agent serving it."""
        target = await self.flow.check_target(ident, target_name)
        limits = policy.of(target).limits
        agent = self.agents.pick(target_name)
        env = env or {}
        kernel_id = str(uuid.uuid4())
        notebook_path = env.get("JPY_SESSION_NAME") or env.get("KERNEL_NOTEBOOK_PATH")
        kernel_env = {k: v for k, v in env.items() if k.startswith("KERNEL_")}
        await agent.request(protocol.KernelStart(kernel_id=kernel_id, target=target_name, env=kernel_env,
                                                 limits=protocol.Limits(max_rows=limits.max_rows, timeout=limits.timeout)),
                            timeout=self.timeouts.kernel_start)
        kernel = LiveKernel(id=kernel_id, user_id=ident.user_id or 0, user_name=ident.name, target=target_name,
                            agent_id=agent.agent_id, notebook_path=notebook_path, ephemeral=ephemeral, execution_state="idle")

        def _record(session: Session) -> None:
            session.add(Kernel(id=kernel_id, user_id=ident.user_id, target=target_name, agent_id=agent.agent_id,
                               notebook_path=notebook_path, ephemeral=ephemeral))
            audit.append(session, ident.actor, "kernel.started", target=target_name, kernel_id=kernel_id,
                         detail={"agent": agent.agent_id, "notebook_path": notebook_path, "ephemeral": ephemeral})
        await self.store.run(_record)
        self.attach(kernel, agent)
        return kernel

    def attach(self, kernel: LiveKernel, agent: AgentConnection) -> None:
        """Register a kernel hosted by ``agent``: its gate, its recorder."""
        kernel.gate = self.make_gate(kernel)
        self.kernels.add(kernel)
        self.relay.open(kernel)
        agent.kernels.add(kernel.id)

    def owned(self, ident: Identity, kernel_id: str) -> LiveKernel:
        """The kernel, if ``ident`` owns it; otherwise 404 (another user's kernel is not disclosed)."""
        kernel = self.kernels.get(kernel_id)
        if kernel is None or not access.may_use_kernel(ident, kernel):
            raise NotFound(f"kernel {kernel_id} not found")
        return kernel

    async def stop(self, kernel: LiveKernel, actor: str) -> None:
        agent = self.agents.get(kernel.agent_id)
        if agent is not None:
            try:
                await agent.request(protocol.KernelStop(kernel_id=kernel.id), timeout=self.timeouts.kernel_request)
            except Unavailable as exc:
                log.warning("stopping kernel %s: %s", kernel.id, exc)
            agent.kernels.discard(kernel.id)
        self.kernels.remove(kernel.id)
        kernel.gate.close()
        await self.relay.close(kernel)  # what the kernel did is written before what its stop ends
        await self.relay.end_executions(kernel, tasks.KILLED, "KernelStopped", "the kernel was shut down")

        def _record(session: Session) -> None:
            session.execute(update(Kernel).where(Kernel.id == kernel.id).values(stopped_at=utcnow()))
            audit.append(session, actor, "kernel.stopped", target=kernel.target, kernel_id=kernel.id)
        await self.store.run(_record)

    async def interrupt(self, kernel: LiveKernel, actor: str) -> None:
        """Interrupt: a held cell is cancelled by its gate; a running one is interrupted by the agent."""
        if await kernel.gate.interrupt():
            return
        agent = self._agent_of(kernel)
        await agent.request(protocol.KernelInterrupt(kernel_id=kernel.id), timeout=self.timeouts.kernel_request)
        await self.store.run(lambda s: audit.append(s, actor, "kernel.interrupted", target=kernel.target, kernel_id=kernel.id))

    async def restart(self, kernel: LiveKernel, actor: str) -> None:
        agent = self._agent_of(kernel)
        kernel.gate.abort_queued()
        await kernel.gate.interrupt()
        kernel.execution_state = "restarting"
        kernel.to_clients(jmsg.status("restarting", None))
        await agent.request(protocol.KernelRestart(kernel_id=kernel.id), timeout=self.timeouts.kernel_start)
        await self.relay.end_executions(kernel, tasks.KILLED, "KernelRestarted", "the kernel was restarted")
        kernel.parameters = {}  # a restarted kernel has run no parameters cell
        kernel.execution_state = "idle"
        await self.store.run(lambda s: audit.append(s, actor, "kernel.restarted", target=kernel.target, kernel_id=kernel.id))

    async def lost(self, kernel: LiveKernel, why: str) -> None:
        """The kernel's agent is gone (or came back without it): what ran on it is ``lost``, never re-run."""
        kernel.execution_state = "dead"
        kernel.to_clients(jmsg.status("dead", None))
        kernel.gate.abort_queued()
        await self.relay.end_executions(kernel, tasks.LOST, "TaskLost", why)

    def _agent_of(self, kernel: LiveKernel) -> AgentConnection:
        agent = self.agents.get(kernel.agent_id)
        if agent is None:
            raise Unavailable(f"the agent hosting kernel {kernel.id} ({kernel.agent_id}) is not connected")
        return agent
