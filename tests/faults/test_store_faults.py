"""The gateway's store fails under a running task (docs/operations.md, "The gateway's store fails").

A real gateway whose PostgreSQL store is reached through a TCP proxy the test cuts (connections
reset, new ones refused) or stalls (every byte held), a real agent and a real python kernel. The
task writes one row to its own target database, prints, and ends while the store is away: once
the store is back, the task ends with its true status and every output, and its write happened
exactly once. While the store is stalled, API requests answer 503 within Gateway.store_timeout.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tcp_proxy import TcpProxy

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from harness import (Gateway, Proc, agent_config, create_pg_database, drop_pg_database, start_agent,
                     start_gateway, wait_online, wait_until)

pytestmark = pytest.mark.postgres

STORE_TIMEOUT = 2  # Gateway.store_timeout: a request's longest wait for the store
CONFIG = f"""
c.Gateway.store_timeout = {STORE_TIMEOUT}
c.Gateway.store_connect_timeout = 2
c.Gateway.store_pool_timeout = 2
c.Gateway.store_retry_max = 1
c.Gateway.task_poll_interval = 0.5
"""
#: the task: one write to its target, then outputs and its end while the store is away
CODE = """\
import os, time, psycopg
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("INSERT INTO writes (note) VALUES ('approved write')")
print("written", flush=True)
time.sleep(2)
for i in range(5):
    print("while the store is away", i, flush=True)
    time.sleep(0.2)
