"""TaskFlow.submit: one analysis per cell, off the loop and within its budget; the size cap; run_as.

And the gateway's own answer to ``history_request`` (handlers/kernels.history).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_harness import Seed, ident, reviewed_target

from cellgate.gateway import analysis, risk
from cellgate.gateway.errors import TooLarge
from cellgate.gateway.handlers.kernels import history
from cellgate.gateway.app import Parts, assemble
from cellgate.gateway.store import Store


@pytest.fixture
def service(store: Store, seed: Seed) -> Iterator[Parts]:
    """Gateway parts whose analyses run in threads (so tests can replace risk.analyze); see test_worker_processes."""
    reviewed_target(store)
    analyser = analysis.Analyser(processes=False)
    yield assemble(store, "http://gw.test", analyser=analyser)
    analyser.close()


@pytest.fixture
def dev(seed: Seed) -> int:
    return seed.user("dev", ["dev"])


def submit(service: Parts, who: int, code: str, kind: str = "script") -> Any:
    return asyncio.run(service.flow.submit(ident(who), "prod", code, kind=kind))


@pytest.mark.parametrize(("code", "status", "run_as"), [
    ("SELECT * FROM accounts", "approved", "read-only"),
    ("UPDATE accounts SET x = 1 WHERE id = 2", "pending_review", "read-write"),
])
def test_run_as_is_recorded_on_the_task(service: Parts, dev: int, code: str, status: str, run_as: str) -> None:
    task = submit(service, dev, code)
    assert task.status == status
    assert task.review_rule["run_as"] == run_as


def test_the_analysis_runs_once_off_the_event_loop(service: Parts, dev: int, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = risk.analyze

    def counting(code: str, kind: str, dialect: str | None, **kw: Any) -> risk.Risk:
        calls.append(threading.current_thread().name)
        return real(code, kind, dialect, **kw)
    monkeypatch.setattr(risk, "analyze", counting)
    submit(service, dev, "DELETE FROM accounts WHERE id = 3")  # a DML cell: the estimate used to analyse again
    assert len(calls) == 1 and calls[0].startswith("risk"), calls


def test_worker_processes_analyse_and_answer(service: Parts, dev: int) -> None:
    """What the gateway runs: the analysis in a worker process; the Risk comes back whole."""
    service.flow.analyser = analysis.Analyser(1)
    try:
        service.flow.analyser.start()
        pad = "\n-- " + "x" * analysis.THREAD_BYTES  # past THREAD_BYTES: a worker process analyses it
        task = submit(service, dev, "SELECT * FROM accounts" + pad)
        assert task.status == "approved" and task.risk["read_only"] is True, task.risk
        pending = submit(service, dev, "DELETE FROM accounts WHERE id = 1" + pad)
        assert pending.status == "pending_review" and pending.risk["statements"] == ["DELETE"]
        assert service.flow.analyser._pool is not None and service.flow.analyser._threads is None
    finally:
        service.flow.analyser.close()


def test_an_analysis_over_its_budget_means_review(service: Parts, dev: int, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def stuck(code: str, kind: str, dialect: str | None, **kw: Any) -> risk.Risk:
        release.wait(10)
        return risk.Risk(level="low", reasons=(), flags=(), statements=("SELECT",), tables=(), read_only=True, parsed=True)
    monkeypatch.setattr(risk, "analyze", stuck)
    service.flow.analysis_budget = 0.2
    t0 = time.monotonic()
    task = submit(service, dev, "SELECT 1")
    elapsed = time.monotonic() - t0
    release.set()
    assert elapsed < 0.2 + analysis.MARGIN + 1.0
    assert task.status == "pending_review"
    assert task.risk["flags"] == ["analysis_timeout"] and task.risk["parsed"] is False
    assert task.review_rule["run_as"] == "read-write"


def test_a_late_analysis_never_approves(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(code: str, kind: str, dialect: str | None, **kw: Any) -> risk.Risk:
        time.sleep(0.15)
        return risk.Risk(level="low", reasons=(), flags=(), statements=("SELECT",), tables=(), read_only=True, parsed=True)
    monkeypatch.setattr(risk, "analyze", slow)
    found = analysis.analyze_by("SELECT 1", "sql", "postgresql", time.monotonic() + 0.05)
    assert not found.parsed and not found.read_only and "analysis_timeout" in found.flags


def test_code_over_the_cap_is_refused_before_anything(service: Parts, dev: int, store: Store) -> None:
    service.flow.max_code_bytes = 4096
    with pytest.raises(TooLarge) as err:
        submit(service, dev, "SELECT '" + "ü" * 2100 + "'")  # 2,109 characters, 4,209 bytes
    assert err.value.status == 413
    assert err.value.message == "this script is 4209 bytes; the gateway accepts at most 4096 (Gateway.max_code_bytes)"
    with pytest.raises(TooLarge, match="this cell is"):
        submit(service, dev, "x" * 4097, kind="cell")
    assert submit(service, dev, "SELECT 1 -- " + "x" * 4000).status == "approved"


# --------------------------------------------------------------------------- history
CODES = ["a = 1", "b = 2", "print(a)", "b = 2"]


@pytest.mark.parametrize(("content", "expected"), [
    ({"hist_access_type": "tail", "n": 2}, [[0, 3, "print(a)"], [0, 4, "b = 2"]]),
    ({"hist_access_type": "tail"}, [[0, 1, "a = 1"], [0, 2, "b = 2"], [0, 3, "print(a)"], [0, 4, "b = 2"]]),
    ({"hist_access_type": "range", "session": 0, "start": 2, "stop": 4}, [[0, 2, "b = 2"], [0, 3, "print(a)"]]),
    ({"hist_access_type": "range", "session": -1, "start": 4}, [[0, 4, "b = 2"]]),
    ({"hist_access_type": "range", "session": 3, "start": 1}, []),
    ({"hist_access_type": "search", "pattern": "b*"}, [[0, 2, "b = 2"], [0, 4, "b = 2"]]),
    ({"hist_access_type": "search", "pattern": "b*", "unique": True}, [[0, 4, "b = 2"]]),
    ({"hist_access_type": "search", "pattern": "*", "n": 1}, [[0, 4, "b = 2"]]),
    ({"hist_access_type": "tail", "n": 1, "output": True}, [[0, 4, ["b = 2", None]]]),
])
def test_history_entries(content: dict[str, Any], expected: list[Any]) -> None:
    assert history(CODES, content) == expected


def test_when_every_worker_is_stuck_the_pool_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    monkeypatch.setattr(risk, "analyze", lambda *a, **kw: release.wait(10))
    analyser = analysis.Analyser(1, processes=False)
    try:
        first = analyser._executor()
        found = asyncio.run(analyser.analyse("SELECT 1", "sql", "postgresql", 0.05))
        assert "analysis_timeout" in found.flags
        assert analyser._executor() is first  # late, not yet stuck
        time.sleep(analysis.STUCK * 0.05)
        asyncio.run(analyser.analyse("SELECT 1", "sql", "postgresql", 0.05))
        assert analyser._executor() is not first  # the next cells get a free worker
    finally:
        release.set()
        analyser.close()
