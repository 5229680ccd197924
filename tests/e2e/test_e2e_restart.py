"""A gateway restart: the agent reconnects, its kernels are adopted, a cell running across it ends as it
really did (with every output), nothing runs twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from harness import (Gateway, KernelConnection, agent_config, create_pg_database, drop_pg_database, start_agent,
                     start_gateway, wait_online, wait_until)

pytestmark = pytest.mark.postgres


def test_gateway_restart_keeps_kernels_and_a_running_cell_ends_with_its_outputs(tmp_path: Path) -> None:
    db = create_pg_database()
    gw = start_gateway(tmp_path, db)
    agent = None
    try:
        gw.set_target("py")
        dev = gw.user("dev")
        agent = start_agent(gw, tmp_path, agent_config(tmp_path / "agent.toml", "restart-agent",
                                                        {"py": {"kind": "python", "url": "sqlite:///:memory:"}}))
        wait_online(gw, ["py"], agent.log)
        with gw.api(dev) as api:
            kid = api.post("/api/kernels", json={"name": "py"}).json()["id"]
        ws = gw.url.replace("http://", "ws://") + f"/api/kernels/{kid}/channels"

        async def before() -> None:
            async with KernelConnection(ws, {"Authorization": f"token {dev}"}) as kc:
                assert (await kc.execute("x = 41")).status == "ok"
                msg = kc.send_execute("import time\nprint('before', flush=True)\ntime.sleep(4)\nprint('after')")
                await kc.wait_for(msg["header"]["msg_id"], "stream")
        asyncio.run(before())
        wait_until(lambda: _latest(gw, dev)["status"] == "running", 10, "sleep running")
        tid = _latest(gw, dev)["id"]
        port = int(gw.url.rsplit(":", 1)[1])
        gw.proc.stop()
        gw = start_gateway(tmp_path, db, port=port)
        t0 = time.monotonic()
        wait_online(gw, ["py"], agent.log, timeout=30)
        reconnect = time.monotonic() - t0
        assert reconnect < 15
        # the new gateway tracks it again on the adopted kernel: its end and its last output are recorded
        wait_until(lambda: _latest(gw, dev)["status"] not in ("dispatched", "running"), 30, "the cell's end", gw.proc.log)
        task = _latest(gw, dev)
        assert (task["id"], task["status"]) == (tid, "succeeded"), task
        with gw.api(dev) as api:
            outputs = api.get(f"/api/v1/tasks/{tid}/output").json()["outputs"]
        assert [o["output"]["text"] for o in outputs] == ["before\n", "after\n"]  # once each: never re-run

        async def after() -> None:
            async with KernelConnection(ws, {"Authorization": f"token {dev}"}) as kc:
                ex = await kc.execute("print(x + 1)", timeout=60)
                assert ex.status == "ok" and "42" in ex.text  # same kernel, state kept
        asyncio.run(after())
    finally:
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        drop_pg_database(db)


def _latest(gw: Gateway, token: str) -> dict:
    with gw.api(token) as api:
        return api.get("/api/v1/tasks", params={"limit": 1}).json()["tasks"][0]
