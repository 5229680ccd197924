"""The gateway restarts (SIGTERM, SIGKILL) under `cellgate run` and with tasks in every state.

A real gateway process (PostgreSQL store), a real agent (its reconnects made quick) and real
python kernels writing to a SQLite target. Every case ends on the target database: each
approved write happened at most once (docs/operations.md, "The gateway restarts").
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from cellgate.gateway import tasks
from cellgate.gateway.models import User
from cellgate.gateway.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))  # the real-process harness
from harness import (CELLGATE, Gateway, KernelConnection, Proc, agent_config, bind_agent, create_pg_database,
                     drop_pg_database, spawn, start_gateway, wait_online, wait_until)

pytestmark = pytest.mark.postgres

GATEWAY_CONFIG = """\
c.Gateway.task_poll_interval = 0.2
c.Gateway.agent_poll_interval = 0.2
c.Gateway.long_poll_max = 2.0
c.Gateway.stop_grace = 1.5
c.Gateway.agent_grace = 5
"""
AGENT_CONFIG = "c.Agent.reconnect_delay_min = 0.1\nc.Agent.reconnect_delay_max = 0.5\n"
TARGETS = ["py", "pyr", "pyt"]  # the same SQLite file; pyr waits for a review by dba; pyt's time limit is 8 s


def script(tag: str, lines: int, pause: float, before_write: float = 0.0) -> str:
    """Print ``lines`` numbered lines ``pause`` s apart, wait ``before_write`` s, write ``tag`` once."""
    return (f"import os, sqlite3, time\n"
            f"for i in range({lines}):\n"
            f"    print(f'{tag} line {{i}}', flush=True)\n"
            f"    time.sleep({pause})\n"
            f"time.sleep({before_write})\n"
            f"db = sqlite3.connect(os.environ['CELLGATE_TARGET_URL'][len('sqlite:///'):])\n"
            f"db.execute('INSERT INTO writes VALUES (?)', ({tag!r},))\n"
            f"db.commit()\n"
            f"print('{tag} wrote', flush=True)\n")


@dataclass
class World:
    tmp: Path
    store: str
    port: int
    gw: Gateway
    agent: Proc
    target_db: Path
    dev: str
    reviewer: str

    def restart(self, sig: signal.Signals) -> float:
        """Stop the gateway with ``sig``, start it again on the same port; the seconds the old one took to exit."""
        took = self.stop(sig)
        self.start()
        return took

    def stop(self, sig: signal.Signals) -> float:
        t0 = time.monotonic()
        self.gw.proc.proc.send_signal(sig)
        self.gw.proc.proc.wait(15)
        return time.monotonic() - t0

    def start(self) -> None:
        self.gw = start_gateway(self.tmp, self.store, port=self.port, config=GATEWAY_CONFIG)
        wait_online(self.gw, TARGETS, self.agent.log, timeout=30)

    def writes(self, tag: str) -> int:
        with sqlite3.connect(self.target_db) as db:
            return int(db.execute("SELECT count(*) FROM writes WHERE tag = ?", (tag,)).fetchone()[0])

    def task(self, tid: int) -> dict:
        with self.gw.api(self.dev) as api:
            return api.get(f"/api/v1/tasks/{tid}").json()

    def run(self, code: str, target: str = "py", notebook: Path | None = None) -> subprocess.Popen[str]:
        """``cellgate run`` of ``code`` (or of the ``notebook`` file)."""
        env = {**os.environ, "CELLGATE_URL": self.gw.url, "CELLGATE_TOKEN": self.dev, "CELLGATE_CONFIG_DIR": "/nonexistent"}
        what = ["-f", str(notebook)] if notebook is not None else ["-e", code]
        return subprocess.Popen([CELLGATE, "run", "-t", target, *what, "--give-up-after", "60"], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_kernel_stopped_by_agent(self, tid: int) -> None:
        """The kernel that ran task ``tid`` was not adopted at the agent's next hello, and the agent stopped it."""
        found = re.search(rf"kernel (\S+): running task {tid}\n", self.agent.log.read_text())
        assert found, f"no kernel ran task {tid}"
        kid = found.group(1)

        def stopped() -> bool:
            _, refused, after = self.agent.log.read_text().partition(f"kernel {kid}: not adopted by the gateway, stopping it")
            return bool(refused) and f"kernel {kid}: stopped" in after
        wait_until(stopped, 15, f"the agent stopping task {tid}'s kernel", self.agent.log)

    def open_ephemeral_kernels(self) -> int:
        import psycopg
        with psycopg.connect(self.store.replace("postgresql+psycopg://", "postgresql://")) as conn:
            row = conn.execute("SELECT count(*) FROM kernels WHERE ephemeral AND stopped_at IS NULL").fetchone()
        return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("restarts")
    store = create_pg_database()
    gw = start_gateway(tmp, store, config=GATEWAY_CONFIG)
    agent: Proc | None = None
    try:
        target_db = tmp / "target.db"
        with sqlite3.connect(target_db) as db:
            db.execute("CREATE TABLE writes (tag TEXT)")
        config = agent_config(tmp / "agent.toml", "restart-agent",
                              {name: {"kind": "python", "url": f"sqlite:///{target_db}"} for name in TARGETS})
        (tmp / "agent_config.py").write_text(AGENT_CONFIG)
        token, _ = bind_agent(gw, config)
        agent = spawn([CELLGATE, "agent", "--gateway", gw.url, "--token", token, "--config", str(config),
                       "--config-file", str(tmp / "agent_config.py")], tmp / "agent.log")
        gw.set_target("py")
        gw.set_target("pyr", review_groups=["dba"])
        with gw.admin() as api:
            r = api.put("/api/v1/targets/pyt", json={"review_groups": [], "policy": {"limits": {"timeout": 8}}})
            assert r.status_code == 200, r.text
        dev, reviewer = gw.user("dev"), gw.user("reviewer", ("dba",))
        wait_online(gw, TARGETS, agent.log)
        world = World(tmp, store, int(gw.url.rsplit(":", 1)[1]), gw, agent, target_db, dev, reviewer)
        yield world
        gw = world.gw
    finally:
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        drop_pg_database(store)


