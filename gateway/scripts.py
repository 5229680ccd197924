"""Scripts: code sent by the CLI (``cellgate run``), run headless on an ephemeral kernel.

A script is a task of kind ``script`` (or ``notebook``: a rendered notebook, run cell by cell by
``notebooks.runner``): once approved (by policy or review) and once an agent
serves its target, it runs on a kernel started for it alone, as its author, and the kernel is
stopped when it ends. After a gateway restart, :meth:`Scripts.recover` ends what the previous
process was running (``lost``, never re-run) and picks up the scripts still waiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import tasks
from .agents import AgentRegistry
from .auth import Identity
from .background import Background
from .events import TaskEvents
from .flow import TaskFlow, identity_of
from .kernels import NotRun
from .lifecycle import KernelLifecycle
from .models import Task
from .notebooks.runner import NotebookRunner, execute_request
from .relay import Relay
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.scripts")


class Scripts:
    def __init__(self, store: Store, events: TaskEvents, agents: AgentRegistry, flow: TaskFlow, relay: Relay,
                 lifecycle: KernelLifecycle, background: Background, timeouts: Timeouts | None = None) -> None:
        self.store = store
        self.events = events
        self.agents = agents
        self.flow = flow
        self.relay = relay
        self.lifecycle = lifecycle
        self.background = background
        self.timeouts = timeouts or Timeouts()
        self.notebooks = NotebookRunner(store, relay)

    async def submit(self, ident: Identity, target_name: str, code: str, why: str,
                     template: dict[str, Any] | None = None, kind: str = "script",
                     preapproved: tuple[str, str] | None = None) -> Task:
        """A CLI script, or a rendered template (``template``: what ``Task.template`` records); with
        ``kind="notebook"``, ``code`` is a rendered notebook (``notebooks.document``). A user
        outside the target's submit groups gets a ``denied`` task: the attempt is audited."""
        task = await self.flow.submit(ident, target_name, code, kind=kind, why=why, template=template, preapproved=preapproved)
        if task.status in (tasks.APPROVED, tasks.PENDING_REVIEW):
            self.background.spawn(self.run(task.id))
        return task

    async def run(self, task_id: int) -> None:
        """Wait for the decision and for an agent, then run the script on an ephemeral kernel."""
        task = await self.flow.get_task(task_id)
        while task.status == tasks.PENDING_REVIEW:
            await self.events.wait(task_id, self.timeouts.task_poll)
            task = await self.flow.get_task(task_id)
        while task.status == tasks.APPROVED and not self.agents.serving(task.target):
            await asyncio.sleep(self.timeouts.agent_poll)  # no agent yet: wait, but never past the approval window
            task = await self.flow.ensure_fresh(await self.flow.get_task(task_id))
        if task.status != tasks.APPROVED:
            return
        ident = await self.store.run(identity_of, task.user_id)
        try:
            kernel = await self.lifecycle.start(ident, task.target, ephemeral=True)
        except Exception as exc:
            await self.relay.finish(task_id, tasks.FAILED, "AgentUnavailable", str(getattr(exc, "message", exc)))
            return
        try:
            if task.kind == "notebook":
                await self.notebooks.run(kernel, task)
                return
            try:
                await self.relay.dispatch(kernel, task, execute_request(task.code, task_id))
            except NotRun:
                return
            await self.relay.drain(kernel)
        finally:
            await self.lifecycle.stop(kernel, "gateway")

    async def recover(self) -> None:
        """On start: executions of a previous gateway process are not re-run; held cells are gone;
        scripts still waiting for review or an agent wait again."""
        def _tx(session: Session) -> list[int]:
            resumed = []
            unfinished = [tasks.DISPATCHED, tasks.RUNNING, tasks.PENDING_REVIEW, tasks.APPROVED]
            for task in session.execute(select(Task).where(Task.status.in_(unfinished))).scalars().all():
                if task.status in (tasks.DISPATCHED, tasks.RUNNING):
                    tasks.transition(session, task.id, task.status, tasks.LOST, "gateway",
                                     {"reason": "the gateway restarted while it ran; it is not re-run automatically"},
                                     error_ename="TaskLost",
                                     error_evalue="the gateway restarted while this task ran: its code may have run; "
                                                  "check the target before running it again")
                elif task.kind == "schedule":  # a schedule's review: it never runs itself
                    continue
                elif task.kind == "cell":
                    tasks.transition(session, task.id, task.status, tasks.CANCELLED, "gateway",
                                     {"reason": "the gateway restarted while the cell waited"},
                                     decided_by="gateway", decision_comment="the gateway restarted while the cell waited; run it again")
                else:
                    resumed.append(task.id)
            return resumed
        for task_id in await self.store.run(_tx):
            self.background.spawn(self.run(task_id))
