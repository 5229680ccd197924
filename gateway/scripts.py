"""Scripts: code sent by the CLI (``cellgate run``), run headless on an ephemeral kernel.

A script is a task of kind ``script`` (or ``notebook``: a rendered notebook, run cell by cell by
``notebooks.runner``): once approved (by policy or review) and once an agent
serves its target, it runs on a kernel started for it alone, as its author, and the kernel is
stopped when it ends. After a gateway restart, :meth:`Scripts.recover` hands what the previous
process was running to ``recovery.Recovery`` (its agent's journal settles it; never re-run) and
picks up the scripts still waiting. A gateway
that stops (SIGTERM) starts no new script and gives the running ones a grace to end
(:meth:`Scripts.stop`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import tasks
from .agents import AgentRegistry
from .auth import Identity
from .background import Background
from .errors import StoreUnavailable
from .events import TaskEvents
from .flow import TaskFlow, identity_of
from .idempotency import Idempotency
from .kernels import LiveKernel, NotRun
from .lifecycle import KernelLifecycle
from .models import Task
from .recovery import Orphan, Recovery, orphans_tx
from .notebooks.runner import NotebookRunner, execute_request
from .relay import Relay
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.scripts")
T = TypeVar("T")


class Scripts:
    def __init__(self, store: Store, events: TaskEvents, agents: AgentRegistry, flow: TaskFlow, relay: Relay,
                 lifecycle: KernelLifecycle, background: Background, timeouts: Timeouts | None = None,
                 recovery: Recovery | None = None) -> None:
        self.store = store
        self.events = events
        self.agents = agents
        self.flow = flow
        self.relay = relay
        self.lifecycle = lifecycle
        self.background = background
        self.timeouts = timeouts or Timeouts()
        self.recovery = recovery or Recovery(store, events, background)
        self.notebooks = NotebookRunner(store, relay)
        #: the run of each script this process follows, and the kernel of each one that runs
        self.runs: dict[int, asyncio.Task[None]] = {}
        self.kernels: dict[int, LiveKernel] = {}
        self.stopping = False

    async def submit(self, ident: Identity, target_name: str, code: str, why: str,
                     template: dict[str, Any] | None = None, kind: str = "script",
                     preapproved: tuple[str, str] | None = None, idem: Idempotency | None = None) -> Task:
        """A CLI script, or a rendered template (``template``: what ``Task.template`` records); with
        ``kind="notebook"``, ``code`` is a rendered notebook (``notebooks.document``). A user
        outside the target's submit groups gets a ``denied`` task: the attempt is audited. With
        ``idem``, a repeat of an earlier submission returns that task (``replayed``), which runs once."""
        task = await self.flow.submit(ident, target_name, code, kind=kind, why=why, template=template, preapproved=preapproved,
                                      idem=idem)
        if task.replayed:
            return task
        if task.status in (tasks.APPROVED, tasks.PENDING_REVIEW):
            self.follow(task.id)
        return task

    def follow(self, task_id: int) -> None:
        """Run the script in the background (it waits for its decision and an agent first)."""
        run = self.background.spawn(self.run(task_id))
        self.runs[task_id] = run
        run.add_done_callback(lambda _: self.runs.pop(task_id, None))

    async def run(self, task_id: int) -> None:
        """Wait for the decision and for an agent, then run the script on an ephemeral kernel."""
        task = await self._until_store_answers(task_id, self._decided, task_id)
        if task.status != tasks.APPROVED or self.stopping:  # stopping: the next gateway process runs it
            return
        ident = await self._until_store_answers(task_id, self.store.run, identity_of, task.user_id)
        try:
            kernel = await self.lifecycle.start(ident, task.target, ephemeral=True)
        except Exception as exc:
            await self.relay.finish(task_id, tasks.FAILED, "AgentUnavailable", str(getattr(exc, "message", exc)))
            return
        self.kernels[task_id] = kernel
        try:
            if task.kind == "notebook":
                await self.notebooks.run(kernel, task)
                return
            while True:
                try:
                    await self.relay.dispatch(kernel, task, execute_request(task.code, task_id))
                    break
                except NotRun:
                    return
                except StoreUnavailable as exc:  # raised before the request is sent: it did not run; try again
                    log.warning("script task %s is not sent yet: %s", task_id, exc.message)
                    await asyncio.sleep(self.timeouts.task_poll)
                    task = await self._until_store_answers(task_id, self.flow.get_task, task_id)
            await self.relay.drain(kernel)
        finally:
            self.kernels.pop(task_id, None)  # the script has ended: what is left is stopping its kernel
            await self.lifecycle.stop(kernel, "gateway")

    async def _decided(self, task_id: int) -> Task:
        """The task once reviewed and, if approved, once an agent serves its target (or the approval ran out)."""
        task = await self.flow.get_task(task_id)
        while task.status == tasks.PENDING_REVIEW:
            await self.events.wait(task_id, self.timeouts.task_poll)
            task = await self.flow.get_task(task_id)
        while task.status == tasks.APPROVED and not self.agents.serving(task.target):
            await asyncio.sleep(self.timeouts.agent_poll)  # no agent yet: wait, but never past the approval window
            task = await self.flow.ensure_fresh(await self.flow.get_task(task_id))
        return task

    async def _until_store_answers(self, task_id: int, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` (reads, or compare-and-set writes: safe to repeat), again every
        ``task_poll`` seconds while the store is unavailable: a waiting script outlives an outage."""
        while True:
            try:
                return await fn(*args)
            except StoreUnavailable as exc:
                log.warning("script task %s waits for the store: %s", task_id, exc.message)
                await asyncio.sleep(self.timeouts.task_poll)

    async def stop(self, grace: float) -> None:
        """The gateway stops: start no new script; give the running ones ``grace`` seconds to end and
        write their records; end the others ``lost`` (never re-run: the kernel is stopped, what it
        wrote stays written, what it printed is kept) and wait a second for their kernels to stop.
        Scripts still waiting for review or an agent are picked up by the next process (:meth:`recover`)."""
        self.stopping = True
        running = [self.runs[t] for t in self.kernels if t in self.runs]
        if not running:
            return
        await asyncio.wait(running, timeout=grace)
        for task_id, kernel in list(self.kernels.items()):
            log.warning("task %s still runs as the gateway stops: it ends lost", task_id)
            await self.relay.drain(kernel)  # what it printed is stored before its end
            await self.lifecycle.lost(kernel, "the gateway stopped while this task ran; it is not re-run")
        await asyncio.wait(running, timeout=1.0)  # their kernels stop (else the agent stops them at its next hello)

    async def recover(self) -> None:
        """On start: executions of a previous gateway process are never re-run: they wait for their
        agent's report (``recovery.Recovery``, ``lost`` after ``Timeouts.agent_grace`` without one);
        held cells are gone; scripts still waiting for review or an agent wait again."""
        def _tx(session: Session) -> tuple[list[int], list[Orphan]]:
            resumed = []
            for task in session.execute(select(Task).where(Task.status.in_([tasks.PENDING_REVIEW, tasks.APPROVED]))).scalars().all():
                if task.kind == "schedule":  # a schedule's review: it never runs itself
                    continue
                elif task.kind == "cell":
                    tasks.transition(session, task.id, task.status, tasks.CANCELLED, "gateway",
                                     {"reason": "the gateway restarted while the cell waited"},
                                     decided_by="gateway", decision_comment="the gateway restarted while the cell waited; run it again")
                else:
                    resumed.append(task.id)
            return resumed, orphans_tx(session)
        resumed, orphans = await self.store.run(_tx)
        self.recovery.hold(orphans)
        if orphans:
            self.background.spawn(self.recovery.expire(self.timeouts.agent_grace))
        for task_id in resumed:
            self.follow(task_id)
