"""The sweeper: ends tasks the gateway lost track of, so none stays ``running`` for ever.

A task is dispatched or running while this process relays its execution; the relay ends it (its
result, its time limit, its kernel's death). When that end never comes — the result was lost, a
bug, a kernel no one hosts any more — the task would stay ``running``. Every
``Timeouts.sweep_interval`` seconds the sweeper ends ``lost`` (it may have run: it is never re-run)
each task dispatched or running for longer than its time limit plus ``Timeouts.sweep_margin``
that nothing in this process tracks: no execution in flight, no record still waiting to be
written (:meth:`~.relay.Relay.recording`: after a store outage, its true end is on its way). The
reason goes in the audit event and the task's error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import policy, tasks
from .errors import StoreUnavailable
from .events import TaskEvents
from .kernels import KernelRegistry
from .models import Task, aware, utcnow
from .relay import Relay
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.sweeper")


def sweep_tx(session: Session, margin: float, tracked: set[int]) -> list[int]:
    """End ``lost`` every task dispatched or running past its limit plus ``margin`` but not in
    ``tracked``; returns their ids. (A task's end written meanwhile wins: each end is a compare-and-set.)"""
    now = utcnow()
    candidates = session.execute(select(Task).where(Task.status.in_([tasks.DISPATCHED, tasks.RUNNING]))).scalars().all()
    overdue = [t for t in candidates
               if now - aware(t.started_at or t.updated_at) > dt.timedelta(seconds=policy.time_limit(t.review_rule) + margin)]
    ended = []
    for task in overdue:
        if task.id in tracked:
            continue
        reason = (f"the gateway lost track of this task: no result within its limit of {policy.time_limit(task.review_rule):g} s "
                  f"plus {margin:g} s; it may have run (it is not re-run)")
        try:
            tasks.transition(session, task.id, task.status, tasks.LOST, "gateway", {"reason": reason},
                             error_ename="TaskLost", error_evalue=reason)
        except tasks.TransitionConflict:  # it ended meanwhile
            continue
        ended.append(task.id)
    return ended


class Sweeper:
    def __init__(self, store: Store, kernels: KernelRegistry, relay: Relay, events: TaskEvents,
                 timeouts: Timeouts | None = None) -> None:
        self.store = store
        self.kernels = kernels
        self.relay = relay
        self.events = events
        self.timeouts = timeouts or Timeouts()

    def tracked(self) -> set[int]:
        """Tasks this process still follows: an execution in flight, or a record not written yet."""
        running = {ex.task_id for kernel in list(self.kernels.kernels.values()) for ex in list(kernel.executions.values())}
        return running | self.relay.recording()

    async def sweep(self) -> list[int]:
        """One look: the tasks ended ``lost`` now."""
        ended = await self.store.run(sweep_tx, self.timeouts.sweep_margin, self.tracked())  # read on the loop
        for task_id in ended:
            log.warning("task %s ended lost: past its time limit plus %g s, and nothing in this gateway tracked it",
                        task_id, self.timeouts.sweep_margin)
            self.events.notify(task_id)
        return ended

    async def run(self) -> None:
        """Sweep every ``sweep_interval`` seconds until cancelled; a store outage only skips a look."""
        while True:
            await asyncio.sleep(self.timeouts.sweep_interval)
            try:
                await self.sweep()
            except StoreUnavailable as exc:
                log.warning("the sweeper skipped a look: %s", exc.message)
            except Exception:
                log.exception("the sweeper's look failed; it tries again in %g s", self.timeouts.sweep_interval)
