"""The recorder (gateway/recorder.py) against a fake store: it retries until the store takes a
write, in order, never drops one, backs off (capped), and bounds what waits (back-pressure)."""

from __future__ import annotations

import asyncio
from typing import Any

from cellgate.gateway.errors import StoreUnavailable
from cellgate.gateway.recorder import OVERHEAD, Recorder


class FakeStore:
    """``run(fn, *args)``: raises StoreUnavailable while ``down`` (counting attempts and their
    times), else applies ``fn`` to a fake session (a list the ops append to) and commits it."""

    def __init__(self, down_for: int = 0) -> None:
        self.down_for = down_for  # attempts to refuse
        self.attempts: list[float] = []
        self.committed: list[Any] = []
        self.stalled: asyncio.Event | None = None

    async def run(self, fn: Any, *args: Any) -> None:
        self.attempts.append(asyncio.get_running_loop().time())
        if self.stalled is not None:
            await self.stalled.wait()
        if len(self.attempts) <= self.down_for:
            raise StoreUnavailable("the gateway's store did not answer within 1 s; try again in a moment")
        session: list[Any] = []
        fn(session, *args)
        self.committed.extend(session)  # the transaction commits only when every op succeeded


def _op(value: Any) -> Any:
    return lambda session: session.append(value)


def test_writes_retry_until_the_store_takes_them_in_order_none_dropped() -> None:
    store = FakeStore(down_for=6)
    notified: list[int] = []
    done: list[int] = []

    async def main() -> None:
        recorder = Recorder(store.run, notified.append, retry_max=0.05)
        recorder.RETRY_FIRST = 0.005
        for i in range(5):
            recorder.put(1, _op(("t1", i)), on_done=lambda i=i: done.append(i))
        recorder.put(2, _op(("t2", 0)))
        assert recorder.pending_tasks() == {1, 2}
        await asyncio.wait_for(recorder.drain(), 5)
        assert recorder.pending_tasks() == set()
        recorder.close()
    asyncio.run(main())
    assert store.committed == [("t1", i) for i in range(5)] + [("t2", 0)]
    assert len(store.attempts) == 7  # six refused, the seventh committed the whole batch
    assert notified == [1, 2] and done == [0, 1, 2, 3, 4]  # only after the commit


def test_the_backoff_doubles_and_is_capped() -> None:
    store = FakeStore(down_for=7)

    async def main() -> None:
        recorder = Recorder(store.run, lambda _: None, retry_max=0.08)
        recorder.RETRY_FIRST = 0.01
        recorder.put(1, _op("x"))
        await asyncio.wait_for(recorder.drain(), 5)
        recorder.close()
    asyncio.run(main())
    gaps = [b - a for a, b in zip(store.attempts, store.attempts[1:], strict=False)]
    expected = [0.01, 0.02, 0.04, 0.08, 0.08, 0.08, 0.08]
    assert len(gaps) == len(expected)
    for gap, want in zip(gaps, expected, strict=True):
        assert want * 0.9 <= gap < want + 0.05, (gaps, expected)
    assert store.committed == ["x"]


def test_past_its_bound_the_recorder_makes_the_feeder_wait_then_lets_it_go() -> None:
    store = FakeStore()

    async def main() -> None:
        store.stalled = asyncio.Event()  # the store hangs until set
        recorder = Recorder(store.run, lambda _: None, max_bytes=3 * (OVERHEAD + 100))
        recorder.put(1, _op(0), size=100)
        recorder.put(1, _op(1), size=100)
        assert not recorder.full
        await asyncio.wait_for(recorder.room(), 1)  # room: at once
        recorder.put(1, _op(2), size=100)  # never refused: the feeder is held instead
        assert recorder.full
        waiting = asyncio.ensure_future(recorder.room())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # held while the store hangs
        store.stalled.set()
        await asyncio.wait_for(waiting, 2)
        assert not recorder.full
        await asyncio.wait_for(recorder.drain(), 2)
        recorder.close()
    asyncio.run(main())
    assert store.committed == [0, 1, 2]


def test_one_wrong_write_does_not_lose_the_others_of_its_batch() -> None:
    store = FakeStore()
    done: list[str] = []

    def wrong(session: Any) -> None:
        raise ValueError("a bug in one op")

    async def main() -> None:
        recorder = Recorder(store.run, lambda _: None)
        recorder.put(1, _op("a"), on_done=lambda: done.append("a"))
        recorder.put(1, wrong, on_done=lambda: done.append("wrong"))
        recorder.put(2, _op("b"), on_done=lambda: done.append("b"))
        await asyncio.wait_for(recorder.drain(), 2)
        recorder.close()
    asyncio.run(main())
    assert store.committed == ["a", "b"]
    assert done == ["a", "b"]  # on_done only for a write that was committed


def test_a_kernel_whose_records_are_over_the_bound_holds_its_agents_next_frame() -> None:
    """AgentSessions.room (awaited by the agent socket's on_message before tornado reads the next frame)."""
    from cellgate import protocol
    from cellgate.gateway.app import assemble
    from cellgate.gateway.store import Store

    store = Store("sqlite://")

    async def main() -> None:
        parts = assemble(store, "http://gw.test")
        fake = FakeStore()
        fake.stalled = asyncio.Event()
        recorder = Recorder(fake.run, lambda _: None, max_bytes=OVERHEAD + 1000)
        parts.relay.recorders["k1"] = recorder
        frame = protocol.KernelMsg(kernel_id="k1", channel="iopub", msg={"header": {}, "content": {}})
        await asyncio.wait_for(parts.sessions.room(frame), 1)  # under the bound: at once
        recorder.put(1, _op("big output"), size=2000)
        held = asyncio.ensure_future(parts.sessions.room(frame))
        other = protocol.KernelMsg(kernel_id="k2", channel="iopub", msg={"header": {}, "content": {}})
        await asyncio.wait_for(parts.sessions.room(other), 1)  # a kernel with nothing waiting: at once
        await asyncio.wait_for(parts.sessions.room(protocol.Pong()), 1)
        await asyncio.sleep(0.1)
        assert not held.done()
        fake.stalled.set()  # the store answers: the write commits, the frame after it is read
        await asyncio.wait_for(held, 2)
        assert fake.committed == ["big output"]
        recorder.close()
    try:
        asyncio.run(main())
    finally:
        store.close()
