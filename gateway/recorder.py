"""The recorder: what one kernel's approved executions do, written to the store in order, never dropped.

Each write is an op (``op(session)``) about one task, idempotent: an output is stored once per
(task, seq), a state change is a compare-and-set whose conflict means "already final". So a
write may be tried again as often as needed, and is: while the store is unavailable
(:class:`~.errors.StoreUnavailable`: it did not answer, or cannot be reached) a batch is retried
with exponential backoff (``Timeouts.store_retry_max`` at most between attempts) until it
commits. Memory is bounded: past ``max_bytes`` of queued writes, :meth:`Recorder.room` makes
whoever feeds it (the agent's socket, ``handlers/agent_ws.py``) wait, instead of the queue
growing or a write being dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import StoreUnavailable

log = logging.getLogger("cellgate.gateway.recorder")

Op = Callable[[Any], None]  # op(session): one write about one task
#: bytes a queued write counts beyond its own size (the op, its closure, the queue entry)
OVERHEAD = 512
#: default of ``Gateway.recorder_buffer_bytes``
MAX_BYTES = 64 * 1024 * 1024


@dataclass
class _Write:
    task_id: int
    op: Op
    size: int
    on_done: Callable[[], None] | None


class Recorder:
    """Writes what one kernel's executions do, in order, off the relay path.

    Writes are batched: what queues up within ``BATCH_DELAY`` (and while the previous transaction
    ran, or waited for the store) is written in one transaction, so a fast cell's running, outputs
    and result become one commit. A batch the store could not take is retried until it commits; a
    batch that fails for another reason (one op is wrong) is written op by op, so the others land
    (the wrong one is logged with its error). ``notify(task_id)``, and each write's ``on_done``,
    run after the commit that included it.
    """

    #: seconds the first write of a batch waits for others, so a cell's running, outputs and result
    #: (and those of the cells right after it) share one commit and do not hold up the next submit
    BATCH_DELAY = 0.02
    #: seconds before the first retry of a write the store could not take (doubled each time)
    RETRY_FIRST = 0.1
    #: seconds an attempt may wait for a stalled store before the log says so
    STALL_LOGGED = 10.0

    def __init__(self, run: Callable[..., Awaitable[Any]], notify: Callable[[int], None], *,
                 max_bytes: int = MAX_BYTES, retry_max: float = 10.0) -> None:
        self._run_in_store = run
        self._notify = notify
        self.max_bytes = max_bytes
        self.retry_max = retry_max
        self._pending: deque[_Write] = deque()  # queued and being written, in order
        self._bytes = 0
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def put(self, task_id: int, op: Op, on_done: Callable[[], None] | None = None, size: int = 0) -> None:
        """Queue ``op`` (``size``: the bytes it holds, e.g. an output's); never refused, never
        dropped. Past ``max_bytes`` queued, :meth:`room` waits until writes have committed."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        write = _Write(task_id, op, size + OVERHEAD, on_done)
        self._pending.append(write)
        self._bytes += write.size
        if self._bytes >= self.max_bytes and self._room.is_set():
            self._room.clear()
            log.warning("%d bytes of execution records wait for the store (tasks %s); the agent's socket is not read "
                        "until they are written (Gateway.recorder_buffer_bytes)", self._bytes,
                        ", ".join(map(str, sorted(self.pending_tasks()))))
        self._idle.clear()
        self._wake.set()

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    async def room(self) -> None:
        """Wait until the queued writes are under ``max_bytes`` again (at once when they are)."""
        await self._room.wait()

    def pending_tasks(self) -> set[int]:
        """Tasks with a write not committed yet (the sweeper leaves them alone)."""
        return {write.task_id for write in self._pending}

    async def drain(self) -> None:
        """Wait until everything queued so far is written."""
        await self._idle.wait()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.BATCH_DELAY)  # let the rest of the cell (and the next submit) go first
            batch = list(self._pending)
            written = await self._write(batch)
            for _ in batch:
                self._bytes -= self._pending.popleft().size
            if self._bytes < self.max_bytes:
                self._room.set()
            for task_id in dict.fromkeys(write.task_id for write in batch):
                self._notify(task_id)
            for write in written:
                if write.on_done is not None:
                    write.on_done()
            if not self._pending:
                self._idle.set()

    async def _write(self, batch: list[_Write]) -> list[_Write]:
        """Write ``batch``; returns the writes committed (all but a wrong one)."""
        try:
            await self._until_committed(self._apply, batch)
            return batch
        except Exception:  # not the store: one op is wrong; write the others one by one
            written = []
            for write in batch:
                try:
                    await self._until_committed(write.op)
                    written.append(write)
                except Exception:
                    log.exception("recording an event of task %s failed (not a store outage: this write is wrong)",
                                  write.task_id)
            return written

    async def _until_committed(self, fn: Callable[..., None], *args: Any) -> None:
        """``fn(session, *args)`` in one transaction, tried until it commits while the store is unavailable."""
        delay = self.RETRY_FIRST
        failures = 0
        while True:
            try:
                await self._attempt(fn, *args)
            except StoreUnavailable as exc:
                failures += 1
                if failures == 1 or delay >= self.retry_max:
                    log.warning("the store is unavailable (%s); %d execution records wait (tasks %s), retrying "
                                "every %.1f s at most until it commits", exc.message, len(self._pending),
                                ", ".join(map(str, sorted(self.pending_tasks()))), self.retry_max)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if failures:
                log.warning("the store is back: %d execution records written after %d failed attempts",
                            len(self._pending), failures)
            return

    async def _attempt(self, fn: Callable[..., None], *args: Any) -> None:
        """One attempt, as long as the store takes (a stalled store: until it answers), said in the log
        after ``STALL_LOGGED`` seconds."""
        attempt = asyncio.ensure_future(self._run_in_store(fn, *args))
        try:
            done, _ = await asyncio.wait({attempt}, timeout=self.STALL_LOGGED)
            if not done:
                log.warning("the store has not answered for %g s; %d execution records wait (tasks %s) until it does",
                            self.STALL_LOGGED, len(self._pending), ", ".join(map(str, sorted(self.pending_tasks()))))
            await attempt
        finally:
            attempt.cancel()  # (done already, unless this recorder is closed)

    @staticmethod
    def _apply(session: Any, batch: list[_Write]) -> None:
        for write in batch:
            write.op(session)
