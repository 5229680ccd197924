"""Risk analysis of one cell, off the event loop and within a time budget.

``flow.TaskFlow.submit`` analyses each cell once, here, before its transaction. The analysis runs in a
small pool of worker *processes* (:class:`Analyser`): parsing 1 MiB of Python (``ast.parse``) or
tokenising 1 MiB of SQL holds the GIL for half a second, which in a thread would stall the event
loop just the same. Cells up to ``THREAD_BYTES`` (most cells) are analysed on a thread instead:
their analysis holds the GIL for milliseconds, and a thread answers without the round trip to
another process. A deadline is passed to :func:`cellgate.gateway.risk.analyze`; if the worker
has not answered by the budget plus a small margin, the cell goes on with :func:`unanalysed` — a
not-parsed, not-read-only, high Risk flagged ``analysis_timeout`` — so it is reviewed, never
auto-approved. The late worker is left to finish (its result is dropped); if every worker is held
by an analysis far past its budget (``STUCK`` budgets), the pool is replaced so the next cells are
analysed again. A cell waiting for a free worker spends its budget waiting: under a flood of huge
cells, other cells are reviewed rather than auto-approved (never the other way round).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from . import risk

log = logging.getLogger("cellgate.gateway.analysis")

#: seconds a worker may overrun its deadline before the cell goes on without it
MARGIN = 0.25
#: worker processes that analyse cells: one core left to the gateway and its store
WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))
#: the workers' niceness: under a flood of huge cells the event loop and the store get the CPU first
NICE = 10
#: an analysis running this many budgets is stuck: when every worker is, the pool is replaced
STUCK = 5
#: cells up to this many characters are analysed on a thread (cheap); larger ones in a worker process
THREAD_BYTES = 4096


def _takes_deadline() -> bool:
    try:
        return "deadline" in inspect.signature(risk.analyze).parameters
    except (TypeError, ValueError):
        return False


def analyze_by(code: str, kind: str, dialect: str | None, deadline: float) -> risk.Risk:
    """``risk.analyze`` with the deadline (when this version of it takes one); over it: :func:`unanalysed`."""
    if _takes_deadline():
        found = risk.analyze(code, kind, dialect, deadline=deadline)
    else:
        found = risk.analyze(code, kind, dialect)
    if time.monotonic() > deadline and found.parsed:  # finished, but late: the budget is the budget
        return unanalysed(f"the analysis took longer than its budget on this {len(code.encode('utf-8', 'surrogatepass'))}-byte cell")
    return found


def unanalysed(why: str) -> risk.Risk:
    """A Risk that never auto-approves: high, not parsed, not read-only, flagged ``analysis_timeout``."""
    reason = f"the analysis ran out of time ({why}); the cell is reviewed, never auto-approved"
    return risk.Risk(level="high", reasons=(reason,), flags=("analysis_timeout",), statements=(), tables=(),
                     read_only=False, parsed=False)


def _lower_priority(parent: int) -> None:
    """Each worker's start: a lower priority, and a watch on ``parent``, the gateway that started it
    (passed in: when the gateway died while the worker started, ``getppid`` is already another)."""
    try:
        os.nice(NICE)
    except OSError:  # not permitted here: run at normal priority
        pass
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker outlives a gateway killed with SIGKILL (nothing closes its pool): it exits once its
    parent is gone (it is then re-parented), within a second."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _warm() -> bool:
    """Run in each new worker: the analysers' imports are paid before the first cell."""
    return risk.analyze("SELECT 1", "sql", "postgresql").parsed


class Analyser:
    """A pool of analysis workers: processes (the gateway) or threads (``processes=False``, for tests)."""

    def __init__(self, workers: int = WORKERS, *, processes: bool = True) -> None:
        self.workers = workers
        self.processes = processes
        self._pool: Executor | None = None
        self._threads: ThreadPoolExecutor | None = None  # small cells
        self._late: dict[Future[Any], float] = {}  # late jobs → when they were submitted

    def _small(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="risk")
        return self._threads

    def _executor(self) -> Executor:
        if self._pool is None:
            if self.processes:
                self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_lower_priority, initargs=(os.getpid(),))
            else:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="risk")
        return self._pool

    def start(self) -> None:
        """Start the workers now (the gateway calls this at start-up, off the event loop's critical path)."""
        pool = self._executor()
        for _ in range(self.workers):
            pool.submit(_warm).add_done_callback(_retrieve)

    async def analyse(self, code: str, kind: str, dialect: str | None, budget: float) -> risk.Risk:
        """The cell's Risk, computed by a worker within ``budget`` seconds."""
        now = time.monotonic()
        deadline = now + budget
        stuck = [f for f, since in list(self._late.items()) if not f.done() and now - since > STUCK * budget]
        if len(stuck) >= self.workers:
            log.warning("every analysis worker is stuck past %d budgets: replacing the pool", STUCK)
            self._replace()
        small = len(code) <= THREAD_BYTES and self.processes  # characters, not bytes: cheap, and close enough
        try:
            job = (self._small() if small else self._executor()).submit(analyze_by, code, kind, dialect, deadline)
        except BrokenProcessPool:
            self._replace()
            return unanalysed("the analysis worker stopped; it was restarted")
        waiting = asyncio.wrap_future(job)
        done, _ = await asyncio.wait({waiting}, timeout=budget + MARGIN)
        if done:
            try:
                return waiting.result()
            except BrokenProcessPool:
                self._replace()
                return unanalysed("the analysis worker stopped; it was restarted")
        waiting.add_done_callback(_retrieve)
        if not small:  # a thread cannot be stopped (it finishes alone); a stuck process can
            self._late[job] = now
            job.add_done_callback(lambda f: self._late.pop(f, None))
        log.warning("risk analysis of a %d-byte %s cell passed its %.1f s budget; the cell is reviewed",
                    len(code.encode("utf-8", "surrogatepass")), kind, budget)
        return unanalysed(f"over its {budget:g} s budget")

    async def analyse_cells(self, cells: Sequence[str], kind: str, dialect: str | None, budget: float) -> risk.Risk:
        """The risk of a notebook: each cell analysed as a cell is (at once, each within ``budget``),
        then combined (``risk.combine``: the highest level, every reason under ``cell N``)."""
        found = await asyncio.gather(*(self.analyse(code, kind, dialect, budget) for code in cells))
        return risk.combine(found, [f"cell {i}" for i in range(1, len(found) + 1)])

    def _replace(self) -> None:
        pool, self._pool = self._pool, None
        self._late.clear()
        if pool is None:
            return
        if isinstance(pool, ProcessPoolExecutor):
            for proc in list(getattr(pool, "_processes", {}).values()):  # stuck workers: no other way to stop them
                proc.kill()
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            if isinstance(pool, ProcessPoolExecutor):
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.kill()
            pool.shutdown(wait=True, cancel_futures=True)


def _retrieve(future: Future[Any] | asyncio.Future[Any]) -> None:
    """A dropped result: retrieve its error (if any) so nothing warns."""
    if not future.cancelled() and future.exception() is not None:
        log.info("a late or warm-up risk analysis failed: %s", future.exception())


_default: Analyser | None = None


def default() -> Analyser:
    """The process-wide analyser (worker processes), created on first use."""
    global _default
    if _default is None:
        _default = Analyser()
    return _default
