"""Agent sessions: an agent's hello, the frames it sends, and what its leaving ends.

The hello binds a connection to its token (``binding.py``), accepts the targets the token lets
it serve and re-adopts the kernels the agent still hosts; a second live connection of one agent
id is refused. Frames about kernels go to the relay only when this connection hosts the kernel.
An agent that stays away longer than ``Timeouts.agent_grace`` loses its kernels.
"""

from __future__ import annotations

import asyncio
import logging
from typing import NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from cellgate import protocol

from . import audit, binding, jmsg, reconcile, tasks
from .agents import CLOSE_DUPLICATE, CLOSE_FORBIDDEN, AgentConnection, AgentRefused, AgentRegistry
from .background import Background
from .kernels import KernelRegistry, LiveKernel
from .lifecycle import KernelLifecycle
from .models import Kernel, Target, Token, User, utcnow
from .recovery import Recovery
from .relay import Relay
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.sessions")


class AgentSessions:
    def __init__(self, store: Store, agents: AgentRegistry, kernels: KernelRegistry, lifecycle: KernelLifecycle,
                 relay: Relay, background: Background, timeouts: Timeouts | None = None,
                 recovery: Recovery | None = None) -> None:
        self.store = store
        self.agents = agents
        self.kernels = kernels
        self.lifecycle = lifecycle
        self.relay = relay
        self.background = background
        self.timeouts = timeouts or Timeouts()
        #: tasks an earlier gateway process left running: their agent's hello settles them
        self.recovery = recovery or Recovery(store, relay.events, background)

    def on_message(self, agent: AgentConnection, frame: protocol.Frame) -> None:
        """A valid frame from a connected agent (``protocol.parse`` checked it: agent_ws.py)."""
        if isinstance(frame, protocol.Reply):
            agent.on_reply(frame)
        elif isinstance(frame, (protocol.KernelMsg, protocol.KernelStatus)):
            kernel = self._hosted_kernel(agent, frame)
            if kernel is None:
                if isinstance(frame, protocol.KernelMsg) and self.agents.current(agent):
                    self.recovery.leftover_msg(self.relay, agent.agent_id, frame)  # a restart's, still resent
                return
            if isinstance(frame, protocol.KernelMsg):
                self.relay.on_kernel_msg(kernel, frame)
            elif frame.state == "dead":
                kernel.execution_state = "dead"
                kernel.to_clients(jmsg.status("dead", None))
                self.background.spawn(self.relay.end_executions(kernel, tasks.FAILED, "KernelDied",
                                                                frame.reason or "the kernel died"))
        elif isinstance(frame, protocol.Pong):
            pass
        else:
            log.info("ignoring agent message of type %r", frame.type)

    async def room(self, frame: protocol.Frame) -> None:
        """Back-pressure: after a kernel's message, wait while that kernel's execution records
        waiting for the store are over their bound (``Relay.room``); the agent's next frame is read after."""
        if isinstance(frame, protocol.KernelMsg):
            await self.relay.room(frame.kernel_id)

    def _hosted_kernel(self, agent: AgentConnection,
                       frame: protocol.KernelMsg | protocol.KernelStatus) -> LiveKernel | None:
        """The kernel a frame is about, if this connection hosts it; otherwise None (dropped).

        A frame about a kernel another agent (or an earlier connection) hosts is warned about and
        audited once per connection; frames of kernels already gone are dropped quietly."""
        kernel_id = frame.kernel_id
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            return None
        if kernel_id in agent.kernels and kernel.agent_id == agent.agent_id and self.agents.current(agent):
            return kernel
        agent.foreign_frames += 1
        if agent.foreign_frames == 1:
            log.warning("agent %s sent %s for kernel %s, which it does not host: dropped (further ones from this "
                        "connection are dropped without a log line)", agent.agent_id, frame.type, kernel_id)
            detail = {"agent": agent.agent_id, "token": agent.token_name, "kernel_id": kernel_id,
                      "frame": frame.type, "hosted_by": kernel.agent_id}
            self.background.spawn(self.store.run(lambda s: audit.append(s, f"agent:{agent.agent_id}", "agent.foreign_kernel_msg",
                                                                        target=kernel.target, kernel_id=kernel_id, detail=detail)))
        return None

    async def hello(self, agent: AgentConnection, hello: protocol.Hello) -> tuple[list[str], list[protocol.Refusal], list[str]]:
        """Bind an agent to its token, accept the targets the token lets it serve, re-adopt its kernels.

        Raises :class:`AgentRefused` (audited ``agent.refused``) when the token may not speak as
        this agent id, or another live connection holds the id. Returns (targets accepted,
        targets refused with the reason, kernel ids adopted): the agent stops the kernels not
        adopted, among them the ephemeral kernels of scripts an earlier gateway process ran
        (after a SIGKILL: their tasks end as the agent's journal says, ``lost`` when they had not
        ended: ``reconcile.py``). Nothing the agent
        announces is written to the targets (binding.py).
        """
        announced = {t.name: t.to_dict() for t in hello.targets}
        hosted = set(hello.kernels)
        actor = f"agent:{agent.agent_id}"

        def _token(session: Session) -> tuple[str | None, list[str]]:
            tok = session.get(Token, agent.token_id) if agent.token_id is not None else None
            return binding.token_refusal(tok, agent.agent_id), list((tok.agent_targets if tok else None) or [])
        reason, allowed = await self.store.run(_token)
        if reason is not None:
            await self._refuse(agent, CLOSE_FORBIDDEN, reason)

        def _tx(session: Session) -> tuple[list[str], list[protocol.Refusal], list[tuple[Kernel, str]]]:
            accepted: list[str] = []
            refused: list[protocol.Refusal] = []
            for name, info in announced.items():
                why = binding.target_refusal(name, info, allowed, session.get(Target, name))
                if why is None:
                    accepted.append(name)
                    continue
                refused.append(protocol.Refusal(target=name, reason=why))
                log.warning("agent %s: target %r refused: %s", agent.agent_id, name, why)
                if self.agents.audit_refusal("target", agent.token_id, agent.agent_id, name, why):
                    audit.append(session, actor, "agent.target_refused",
                                 detail={"agent": agent.agent_id, "target": name, "reason": why})
            rows = list(session.execute(select(Kernel).where(Kernel.agent_id == agent.agent_id, Kernel.stopped_at.is_(None))).scalars())
            # an ephemeral kernel (a script's) is adopted only by the process running its script: one
            # left by an earlier gateway process (killed) is stopped, not kept for ever
            adopt = [r for r in rows if r.id in hosted and r.target in accepted
                     and (not r.ephemeral or self.kernels.get(r.id) is not None)]
            for row in rows:
                if row not in adopt:
                    row.stopped_at = utcnow()
            names = dict(session.execute(select(User.id, User.name)).tuples().all())
            audit.append(session, actor, "agent.connected",
                         detail={"agent": agent.agent_id, "token": agent.token_name, "targets": accepted,
                                 "refused": [r.target for r in refused], "version": agent.version})
            return accepted, refused, [(r, names.get(r.user_id, "?")) for r in adopt]

        async with self.agents.claim_lock(agent.agent_id):
            try:
                old = await self.agents.check_duplicate(agent, self.timeouts.agent_probe)
            except AgentRefused as exc:
                await self._refuse(agent, exc.code, exc.reason)
            accepted, refused, adopt = await self.store.run(_tx)
            agent.targets = {name: announced[name] for name in accepted}
            self.agents.add(agent)
        if old is not None and old.close is not None:
            try:
                old.close(CLOSE_DUPLICATE, "replaced: this connection did not answer and a new one of the same agent arrived")
            except Exception:  # already closing
                log.debug("closing a replaced agent connection", exc_info=True)
        for row, owner in adopt:
            if self.kernels.get(row.id) is None:
                kernel = LiveKernel(id=row.id, user_id=row.user_id, user_name=owner,
                                    target=row.target, agent_id=agent.agent_id, notebook_path=row.notebook_path,
                                    ephemeral=row.ephemeral, execution_state="idle")
                self.lifecycle.attach(kernel, agent)
            else:
                agent.kernels.add(row.id)
        reconcile.tasks_of(self, agent, hello)
        for kernel in self.kernels.on_agent(agent.agent_id):
            if kernel.id not in agent.kernels and kernel.execution_state != "dead":
                self.background.spawn(self.lifecycle.lost(kernel, f"agent {agent.agent_id} came back without this kernel; "
                                                                  "what ran on it is not re-run"))
        return accepted, refused, [row.id for row, _ in adopt]

    async def _refuse(self, agent: AgentConnection, code: int, reason: str) -> NoReturn:
        """Audit ``agent.refused`` (once per interval for the same refusal) and raise :class:`AgentRefused`."""
        if self.agents.audit_refusal("agent", agent.token_id, agent.agent_id, code, reason):
            await self.store.run(lambda s: audit.append(s, f"agent:{agent.agent_id}", "agent.refused",
                                                        detail={"agent": agent.agent_id, "token": agent.token_name,
                                                                "token_id": agent.token_id, "code": code, "reason": reason}))
        raise AgentRefused(code, reason)

    async def gone(self, agent: AgentConnection) -> None:
        """The agent's socket closed. Its kernels wait ``Timeouts.agent_grace`` seconds for it to come back;
        then what ran on them is ``lost`` (never re-run) and the kernels are dead. A connection
        already replaced by a newer one of the same agent changes nothing."""
        replaced = not self.agents.current(agent) and self.agents.get(agent.agent_id) is not None
        generation = self.agents.generations.get(agent.agent_id)
        self.agents.remove(agent)
        await self.store.run(lambda s: audit.append(s, f"agent:{agent.agent_id}", "agent.disconnected",
                                                    detail={"agent": agent.agent_id, **({"replaced": True} if replaced else {})}))
        if replaced:
            return
        await asyncio.sleep(self.timeouts.agent_grace)
        # this disconnect's timer only: a reconnect since (even one that dropped again) ends it
        if self.agents.get(agent.agent_id) is not None or self.agents.generations.get(agent.agent_id) != generation:
            return
        for kernel in self.kernels.on_agent(agent.agent_id):
            await self.lifecycle.lost(kernel, f"agent {agent.agent_id} stayed away longer than "
                                              f"{self.timeouts.agent_grace:g} s (Gateway.agent_grace) while this task ran")
