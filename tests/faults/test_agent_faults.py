"""The agent side of failures: an agent killed mid-task (back within the grace and after it), its link cut
mid-output and over a task's end, and one output bigger than a WebSocket frame may be.

``Gateway.agent_grace`` is ``GRACE`` (6 s) here instead of 30 s: "restarted after 5 s" becomes "restarted at
once" (within the grace) and "after 45 s" becomes "after GRACE + 3 s" (past it). Every test ends by checking
the target table: the task's write happened at most once.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from faults_harness import GRACE, World, settle
from harness import KernelConnection, wait_until

pytestmark = pytest.mark.postgres

LINES = 300


def test_an_agent_killed_mid_task_and_back_within_the_grace_ends_it_lost_at_once(world: World) -> None:
    world.start_agent()
    task_id = world.submit(world.writer("k1", after="time.sleep(30)"))
    wait_until(lambda: world.rows("k1") == 1 and world.task(task_id)["status"] == "running", 30, "the write")
    world.kill_agent()
    world.start_agent()  # a supervisor restarts it in seconds: well within the grace
    task = world.wait_status(task_id, {"lost", "failed", "succeeded", "killed"}, 15)
    assert task["status"] == "lost"  # it started and no end is known: its fate is truly unknown
    assert "may have run" in task["error"]["evalue"] and "came back without the kernel" in task["error"]["evalue"]
    assert "last output #1" in task["error"]["evalue"]  # what is known: it printed once
    # the agent is usable again, and a new task on it runs
    again = world.submit("print('after the restart')")
    assert world.wait_status(again, {"succeeded", "failed", "lost"}, 60)["status"] == "succeeded"
    assert world.rows("k1") == 1


def test_an_agent_killed_mid_task_and_back_after_the_grace(world: World) -> None:
    world.start_agent()
    task_id = world.submit(world.writer("k2", after="time.sleep(30)"))
    wait_until(lambda: world.rows("k2") == 1 and world.task(task_id)["status"] == "running", 30, "the write")
    world.kill_agent()
    task = world.wait_status(task_id, {"lost", "failed", "succeeded", "killed"}, GRACE + 10)
    assert task["status"] == "lost"
    assert "stayed away longer than" in task["error"]["evalue"] and "may have run" in task["error"]["evalue"]
    settle(3)
    world.start_agent()  # back after the grace: its journal's report changes nothing, it is not re-run
    again = world.submit("print('after the restart')")
    assert world.wait_status(again, {"succeeded", "failed", "lost"}, 60)["status"] == "succeeded"
    assert world.task(task_id)["status"] == "lost"
    assert world.rows("k2") == 1


def test_a_link_cut_mid_output_loses_no_output(world: World) -> None:
    world.start_agent()
    code = world.writer("c1", after=f"for i in range({LINES}):\n    print(f'line {{i}}', flush=True)\n    time.sleep(0.02)")
    task_id = world.submit(code)
    wait_until(lambda: "line 50" in world.text(task_id), 30, "output under way")
    world.proxy.cut()
    settle(3)
    world.proxy.resume()
    task = world.wait_status(task_id, {"succeeded", "failed", "lost", "killed"}, 60)
    assert task["status"] == "succeeded", task
    text = world.text(task_id)
    lines = [line for line in text.splitlines() if line.startswith("line ")]
    assert lines == [f"line {i}" for i in range(LINES)]  # each once, in order, none missing
    assert "outputs lost" not in text
    assert world.proxy.connections >= 2  # it did reconnect
    assert world.rows("c1") == 1


def test_a_link_cut_over_a_tasks_end_gets_its_true_end(world: World) -> None:
    world.start_agent()
    task_id = world.submit(world.writer("c2", before="time.sleep(1)", after="time.sleep(1)\nprint('done')"))
    wait_until(lambda: world.task(task_id)["status"] == "running", 30, "running")
    world.proxy.cut()  # the task writes and ends while the link is down (5 s, within the grace)
    settle(5)
    world.proxy.resume()
    task = world.wait_status(task_id, {"succeeded", "failed", "lost", "killed"}, 30)
    assert task["status"] == "succeeded", task
    assert "wrote c2" in world.text(task_id) and "done" in world.text(task_id)
    assert world.rows("c2") == 1


def test_two_link_cuts_each_have_their_own_grace(world: World) -> None:
    """A grace timer from an earlier disconnect must not end a task during a later, short one."""
    world.start_agent()
    task_id = world.submit(world.writer("c3", after=f"time.sleep({GRACE + 2})\nprint('done')"))
    wait_until(lambda: world.task(task_id)["status"] == "running", 30, "running")
    world.proxy.cut()
    settle(1)
    world.proxy.resume()
    wait_until(lambda: world.proxy.connections >= 2 and world.task(task_id)["status"] == "running", 15, "reconnected")
    settle(GRACE - 3)  # the first disconnect's timer fires during the second cut
    world.proxy.cut()
    settle(3)
    world.proxy.resume()
    task = world.wait_status(task_id, {"succeeded", "failed", "lost", "killed"}, 30)
    assert task["status"] == "succeeded", task
    assert world.rows("c3") == 1


def _rss_mb(world: World) -> float:
    assert world.agent is not None
    status = Path(f"/proc/{world.agent.proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) / 1024


def test_a_12_mb_output_is_capped_on_the_agent_and_the_link_stays_up(world: World) -> None:
    world.start_agent()
    warm = world.submit("print('warm up')")
    world.wait_status(warm, {"succeeded", "failed", "lost"}, 60)
    baseline = _rss_mb(world)
    task_id = world.submit(world.writer("big", after="print('x' * 12_000_000)\nprint('after')"))
    task = world.wait_status(task_id, {"succeeded", "failed", "lost", "killed"}, 90)
    assert task["status"] == "succeeded", task
    text = world.text(task_id)
    assert "output truncated" in text
    assert sum(len(o["output"].get("text", "")) for o in world.outputs(task_id)) <= 10_000_000
    assert world.proxy.connections == 1  # the link never dropped
    after = _rss_mb(world)
    print(f"agent RSS: {baseline:.0f} MB before, {after:.0f} MB after")
    assert after < baseline + 48  # acked: nothing of the 12 MB is held (one output's parsing may leave a little)
    again = world.submit("print('still fine')")
    assert world.wait_status(again, {"succeeded", "failed", "lost"}, 60)["status"] == "succeeded"
    assert world.rows("big") == 1


def _kernel(world: World) -> tuple[str, KernelConnection]:
    with world.gw.api(world.dev) as api:
        r = api.post("/api/kernels", json={"name": world.target})
        assert r.status_code == 201, r.text
        kid = r.json()["id"]
    ws = world.gw.url.replace("http://", "ws://") + f"/api/kernels/{kid}/channels"
    return kid, KernelConnection(ws, {"Authorization": f"token {world.dev}"})


def _latest(world: World) -> dict:
    with world.gw.api(world.dev) as api:
        return dict(api.get("/api/v1/tasks", params={"limit": 1, "target": world.target}).json()["tasks"][0])


def test_a_request_the_link_dropped_before_the_agent_got_it_fails_as_not_run(world: World) -> None:
    world.start_agent()
    _, kc = _kernel(world)

    async def scenario() -> None:
        async with kc:
            assert (await kc.execute("x = 1", timeout=60)).status == "ok"
            world.proxy.stall()  # what the gateway sends now stays in the proxy…
            kc.send_execute(world.writer("n1"))
            await asyncio.sleep(1)
            world.proxy.cut()  # …and is dropped with the link
            world.proxy.resume()
            task = await asyncio.to_thread(lambda: wait_until(
                lambda: (t := _latest(world))["status"] not in ("approved", "dispatched", "running") and t, 30, "settled"))
            assert task["status"] == "failed" and task["error"]["ename"] == "NotDelivered", task
            assert "did not run" in task["error"]["evalue"]
    asyncio.run(scenario())
    assert world.rows("n1") == 0


def test_a_cell_on_a_dead_kernel_fails_at_once(world: World) -> None:
    world.start_agent()
    _, kc = _kernel(world)

    async def scenario() -> None:
        async with kc:
            kc.send_execute("import os; os._exit(1)")
            died = await asyncio.to_thread(lambda: wait_until(
                lambda: (t := _latest(world))["status"] not in ("approved", "dispatched", "running") and t, 30, "died"))
            assert died["status"] == "failed" and died["error"]["ename"] == "KernelDied", died
            t0 = time.monotonic()
            after = await kc.execute(world.writer("d1"), timeout=30)
            assert after.status == "error" and time.monotonic() - t0 < 10
            assert "dead" in after.reply["content"]["evalue"]
    asyncio.run(scenario())
    assert _latest(world)["error"]["ename"] == "KernelDead"
    assert world.rows("d1") == 0


def test_after_an_agent_restart_a_cell_on_its_old_kernel_fails_at_once(world: World) -> None:
    world.start_agent()
    _, kc = _kernel(world)

    async def scenario() -> None:
        async with kc:
            assert (await kc.execute("x = 1", timeout=60)).status == "ok"
            world.kill_agent()
            await asyncio.to_thread(world.start_agent)  # the kernel died with it
            t0 = time.monotonic()
            after = await kc.execute(world.writer("r1"), timeout=30)
            assert after.status == "error" and time.monotonic() - t0 < 10  # not left dispatched
    asyncio.run(scenario())
    assert _latest(world)["error"]["ename"] == "KernelDead"
    assert world.rows("r1") == 0


def test_a_task_that_ended_while_its_agent_was_away_too_long_stays_lost_and_its_true_end_is_audited(world: World) -> None:
    world.start_agent()
    task_id = world.submit(world.writer("a1", before="time.sleep(1)", after="print('done')"))
    wait_until(lambda: world.task(task_id)["status"] == "running", 30, "running")
    world.proxy.cut()  # it writes and ends while the link is down, longer than the grace
    world.wait_status(task_id, {"lost"}, GRACE + 10)
    world.proxy.resume()
    wait_until(lambda: world.proxy.connections >= 2, 15, "reconnected")

    def reconciled() -> list[dict]:
        with world.gw.admin() as api:
            lines = api.get("/api/v1/audit", params={"format": "jsonl"}).text.splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [e for e in events if e["action"] == "task.reconciled" and e["task_id"] == task_id]
    event = wait_until(reconciled, 15, "task.reconciled")[0]
    assert event["detail"]["status"] == "lost" and event["detail"]["journal"]["status"] == "ok"
    task = world.task(task_id)
    assert task["status"] == "lost" and "may have run" in task["error"]["evalue"]  # it is never re-run
    assert world.rows("a1") == 1