def _wait_for_line(proc: subprocess.Popen[str], text: str) -> list[str]:
    """Read the CLI's stdout until a line holding ``text``; the lines read."""
    assert proc.stdout is not None
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"cellgate run ended before printing {text!r}"
        lines.append(line)
        if text in line:
            return lines


def _finish(proc: subprocess.Popen[str], read: list[str]) -> tuple[list[str], str]:
    out, err = proc.communicate(timeout=90)
    return [*read, *out.splitlines(keepends=True)], err


def _task_id(err: str) -> int:
    return int(err.split("task ", 1)[1].split(" ", 1)[0])


def test_sigterm_lets_a_running_script_end_and_the_cli_prints_every_output_once(world: World) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    proc = world.run(script(tag, lines=6, pause=0.25))
    read = _wait_for_line(proc, f"{tag} line 2")
    took = world.restart(signal.SIGTERM)
    lines, err = _finish(proc, read)
    assert took < 5, f"the gateway took {took:.1f} s to stop"
    assert proc.returncode == 0, err
    assert lines == [f"{tag} line {i}\n" for i in range(6)] + [f"{tag} wrote\n"]  # once each, in order
    assert world.task(_task_id(err))["status"] == "succeeded"
    assert world.writes(tag) == 1


def _stored_lines(world: World, tid: int) -> list[str]:
    with world.gw.api(world.dev) as api:
        page = api.get(f"/api/v1/tasks/{tid}/output").json()
    return [o["output"]["text"] for o in page["outputs"]]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_script_still_running_across_a_restart_ends_lost_and_never_writes(world: World, sig: signal.Signals) -> None:
    """SIGTERM past Gateway.stop_grace, or SIGKILL: the task ends lost, its kernel is stopped (by the
    stopping gateway, or by the agent once the next one does not adopt it) before the write, and the
    CLI, reconnected, prints what was stored once and exits 6."""
    tag = f"t{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    # after a SIGKILL nothing can stop the kernel until the next gateway is up (tens of seconds on a loaded host)
    before_write = 9 if sig == signal.SIGTERM else 60
    proc = world.run(script(tag, lines=2, pause=0.2, before_write=before_write))
    read = _wait_for_line(proc, f"{tag} line 1")
    took = world.restart(sig)
    lines, err = _finish(proc, read)
    assert took < 5, f"the gateway took {took:.1f} s to stop"
    assert proc.returncode == 6, err
    tid = _task_id(err)
    task = world.task(tid)
    assert task["status"] == "lost"
    expected = "the gateway stopped while this task ran" if sig == signal.SIGTERM else "the gateway restarted while this task ran"
    assert expected in task["error"]["evalue"]
    if sig == signal.SIGKILL:  # (a stopping gateway answers the CLI's long-poll with the end before it exits)
        assert "retrying" in err and "answers again" in err
    assert lines == [f"{tag} line 0\n", f"{tag} line 1\n"] == _stored_lines(world, tid)
    wait_until(lambda: world.open_ephemeral_kernels() == 0, 15, "the script's kernel stopped", world.agent.log)
    if sig == signal.SIGKILL:  # the next gateway did not adopt the killed one's kernel: the agent stopped it
        world.wait_kernel_stopped_by_agent(tid)
    else:
        time.sleep(max(0.0, t0 + 11 - time.monotonic()))  # past the moment the script would have written
    assert world.writes(tag) == 0


