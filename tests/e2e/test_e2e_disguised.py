"""The gate holds: disguised writes never change a database without review.

The acceptance table for targets with ``auto_approve = "read-only"``: every case of
``disguised_cases`` (SQL that looks like a read, or hides a write, on PostgreSQL, MariaDB and
SQLite; Python cells that escape a per-cell scan) is sent as a user's cell over the Kernel
Gateway WebSocket of the real gateway, to one kernel per target hosted by a real agent, one case
at a time. A cell held for review is rejected by a reviewer over the REST API. Then:

- the database's fingerprint (``disguised_support``) taken before and after must be equal; and
- the task must be ``denied`` or ``rejected``, or, when policy auto-approved it, ``failed``: a
  case may run without review only if the database (or the kernel) refused it (a case marked
  ``session_only`` may also succeed, its fingerprint unchanged). Python cells must all be held
  and rejected.

A case that fails the check leaves the databases restored and a new kernel for the next case; so
does a refused case after which the kernel no longer runs a plain ``SELECT 1`` (later cases must
not pass by hitting a broken session). A control test per target approves real writes and shows
the fingerprint sees them, so a passing table is not a blind one. Every case's outcome, passing
or not, is written to ``<pytest tmp>/e2e*/disguised-report.txt``.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websocket
from disguised_cases import MARIADB, POSTGRESQL, PYTHON, SQLITE, Case
from disguised_support import Dataset, Lite, Maria, Postgres, diff, make_root, substitute
from harness import Gateway, Proc, agent_config, start_agent, wait_online

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]

REVIEWERS = ["dba"]
POLICY = {"auto_approve": "read-only", "deny": {"tables": ["audit_log"]}, "limits": {"timeout": 20}}
FINAL = {"denied", "rejected", "cancelled", "expired", "succeeded", "failed", "killed", "lost"}
IDLE = 10.0  # seconds after which the socket is reopened (the gateway pings every 20 s; we do not answer while idle)
PROBE = {"dz-pg": "SELECT 1 AS probe", "dz-maria": "SELECT 1 AS probe", "dz-lite": "SELECT 1 AS probe",
         "dz-py": "print('probe')"}


# ------------------------------------------------------------------------------ a kernel, over the gateway
@dataclass
class Outcome:
    task: dict[str, Any]
    held: bool
    reply: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.task["status"])

    def describe(self) -> str:
        how = "held for review, rejected" if self.held and self.status == "rejected" else \
            f"held for review, then {self.status}" if self.held else f"not held: {self.status}"
        risk = self.task.get("risk") or {}
        error = self.task.get("error") or {}
        parts = [how, f"risk {risk.get('level')} {risk.get('flags')}", f"policy: {self.task.get('decision_comment')}"]
        if error:
            parts.append(f"error {error.get('ename')}: {str(error.get('evalue'))[:200]}")
        return "; ".join(parts)


class Runner:
    """One kernel on ``target``, started and driven as a user (``dev``) through the gateway."""

    def __init__(self, gw: Gateway, target: str, user: str, reviewer: str) -> None:
        self.gw, self.target, self.user, self.reviewer = gw, target, user, reviewer
        self.ws: websocket.WebSocket | None = None
        self.last_used = 0.0
        self.kernel_id = ""
        self.start()

    def start(self) -> None:
        with self.gw.api(self.user) as api:
            r = api.post("/api/kernels", json={"name": self.target})
            assert r.status_code == 201, r.text
            self.kernel_id = r.json()["id"]
        self.connect()
        probe = self.run(PROBE[self.target], reject=False)
        assert probe.status == "succeeded", f"the probe cell did not run on a new {self.target} kernel: {probe.describe()}"

    def connect(self) -> None:
        """(Re)open the kernel's channels: an idle socket is closed by the gateway's pings going unanswered."""
        url = self.gw.url.replace("http://", "ws://") + f"/api/kernels/{self.kernel_id}/channels"
        self.ws = websocket.create_connection(url, header=[f"Authorization: token {self.user}"], timeout=60)
        self.last_used = time.monotonic()

    def send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        if time.monotonic() - self.last_used > IDLE:
            self.ws.close()
            self.connect()
        self.ws.send(json.dumps(msg))

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        with self.gw.api(self.user) as api:
            api.delete(f"/api/kernels/{self.kernel_id}")

    def healthy(self) -> bool:
        return self.run(PROBE[self.target], reject=False).status == "succeeded"

    def run(self, code: str, reject: bool = True, timeout: float = 60) -> Outcome:
        """Send ``code`` as a cell; reject it if it is held (``reject``) or approve it; return how it ended."""
        assert self.ws is not None
        msg_id = uuid.uuid4().hex
        self.send({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex, "username": "dev",
                       "date": "2026-01-01T00:00:00.000000Z", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": False}})
        held: int | None = None
        reply: dict[str, Any] | None = None
        idle = False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                m = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                raise TimeoutError(f"no reply to the cell on {self.target} in {timeout:.0f} s") from None
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = m["header"]["msg_type"]
            display_id = (m.get("content", {}).get("transient") or {}).get("display_id", "")
            if kind == "display_data" and display_id.startswith("cellgate-task-") and held is None:
                held = int(display_id.rsplit("-", 1)[1])
                self.decide(held, "reject" if reject else "approve")
            elif kind == "execute_reply":
                reply = m["content"]
            elif kind == "status" and m["content"]["execution_state"] == "idle":
                idle = True
        self.last_used = time.monotonic()
        task = self.final_task(held, code)
        return Outcome(task, held is not None, reply)

    def decide(self, task_id: int, decision: str) -> None:
        with self.gw.api(self.reviewer) as api:
            task = api.get(f"/api/v1/tasks/{task_id}").json()
            assert task["status"] == "pending_review", task
            r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": decision, "comment": "disguised-write test"})
            assert r.status_code == 200, r.text

    def final_task(self, task_id: int | None, code: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        with self.gw.admin() as api:
            while True:
                if task_id is None:
                    task = api.get("/api/v1/tasks", params={"target": self.target, "limit": 1}).json()["tasks"][0]
                    assert task["code"] == code, f"the latest task on {self.target} is not this cell: {task['code']!r}"
                else:
                    task = api.get(f"/api/v1/tasks/{task_id}").json()
                if task["status"] in FINAL or time.monotonic() > deadline:
                    return task
                time.sleep(0.05)


RESULTS: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def report(workdir: Path) -> Iterator[None]:
    """Every case's outcome, passing or not, in ``<workdir>/disguised-report.txt``."""
    yield
    (workdir / "disguised-report.txt").write_text("\n".join(RESULTS) + "\n")


