"""Tasks an earlier gateway process left ``dispatched`` or ``running``: kept until their agent reports them.

After a gateway restart nobody here knows how such a task ended; its agent's journal does. So
:meth:`Scripts.recover` hands them over (:meth:`Recovery.hold`) instead of ending them, and the
agent's next ``hello`` settles them (``reconcile.tasks_of``): a task on a kernel the agent kept
(an interactive kernel, re-adopted) is tracked again as an :class:`~.kernels.Execution`, so its
later outputs and its end are recorded as on a live link; the others get the end the journal
knows, ``failed`` (``NotDelivered``) when the journal never had them, or ``lost`` when their kernel
is gone. A task the journal says ended on a kernel not kept (a script's: its kernel is stopped)
whose frames the agent still holds is followed on a *leftover* kernel, never registered, only
long enough to store those frames and the end they carry (:meth:`Recovery.leftover_msg`). Those
whose agent has not said ``hello`` ``Timeouts.agent_grace`` seconds after the start end ``lost``
(:meth:`Recovery.expire`), saying the code may have run and what is known.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cellgate import protocol

from . import policy, tasks
from .background import Background
from .events import TaskEvents
from .kernels import Execution, LiveKernel
from .models import Task, TaskOutput, aware
from .relay import Relay, finish_tx
from .store import Store

log = logging.getLogger("cellgate.gateway.recovery")


def _at(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Orphan:
    """A task ``dispatched``/``running`` in the store that no execution of this process tracks."""

    task_id: int
    status: str
    kind: str
    user_id: int
    target: str
    agent_id: str | None
    kernel_id: str | None
    msg_id: str | None  # the request's (cells: bound at submission)
    dispatched_at: dt.datetime | None  # (known while it is only dispatched)
    started_at: dt.datetime | None
    max_bytes: int
    timeout: float  # the target's time limit as reviewed
    output_bytes: int
    last_output: int  # the highest output seq stored

    def whereabouts(self) -> str:
        known = [f"dispatched at {_at(self.dispatched_at)}"] if self.dispatched_at is not None else []
        if self.started_at is not None:
            known.append(f"started at {_at(self.started_at)}")
        known.append(f"{self.last_output} output(s) recorded")
        return "; ".join(known)

    def execution(self, msg_id: str, agent_seq: int) -> Execution:
        """The execution this process tracks from now on (its outputs numbered on from the stored ones;
        ``agent_seq``: the last of the agent's frames the earlier process acknowledged)."""
        return Execution(task_id=self.task_id, msg_id=msg_id, done=asyncio.get_running_loop().create_future(),
                         seq=self.last_output, started=self.status == tasks.RUNNING, max_bytes=self.max_bytes,
                         bytes=self.output_bytes, agent_seq=agent_seq,
                         sent_at=self.dispatched_at or self.started_at or dt.datetime.now(dt.UTC),
                         started_at=self.started_at)


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    return None if when is None else aware(when)


def orphans_tx(session: Session) -> list[Orphan]:
    """Every ``dispatched``/``running`` task (read at start, before any agent is back)."""
    rows = session.execute(select(Task).where(Task.status.in_([tasks.DISPATCHED, tasks.RUNNING]))).scalars().all()
    last = dict(session.execute(select(TaskOutput.task_id, func.max(TaskOutput.seq))
                                .where(TaskOutput.task_id.in_([t.id for t in rows])).group_by(TaskOutput.task_id)).tuples().all())
    return [Orphan(task_id=t.id, status=t.status, kind=t.kind, user_id=t.user_id, target=t.target, agent_id=t.agent_id,
                   kernel_id=t.kernel_id, msg_id=t.msg_id,
                   dispatched_at=_utc(t.updated_at) if t.status == tasks.DISPATCHED else None,
                   started_at=_utc(t.started_at),
                   max_bytes=policy.byte_limit(t.review_rule), timeout=policy.time_limit(t.review_rule),
                   output_bytes=t.output_bytes or 0, last_output=int(last.get(t.id, 0))) for t in rows]


class Recovery:
    def __init__(self, store: Store, events: TaskEvents, background: Background) -> None:
        self.store = store
        self.events = events
        self.background = background
        self.orphans: dict[int, Orphan] = {}
        #: kernels not kept whose resent frames are still awaited: (agent id, kernel id) → kernel
        self.leftovers: dict[tuple[str, str], LiveKernel] = {}

    def hold(self, orphans: list[Orphan]) -> None:
        for o in orphans:
            self.orphans[o.task_id] = o
        if orphans:
            log.info("%d task(s) of the earlier gateway process wait for their agent's report: %s", len(orphans),
                     ", ".join(f"#{o.task_id} {o.status} on {o.agent_id}" for o in orphans))

    def of_agent(self, agent_id: str) -> list[Orphan]:
        """The orphans of ``agent_id``, taken: its hello settles them."""
        mine = [o for o in self.orphans.values() if o.agent_id == agent_id]
        for o in mine:
            del self.orphans[o.task_id]
        return mine

    def adopt(self, kernel: LiveKernel, orphan: Orphan, msg_id: str, agent_seq: int, relay: Relay,
              running: bool) -> Execution:
        """Track ``orphan`` again on ``kernel``: its frames are recorded from now on; ``running`` (its
        agent's journal has no end yet): its time limit holds."""
        ex = orphan.execution(msg_id, agent_seq)
        kernel.executions[ex.msg_id] = ex
        if running:
            left = orphan.timeout - (dt.datetime.now(dt.UTC) - (orphan.started_at or ex.sent_at)).total_seconds()
            self.background.spawn(relay.watch_limit(kernel, ex, orphan.timeout, left))
        log.info("task %s: on kernel %s of agent %s%s, tracked again", orphan.task_id, kernel.id, orphan.agent_id,
                 " (not kept: until its resent frames are stored)" if kernel.execution_state == "dead" else "")
        return ex

    def follow_leftover(self, relay: Relay, orphan: Orphan, kernel_id: str, msg_id: str, agent_seq: int) -> None:
        """``orphan`` ended on ``kernel_id``, not kept: store the frames its agent resends, and the end they carry."""
        assert orphan.agent_id is not None
        kernel = self.leftovers.get((orphan.agent_id, kernel_id))
        if kernel is None:
            kernel = LiveKernel(id=kernel_id, user_id=orphan.user_id, user_name="", target=orphan.target,
                                agent_id=orphan.agent_id, ephemeral=True, execution_state="dead")
            relay.open(kernel)
            self.leftovers[(orphan.agent_id, kernel_id)] = kernel
        self.adopt(kernel, orphan, msg_id, agent_seq, relay, running=False)

    def leftover_msg(self, relay: Relay, agent_id: str, frame: protocol.KernelMsg) -> None:
        """A frame about a kernel not hosted here: recorded if it is of a leftover's task."""
        kernel = self.leftovers.get((agent_id, frame.kernel_id))
        if kernel is None:
            return
        relay.on_kernel_msg(kernel, frame)
        if not kernel.executions:  # all its tasks ended
            self.leftovers.pop((agent_id, frame.kernel_id), None)
            self.background.spawn(relay.close(kernel))

    def drop_leftovers(self, relay: Relay, agent_id: str) -> None:
        """``agent_id`` said hello again before resending all of a leftover's frames: its journal settles
        those tasks now (``reconcile._unmatched``)."""
        for key in [k for k in self.leftovers if k[0] == agent_id]:
            self.background.spawn(relay.close(self.leftovers.pop(key)))

    async def end(self, orphan: Orphan, status: str, ename: str, evalue: str) -> None:
        await self.store.run(finish_tx, orphan.task_id, status, ename, evalue)
        self.events.notify(orphan.task_id)

    async def expire(self, grace: float) -> None:
        """``grace`` seconds after the start, end ``lost`` the orphans no agent reported."""
        await asyncio.sleep(grace)
        for orphan in list(self.orphans.values()):
            self.orphans.pop(orphan.task_id, None)
            agent = f"agent {orphan.agent_id}" if orphan.agent_id else "its agent"
            why = (f"the gateway restarted while this task ran and {agent} did not report within "
                   f"{grace:g} s (Gateway.agent_grace): its code may have run ({orphan.whereabouts()}); "
                   "check the target before running it again")
            log.warning("task %s: %s", orphan.task_id, why)
            await self.end(orphan, tasks.LOST, "TaskLost", why)