print("done", flush=True)
"""
FINAL = {"denied", "rejected", "cancelled", "expired", "succeeded", "failed", "killed", "lost"}
EXPECTED = ["written\n", *(f"while the store is away {i}\n" for i in range(5)), "done\n"]


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class World:
    gw: Gateway
    proxy: TcpProxy
    agent: Proc
    target_url: str
    dev: str
    reviewer: str

    def submitted_task(self) -> int:
        """The task of CODE, waiting for review."""
        with self.gw.api(self.dev) as api:
            r = api.post("/api/v1/tasks", json={"target": "py", "code": CODE, "why": "a store fault test"})
            assert r.status_code == 201, r.text
            assert r.json()["status"] == "pending_review"
            task_id: int = r.json()["id"]
        return task_id

    def approve(self, task_id: int) -> None:
        with self.gw.api(self.reviewer) as api:
            r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "ok"})
            assert r.status_code == 200, r.text

    def started_task(self) -> int:
        """The task of CODE submitted, approved, and seen running."""
        task_id = self.submitted_task()
        self.approve(task_id)
        wait_until(lambda: self.task(task_id)["status"] == "running", 60, "the task running", self.agent.log)
        return task_id

    def task(self, task_id: int) -> dict[str, Any]:
        with self.gw.api(self.dev) as api:
            r = api.get(f"/api/v1/tasks/{task_id}")
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

    def outputs(self, task_id: int) -> list[str]:
        with self.gw.api(self.dev) as api:
            r = api.get(f"/api/v1/tasks/{task_id}/output", params={"after": 0})
            assert r.status_code == 200, r.text
            return [o["output"].get("text", "") for o in r.json()["outputs"]]

    def writes(self) -> int:
        """The at-most-once check: rows the task wrote to its target database."""
        with psycopg.connect(_libpq(self.target_url)) as conn:
            row = conn.execute("SELECT count(*) FROM writes").fetchone()
            assert row is not None
            return int(row[0])

    def assert_ended_true(self, task_id: int) -> None:
        """After the store is back: the task's true end, every output in order, its write once."""
        final = wait_until(lambda: (t := self.task(task_id))["status"] in FINAL and t,
                           60, "the task's end recorded", self.gw.proc.log)
        assert final["status"] == "succeeded", final
        assert "".join(self.outputs(task_id)) == "".join(EXPECTED)
        assert self.writes() == 1


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    store_url = create_pg_database()
    target_url = create_pg_database()
    with psycopg.connect(_libpq(target_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE writes (id serial PRIMARY KEY, note text)")
    host, _, rest = store_url.rpartition("@")[2].partition(":")
    port, _, name = rest.partition("/")
    proxy = TcpProxy(int(port))
    via_proxy = f"{store_url.rpartition('@')[0]}@{host}:{proxy.port}/{name}"
    gw = start_gateway(tmp_path, via_proxy, config=CONFIG)
    agent = None
    try:
        gw.set_target("py", review_groups=["dba"])
        dev, reviewer = gw.user("dev"), gw.user("reviewer", ("dba",))
        agent = start_agent(gw, tmp_path, agent_config(tmp_path / "agent.toml", "store-fault-agent",
                                                        {"py": {"kind": "python", "url": _libpq(target_url)}}))
        wait_online(gw, ["py"], agent.log)
        yield World(gw, proxy, agent, target_url, dev, reviewer)
    finally:
        proxy.resume()
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        proxy.close()
        drop_pg_database(store_url)
        drop_pg_database(target_url)


def _unavailable(world: World, path: str) -> tuple[float, dict[str, Any]]:
    """One API request while the store is away: how long it took, and its answer (503 expected)."""
    t0 = time.monotonic()
    with world.gw.api(world.dev) as api:
        r = api.get(path)
    took = time.monotonic() - t0
    assert r.status_code == 503, r.text
    return took, r.json()


def test_a_store_cut_for_10_s_under_a_running_task_loses_nothing(world: World) -> None:
    task_id = world.started_task()
    world.proxy.cut()
    cut_at = time.monotonic()
    took, body = _unavailable(world, f"/api/v1/tasks/{task_id}")
    assert took < STORE_TIMEOUT + 1
    assert body["status"] == 503 and "the gateway's store cannot be reached" in body["message"]
    assert "try again" in body["message"]
    time.sleep(max(0.0, 10 - (time.monotonic() - cut_at)))  # the task prints and ends meanwhile
    assert world.writes() == 1  # it ran its write while the store was away
    world.proxy.resume()
    world.assert_ended_true(task_id)


@pytest.mark.timeout(180)
def test_a_store_stalled_for_30_s_answers_503_in_time_and_records_land_after(world: World) -> None:
    task_id = world.started_task()
    world.proxy.stall()
    stalled_at = time.monotonic()
    answers = bounded = 0
    while time.monotonic() - stalled_at < 25:  # more requests than the store has threads: none hangs
        for path in (f"/api/v1/tasks/{task_id}", "/api/v1/tasks", f"/api/v1/tasks/{task_id}/output"):
            took, body = _unavailable(world, path)
            assert took < STORE_TIMEOUT + 1.5, f"{path} took {took:.1f} s"
            assert body == {"status": 503, "message": body["message"]}
            # a call on an open connection meets the bound; one opening a connection, its connect_timeout
            assert re.match(rf"the gateway's store (did not answer within {STORE_TIMEOUT} s|cannot be reached or "
                            r"refused the call for now \(ConnectionTimeout\)); try again", body["message"]), body
            bounded += body["message"].startswith("the gateway's store did not answer within")
            answers += 1
    assert answers >= 12 and bounded >= 1
    time.sleep(max(0.0, 30 - (time.monotonic() - stalled_at)))
    assert world.writes() == 1
    world.proxy.resume()
    world.assert_ended_true(task_id)


def test_a_script_waiting_for_review_outlives_a_store_cut_and_runs_once_approved(world: World) -> None:
    task_id = world.submitted_task()
    world.proxy.cut()
    time.sleep(3)  # the script's wait reads the store several times meanwhile (Gateway.task_poll_interval)
    _unavailable(world, f"/api/v1/tasks/{task_id}")
    world.proxy.resume()
    world.approve(task_id)
    world.assert_ended_true(task_id)


def test_a_gateway_stopped_while_its_store_stalls_still_exits_within_5_s(world: World) -> None:
    """SIGTERM drains within 5 s (docs/operations.md, "The gateway restarts") even with store calls
    blocked on a stalled store: they were abandoned already and are not waited for."""
    task_id = world.started_task()
    world.proxy.stall()
    took, _ = _unavailable(world, f"/api/v1/tasks/{task_id}")
    assert took < STORE_TIMEOUT + 1.5
    started = time.monotonic()
    world.gw.proc.proc.terminate()
    world.gw.proc.proc.wait(15)
    assert time.monotonic() - started < 5, world.gw.proc.log.read_text()[-2000:]
    world.proxy.resume()
    time.sleep(3)  # the kernel finishes the cell on its own meanwhile
    assert world.writes() <= 1