def test_a_submit_repeated_with_its_key_makes_one_task_that_runs_once(world: World) -> None:
    """The first answer is lost (the client gave up, the gateway restarted): the repeat gets that task."""
    tag = f"t{uuid.uuid4().hex[:6]}"
    body = {"target": "py", "code": script(tag, lines=1, pause=0.1), "why": "once"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with world.gw.api(world.dev) as api:
        first = api.post("/api/v1/tasks", json=body, headers=key)
    assert first.status_code == 201, first.text
    world.restart(signal.SIGKILL)
    with world.gw.api(world.dev) as api:
        again = api.post("/api/v1/tasks", json=body, headers=key)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        other = api.post("/api/v1/tasks", json={**body, "why": "twice"}, headers=key)
        assert other.status_code == 422
        assert other.json() == {"status": 422, "message": other.json()["message"]}
        assert f"used for another request (task {first.json()['id']})" in other.json()["message"]
        with world.gw.api(world.reviewer) as theirs:  # keys are per user
            assert theirs.post("/api/v1/tasks", json={**body, "code": "print(1)"}, headers=key).status_code == 201
    final = wait_until(lambda: (t := world.task(first.json()["id"]))["status"] in ("succeeded", "lost") and t, 30, "the task's end")
    assert world.writes(tag) == (1 if final["status"] == "succeeded" else 0) <= 1


def _seed(world: World, code: str, path: list[str], agent: str = "restart-agent") -> int:
    """A script of dev's on py walked to ``path[-1]`` in the store, as a gateway killed at that moment left it
    (dispatched to ``agent``)."""
    def _tx(session) -> int:  # type: ignore[no-untyped-def]
        dev = session.execute(select(User).where(User.name == "dev")).scalar_one()
        task = tasks.create(session, "dev", kind="script", target="py", user_id=dev.id, code=code, review_groups=[],
                            review_rule={"run_as": "read-write"})
        for src, dest in itertools.pairwise(path):
            tasks.transition(session, task.id, src, dest, "gateway", **({"agent_id": agent} if dest == "dispatched" else {}))
        return task.id
    store = Store(world.store, auto_upgrade_empty=False)
    try:
        return store.call(_tx)
    finally:
        store.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_gateway_stopped_with_tasks_in_every_state(world: World, sig: signal.Signals) -> None:
    """pending_review waits on and runs once approved; approved runs once; dispatched (the agent's
    journal never had it) ends failed NotDelivered; running ends lost, "may have run", and never runs
    on (its script kernel is stopped: by the stopping gateway, or by the agent when the next one does
    not adopt it); each write at most once. (``dispatched`` lasts milliseconds
    and ``approved`` as long as no agent takes it: those two are written to the store while the
    gateway is down, as a gateway stopped at that moment leaves them.)"""
    tags = {state: f"{state[:3]}{uuid.uuid4().hex[:6]}" for state in ("pending", "approved", "dispatched", "running")}
    with world.gw.api(world.dev) as api:
        pending = api.post("/api/v1/tasks", json={"target": "pyr", "code": script(tags["pending"], 1, 0.1)}).json()
        running = api.post("/api/v1/tasks", json={"target": "py", "code": script(tags["running"], 1, 0.1, 60)}).json()
    assert pending["status"] == "pending_review"
    wait_until(lambda: world.task(running["id"])["status"] == "running", 30, "the script running")
    assert world.stop(sig) < 5
    approved = _seed(world, script(tags["approved"], 1, 0.1), ["submitted", "approved"])
    dispatched = _seed(world, script(tags["dispatched"], 1, 0.1), ["submitted", "approved", "dispatched"])
    world.start()

    def ended(tid: int) -> dict:
        return wait_until(lambda: (t := world.task(tid))["status"] in FINAL and t, 60, f"task {tid}'s end", world.gw.proc.log)
    assert ended(running["id"])["status"] == "lost"
    undelivered = ended(dispatched)
    assert (undelivered["status"], undelivered["error"]["ename"]) == ("failed", "NotDelivered")
    assert "it did not run" in undelivered["error"]["evalue"]
    assert ended(approved)["status"] == "succeeded"
    assert world.task(pending["id"])["status"] == "pending_review"
    with world.gw.api(world.reviewer) as api:
        r = api.post(f"/api/v1/tasks/{pending['id']}/review", json={"decision": "approve", "comment": "ok"})
        assert r.status_code == 200, r.text
    assert ended(pending["id"])["status"] == "succeeded"
    if sig == signal.SIGKILL:
        world.wait_kernel_stopped_by_agent(running["id"])
    expected = "the gateway stopped while this task ran" if sig == signal.SIGTERM else "the gateway restarted while this task ran"
    assert expected in world.task(running["id"])["error"]["evalue"]
    assert "its code may have run" in world.task(running["id"])["error"]["evalue"]
    wait_until(lambda: world.open_ephemeral_kernels() == 0, 15, "every script's kernel stopped", world.agent.log)
    assert {state: world.writes(tag) for state, tag in tags.items()} == {
        "pending": 1, "approved": 1, "dispatched": 0, "running": 0}


def test_a_cell_running_when_the_gateway_is_killed_ends_with_its_true_status_and_every_output_once(world: World) -> None:
    """SIGKILL while a cell runs on an interactive kernel, the next gateway up 2 s later: the kernel is
    re-adopted, the task tracked again from the agent's journal; it ends succeeded with each output
    stored once (those the agent held resent), and its write happened once."""
    tag = f"c{uuid.uuid4().hex[:6]}"
    with world.gw.api(world.dev) as api:
        kid = api.post("/api/kernels", json={"name": "py"}).json()["id"]
    ws = world.gw.url.replace("http://", "ws://") + f"/api/kernels/{kid}/channels"

    async def start() -> None:
        async with KernelConnection(ws, {"Authorization": f"token {world.dev}"}) as kc:
            msg = kc.send_execute(script(tag, lines=8, pause=0.4))
            await kc.wait_for(msg["header"]["msg_id"], "stream")
    asyncio.run(start())
    tid = _task_with(world, tag)["id"]
    wait_until(lambda: len(_stored_lines(world, tid)) >= 2, 15, "two lines stored", world.gw.proc.log)
    world.stop(signal.SIGKILL)
    time.sleep(2)
    world.start()
    task = wait_until(lambda: (t := world.task(tid))["status"] in FINAL and t, 30, f"task {tid}'s end", world.gw.proc.log)
    assert task["status"] == "succeeded", task
    assert _stored_lines(world, tid) == [f"{tag} line {i}\n" for i in range(8)] + [f"{tag} wrote\n"]
    with world.gw.api(world.dev) as api:
        assert api.delete(f"/api/kernels/{kid}").status_code == 204
    assert world.writes(tag) == 1


def test_a_cell_tracked_again_after_a_restart_keeps_its_time_limit(world: World) -> None:
    """A cell still running when the next gateway adopts its kernel is interrupted at its target's
    limit (8 s from its start) by that gateway: it ends killed, before its write."""
    tag = f"k{uuid.uuid4().hex[:6]}"
    with world.gw.api(world.dev) as api:
        kid = api.post("/api/kernels", json={"name": "pyt"}).json()["id"]
    ws = world.gw.url.replace("http://", "ws://") + f"/api/kernels/{kid}/channels"

    async def start() -> None:
        async with KernelConnection(ws, {"Authorization": f"token {world.dev}"}) as kc:
            msg = kc.send_execute(script(tag, lines=1, pause=0.1, before_write=60))
            await kc.wait_for(msg["header"]["msg_id"], "stream")
    asyncio.run(start())
    tid = _task_with(world, tag)["id"]
    wait_until(lambda: len(_stored_lines(world, tid)) >= 1, 15, "its line stored", world.gw.proc.log)
    t0 = time.monotonic()
    world.restart(signal.SIGKILL)
    task = wait_until(lambda: (t := world.task(tid))["status"] in FINAL and t, 40, f"task {tid}'s end", world.gw.proc.log)
    assert time.monotonic() - t0 < 30  # at its limit, not after the sleep
    assert (task["status"], task["error"]["ename"]) == ("killed", "TimeLimit"), task
    with world.gw.api(world.dev) as api:
        outputs = [o["output"] for o in api.get(f"/api/v1/tasks/{tid}/output").json()["outputs"]]
    assert [o.get("text") for o in outputs if o["output_type"] == "stream"] == [
        f"{tag} line 0\n", "[cellgate] the task ran longer than this target's limit of 8 s and was interrupted\n"]
    assert [o.get("ename") for o in outputs if o["output_type"] == "error"] == ["KeyboardInterrupt"]  # the interrupt
    with world.gw.api(world.dev) as api:
        assert api.delete(f"/api/kernels/{kid}").status_code == 204
    assert world.writes(tag) == 0


def test_a_script_that_ends_while_the_gateway_is_down_gets_its_true_end_and_every_output_once(world: World) -> None:
    """SIGKILL, the script ends 1 s later, the next gateway comes up 2 s after the kill: its kernel is
    not kept, but the agent's journal has the end and the agent resends the frames it holds: stored
    once each (the leftover kernel), the task succeeded, the CLI prints each line once, one write."""
    tag = f"e{uuid.uuid4().hex[:6]}"
    proc = world.run(script(tag, lines=6, pause=0.2))
    read = _wait_for_line(proc, f"{tag} line 1")
    world.stop(signal.SIGKILL)
    time.sleep(2)
    world.start()
    lines, err = _finish(proc, read)
    assert proc.returncode == 0, err
    tid = _task_id(err)
    assert world.task(tid)["status"] == "succeeded"
    expected = [f"{tag} line {i}\n" for i in range(6)] + [f"{tag} wrote\n"]
    assert lines == expected == _stored_lines(world, tid)
    assert world.writes(tag) == 1


def test_a_notebook_cut_by_a_restart_between_its_cells_ends_lost_and_its_later_cells_never_run(world: World) -> None:
    """SIGKILL while a notebook's first cell runs; that cell ends while the gateway is down: the
    journal's end is the cell's, not the notebook's, and the runner that would send the next cell is
    gone: the task ends lost (in part it ran), never succeeded, and the second cell's write never happens."""
    import nbformat
    tag = f"n{uuid.uuid4().hex[:6]}"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"import time\nprint('{tag} first', flush=True)\ntime.sleep(1.5)"),
        nbformat.v4.new_code_cell(script(tag, lines=1, pause=0.1))])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    path = world.tmp / f"{tag}.ipynb"
    nbformat.write(nb, path)
    proc = world.run("", notebook=path)
    read = _wait_for_line(proc, f"{tag} first")
    world.stop(signal.SIGKILL)
    time.sleep(2)
    world.start()
    _lines, err = _finish(proc, read)
    assert proc.returncode == 6, err
    task = world.task(_task_id(err))
    assert (task["status"], task["error"]["ename"]) == ("lost", "TaskLost"), task
    assert "the later ones did not" in task["error"]["evalue"] and "may have run in part" in task["error"]["evalue"]
    world.wait_kernel_stopped_by_agent(task["id"])
    assert world.writes(tag) == 0