# ------------------------------------------------------------------------------ the setup, per module
@dataclass
class Bench:
    """A dataset, its kernel and the fingerprint the next case is compared with."""

    data: list[Dataset]
    runner: Runner
    baseline: dict[str, Any]

    def fingerprint(self) -> dict[str, Any]:
        fp: dict[str, Any] = {}
        for d in self.data:
            fp.update(d.fingerprint())
        return fp

    def placeholders(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for d in self.data:
            values.update(d.placeholders())
        return values

    def reset(self) -> None:
        """After a case that failed: a new kernel, the databases rebuilt, a new baseline."""
        self.runner.stop()
        for d in self.data:
            d.restore()
        self.runner.start()
        self.baseline = self.fingerprint()


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    path = make_root()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def datasets(root: Path) -> Iterator[dict[str, Dataset]]:
    made: dict[str, Dataset] = {}
    try:
        made["pg"] = Postgres(root)
        made["maria"] = Maria(root)
        made["lite"] = Lite(root)
        yield made
    finally:
        for d in made.values():
            d.close()


@pytest.fixture(scope="module")
def dz_agent(gateway: Gateway, workdir: Path, datasets: dict[str, Dataset]) -> Iterator[Proc]:
    pg, maria, lite = datasets["pg"], datasets["maria"], datasets["lite"]
    targets = {
        "dz-pg": {"kind": "sql", "url": pg.admin_url, "readonly_url": pg.readonly_url, "statement_timeout": 20},
        "dz-maria": {"kind": "sql", "url": maria.admin_url, "readonly_url": maria.readonly_url, "statement_timeout": 20},
        "dz-lite": {"kind": "sql", "url": lite.admin_url, "readonly_url": lite.readonly_url},
        "dz-py": {"kind": "python", "url": pg.admin_url},
    }
    config = agent_config(workdir / "dz-agent.toml", "dz-agent", targets)
    proc = start_agent(gateway, workdir, config, "dz-agent")
    try:
        with gateway.admin() as api:
            for name in targets:
                r = api.put(f"/api/v1/targets/{name}", json={"review_groups": REVIEWERS, "policy": POLICY})
                assert r.status_code == 200, r.text
        wait_online(gateway, list(targets), proc.log)
        yield proc
    finally:
        proc.stop()


def bench_for(request: pytest.FixtureRequest, target: str, names: list[str]) -> Iterator[Bench]:
    gateway: Gateway = request.getfixturevalue("gateway")
    users: dict[str, str] = request.getfixturevalue("users")
    datasets: dict[str, Dataset] = request.getfixturevalue("datasets")
    request.getfixturevalue("dz_agent")
    runner = Runner(gateway, target, users["dev"], users["reviewer"])
    data = [datasets[n] for n in names]
    bench = Bench(data, runner, {})
    bench.baseline = bench.fingerprint()
    yield bench
    runner.stop()


@pytest.fixture(scope="module")
def pg_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    yield from bench_for(request, "dz-pg", ["pg"])


@pytest.fixture(scope="module")
def maria_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    yield from bench_for(request, "dz-maria", ["maria"])


@pytest.fixture(scope="module")
def lite_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    yield from bench_for(request, "dz-lite", ["lite"])


@pytest.fixture(scope="module")
def py_bench(request: pytest.FixtureRequest) -> Iterator[Bench]:
    yield from bench_for(request, "dz-py", ["pg", "maria", "lite"])


# ------------------------------------------------------------------------------ the check
def check(bench: Bench, case: Case, python: bool = False) -> None:
    code = substitute(case.code, bench.placeholders())
    started = time.monotonic()
    outcome = bench.runner.run(code)
    after = bench.fingerprint()
    changed = diff(bench.baseline, after)
    allowed = {"rejected"} if python else {"denied", "rejected", "failed"} | ({"succeeded"} if case.session_only else set())
    ok = not changed and outcome.status in allowed and (outcome.held or not python)
    if ok and not outcome.held and outcome.status == "failed" and not bench.runner.healthy():
        bench.reset()  # the refused case broke the session: later cases must not pass by a broken kernel
    elif not ok:
        bench.reset()
    RESULTS.append(f"{bench.runner.target:9} {case.id:40} {'ok  ' if ok else 'FAIL'} "
                   f"{time.monotonic() - started:5.2f}s {outcome.describe()}"
                   + (f" | changed: {'; '.join(changed)[:300]}" if changed else ""))
    problems = []
    if changed:
        problems.append("the database changed without review:\n    " + "\n    ".join(changed))
    if outcome.status not in allowed or (python and not outcome.held):
        problems.append("it ran without review" if outcome.status == "succeeded" and not outcome.held
                        else f"it ended {outcome.status!r}")
    assert not problems, (f"{case.id} ({case.changes}): {outcome.describe()}\n  " + "\n  ".join(problems)
                          + f"\n  code: {code!r}")


# ------------------------------------------------------------------------------ the fingerprint is not blind
CONTROLS = {
    "pg": ["DELETE FROM orders WHERE id = 1", "COPY (SELECT 1) TO '%TMP%/control-pg.txt'"],
    "maria": ["DELETE FROM orders WHERE id = 1", "SELECT 1 INTO OUTFILE '%TMP%/control-maria.txt'"],
    "lite": ["DELETE FROM orders WHERE id = 1", "VACUUM INTO '%TMP%/control-lite.db'"],
    "py": ["open('%TMP%/control-py.txt', 'w').write('x')"],
}


def control(bench: Bench, name: str) -> None:
    """Approved by a reviewer, each control write runs and the fingerprint sees it."""
    try:
        before = bench.baseline
        for code in CONTROLS[name]:
            code = substitute(code, bench.placeholders())
            outcome = bench.runner.run(code, reject=False)
            after = bench.fingerprint()
            assert outcome.held and outcome.status == "succeeded", f"{code!r}: {outcome.describe()}"
            assert diff(before, after), f"{code!r} ran after an approval, yet the fingerprint saw no change"
            before = after
    finally:
        bench.reset()


# ------------------------------------------------------------------------------ the table
@pytest.mark.parametrize("case", POSTGRESQL, ids=[c.id for c in POSTGRESQL])
def test_postgresql(pg_bench: Bench, case: Case) -> None:
    check(pg_bench, case)


def test_postgresql_fingerprint_sees_an_approved_write(pg_bench: Bench) -> None:
    control(pg_bench, "pg")


@pytest.mark.parametrize("case", MARIADB, ids=[c.id for c in MARIADB])
def test_mariadb(maria_bench: Bench, case: Case) -> None:
    check(maria_bench, case)


def test_mariadb_fingerprint_sees_an_approved_write(maria_bench: Bench) -> None:
    control(maria_bench, "maria")


@pytest.mark.parametrize("case", SQLITE, ids=[c.id for c in SQLITE])
def test_sqlite(lite_bench: Bench, case: Case) -> None:
    check(lite_bench, case)


def test_sqlite_fingerprint_sees_an_approved_write(lite_bench: Bench) -> None:
    control(lite_bench, "lite")


@pytest.mark.parametrize("case", PYTHON, ids=[c.id for c in PYTHON])
def test_python(py_bench: Bench, case: Case) -> None:
    check(py_bench, case, python=True)


def test_python_fingerprint_sees_an_approved_write(py_bench: Bench) -> None:
    control(py_bench, "py")


def test_the_table_is_large_enough() -> None:
    assert min(len(POSTGRESQL), len(MARIADB), len(SQLITE)) >= 60 and len(PYTHON) >= 30
