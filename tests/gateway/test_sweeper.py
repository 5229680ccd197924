"""The sweeper (gateway/sweeper.py): a task dispatched or running past its limit plus the margin,
that nothing in the gateway tracks, ends ``lost`` with the reason; anything tracked is left."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from gateway_harness import Seed
from sqlalchemy import select, update

from cellgate.gateway import tasks
from cellgate.gateway.app import Parts, assemble
from cellgate.gateway.kernels import Execution, LiveKernel
from cellgate.gateway.models import AuditEvent, Task
from cellgate.gateway.recorder import Recorder
from cellgate.gateway.store import Store
from cellgate.gateway.timeouts import Timeouts

LIMIT = 5  # the tasks' time limit (review rule), seconds
MARGIN = 10.0


def _aged(store: Store, seed: Seed, status: str, seconds_ago: float) -> int:
    """A task in ``status`` since ``seconds_ago`` (started_at for running, updated_at for dispatched)."""
    task_id = seed.task(seed.user("alice"), status=status, review_rule={"timeout": LIMIT})
    then = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds_ago)
    column = "started_at" if status == tasks.RUNNING else "updated_at"
    store.call(lambda s: s.execute(update(Task).where(Task.id == task_id).values({column: then})))
    return task_id


def _sweep(store: Store, prepare: Any = None) -> tuple[list[int], Parts]:
    parts = assemble(store, "http://gw.test", timeouts=Timeouts(sweep_margin=MARGIN))

    async def main() -> list[int]:
        if prepare is not None:
            prepare(parts)
        ended = await parts.sweeper.sweep()
        for recorder in parts.relay.recorders.values():
            recorder.close()
        return ended
    return asyncio.run(main()), parts


def test_a_task_past_its_limit_and_margin_ends_lost_with_its_reason(store: Store, seed: Seed) -> None:
    running = _aged(store, seed, tasks.RUNNING, LIMIT + MARGIN + 5)
    dispatched = _aged(store, seed, tasks.DISPATCHED, LIMIT + MARGIN + 5)
    fresh = _aged(store, seed, tasks.RUNNING, LIMIT + MARGIN - 5)  # within its limit plus the margin
    ended, _ = _sweep(store)
    assert sorted(ended) == sorted([running, dispatched])
    assert seed.status(fresh) == tasks.RUNNING
    reason = "the gateway lost track of this task: no result within its limit of 5 s plus 10 s; it may have run"
    for task_id in (running, dispatched):
        task = store.call(lambda s, t=task_id: s.get(Task, t))
        assert task.status == tasks.LOST and task.error_ename == "TaskLost" and reason in task.error_evalue
        event = store.call(lambda s, t=task_id: s.execute(select(AuditEvent).where(
            AuditEvent.task_id == t, AuditEvent.action == "task.lost")).scalar_one())
        assert event.actor == "gateway" and reason in event.detail["reason"]
    assert seed.verify().ok
    assert _sweep(store)[0] == []  # once


def test_a_task_this_gateway_still_tracks_is_left_alone(store: Store, seed: Seed) -> None:
    in_flight = _aged(store, seed, tasks.RUNNING, LIMIT + MARGIN + 5)
    being_written = _aged(store, seed, tasks.RUNNING, LIMIT + MARGIN + 5)

    def prepare(parts: Parts) -> None:
        kernel = LiveKernel(id="k1", user_id=1, user_name="alice", target="prod", agent_id="a1")
        kernel.executions["m1"] = Execution(task_id=in_flight, msg_id="m1",
                                            done=asyncio.get_running_loop().create_future())
        parts.kernels.add(kernel)
        never = asyncio.Event()  # a store that does not answer: the record waits

        async def stalled(fn: Any, *args: Any) -> None:
            await never.wait()
        recorder = Recorder(stalled, lambda _: None)
        recorder.put(being_written, lambda s: None)  # its end, written once the store is back
        parts.relay.recorders["k2"] = recorder
    ended, _ = _sweep(store, prepare)
    assert ended == []
    assert seed.status(in_flight) == seed.status(being_written) == tasks.RUNNING