def test_a_task_whose_agent_never_comes_back_ends_lost_after_the_grace(world: World) -> None:
    """A running task of an agent that does not say hello again within Gateway.agent_grace (5 s here)
    of the restart ends lost, saying the gateway restarted, the code may have run, and what is known."""
    tag = f"g{uuid.uuid4().hex[:6]}"
    tid = _seed(world, script(tag, 1, 0.1), ["submitted", "approved", "dispatched", "running"], agent="gone-agent")
    t0 = time.monotonic()
    world.restart(signal.SIGKILL)
    task = wait_until(lambda: (t := world.task(tid))["status"] in FINAL and t, 30, f"task {tid}'s end", world.gw.proc.log)
    assert time.monotonic() - t0 >= 5
    assert (task["status"], task["error"]["ename"]) == ("lost", "TaskLost")
    evalue = task["error"]["evalue"]
    assert "the gateway restarted while this task ran and agent gone-agent did not report within 5 s" in evalue
    assert "its code may have run" in evalue and "started at" in evalue
    assert world.writes(tag) == 0


def _task_with(world: World, tag: str) -> dict:
    def found() -> dict | None:
        with world.gw.api(world.dev) as api:
            mine = [t for t in api.get("/api/v1/tasks", params={"limit": 20}).json()["tasks"] if tag in t["code"]]
        return mine[0] if mine else None
    return wait_until(found, 15, f"the task of {tag}", world.gw.proc.log)


FINAL = {"succeeded", "failed", "rejected", "denied", "cancelled", "expired", "killed", "lost"}


def test_cellgate_run_started_while_the_gateway_is_down_submits_once_it_is_back(world: World) -> None:
    tag = f"t{uuid.uuid4().hex[:6]}"
    world.stop(signal.SIGKILL)
    proc = world.run(script(tag, lines=1, pause=0.1))
    assert proc.stderr is not None
    assert "retrying for up to 60 s" in proc.stderr.readline() + proc.stderr.readline()
    world.start()
    lines, err = _finish(proc, [])
    assert proc.returncode == 0, err
    assert lines == [f"{tag} line 0\n", f"{tag} wrote\n"]
    with world.gw.api(world.dev) as api:
        mine = [t for t in api.get("/api/v1/tasks", params={"limit": 20}).json()["tasks"] if tag in t["code"]]
    assert len(mine) == 1 and mine[0]["status"] == "succeeded"
    assert world.writes(tag) == 1
