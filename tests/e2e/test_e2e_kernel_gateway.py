"""The Kernel Gateway protocol through a real jupyter_server in gateway mode, with the gate."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from harness import Gateway, Jupyter, connect, start_kernel, task_id_from, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]


def latest_task(gw: Gateway, token: str, target: str) -> dict:
    with gw.api(token) as api:
        return api.get("/api/v1/tasks", params={"target": target, "limit": 1}).json()["tasks"][0]


def test_kernelspecs_list_the_users_targets(jupyter: Jupyter) -> None:
    with jupyter.api() as api:
        specs = api.get("/api/kernelspecs").json()
    assert {"pg", "maria", "lite", "py"} <= set(specs["kernelspecs"])
    assert specs["kernelspecs"]["py"]["spec"]["language"] == "python"
    assert specs["kernelspecs"]["pg"]["spec"]["language"] == "sql"


def test_kernel_model_parses_and_select_runs_without_review(jupyter: Jupyter, gateway: Gateway, users: dict) -> None:
    kid = start_kernel(jupyter, "pg", path="reports/daily.ipynb")
    with jupyter.api() as api:
        model = api.get(f"/api/kernels/{kid}").json()
    assert model["name"] == "pg" and isinstance(model["connections"], int)
    assert model["execution_state"] in ("idle", "starting", "busy")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            ex = await kc.execute("-- why: SUP-1 daily check\nSELECT 41 + 1 AS answer", metadata={"cellId": "cell-abc"})
            assert ex.status == "ok", ex.msgs
            result = ex.of_type("execute_result", "display_data")[0]["content"]["data"]
            assert "42" in result["text/plain"]
            assert "<table" in result["text/html"]
            assert result["application/vnd.dataresource+json"]["data"][0]["answer"] == 42
    asyncio.run(body())
    task = wait_until(lambda: (t := latest_task(gateway, users["dev"], "pg"))["status"] == "succeeded" and t, 10, "task recorded")
    assert task["code"].endswith("SELECT 41 + 1 AS answer")
    assert task["why"] == "SUP-1 daily check"
    assert task["cell_id"] == "cell-abc"
    assert task["notebook_path"].endswith("reports/daily.ipynb")  # jupyter_server sends the absolute path
    assert task["kernel_id"] == kid and task["user"] == "dev" and len(task["code_sha256"]) == 64


def test_held_cell_waits_for_review_and_later_cells_wait_behind_it(jupyter: Jupyter, gateway: Gateway, users: dict) -> None:
    gateway.set_target("lite", review_groups=["dba"])
    kid = start_kernel(jupyter, "lite")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            first = kc.send_execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
            second = kc.send_execute("SELECT balance FROM accounts WHERE id = 1")
            display = await kc.wait_for(first["header"]["msg_id"], "display_data")
            text = display["content"]["data"]["text/plain"]
            assert "awaits review by dba" in text and "/tasks/" in text
            assert display["content"]["transient"]["display_id"]
            task_id = task_id_from(display)
            # nothing has happened for the second cell: no task, no messages
            await asyncio.sleep(0.5)
            assert not [m for m in kc.inbox if m["parent_header"].get("msg_id") == second["header"]["msg_id"]]
            with gateway.api(users["reviewer"]) as api:
                inbox = api.get("/api/v1/reviews").json()["tasks"]
                assert [t["id"] for t in inbox] == [task_id]
            # the author cannot approve their own task
            with gateway.api(users["dev"]) as api:
                r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve"})
                assert r.status_code == 403 and "author" in r.json()["message"]
            with gateway.api(users["reviewer"]) as api:
                r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "ok"})
                assert r.status_code == 200, r.text
            ex = await kc.collect(first["header"]["msg_id"])
            assert ex.status == "ok"
            updates = ex.of_type("update_display_data")
            assert updates and "approved by reviewer" in updates[-1]["content"]["data"]["text/plain"]
            assert "UPDATE 1" in ex.text or "1 row" in ex.text
            # now the second cell is held in turn; reject it
            display2 = await kc.wait_for(second["header"]["msg_id"], "display_data")
            task2 = task_id_from(display2)
            with gateway.api(users["reviewer2"]) as api:
                r = api.post(f"/api/v1/tasks/{task2}/review", json={"decision": "reject", "comment": "use the report instead"})
                assert r.status_code == 200, r.text
            ex2 = await kc.collect(second["header"]["msg_id"])
            assert ex2.status == "error"
            assert ex2.reply["content"]["ename"] == "TaskRejected"
            evalue = ex2.of_type("error")[0]["content"]["evalue"]
            assert "reviewer2" in evalue and "use the report instead" in evalue
    try:
        asyncio.run(body())
    finally:
        gateway.set_target("lite")
    with gateway.api(users["dev"]) as api:
        first_task = api.get("/api/v1/tasks", params={"target": "lite", "limit": 2}).json()["tasks"][1]
    assert first_task["status"] == "succeeded" and first_task["decided_by"] == "reviewer"


def test_rejection_stops_run_all(jupyter: Jupyter, gateway: Gateway, users: dict) -> None:
    gateway.set_target("lite", review_groups=["dba"])
    kid = start_kernel(jupyter, "lite")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            first = kc.send_execute("DELETE FROM accounts WHERE id = 20")
            second = kc.send_execute("SELECT count(*) FROM accounts")
            display = await kc.wait_for(first["header"]["msg_id"], "display_data")
            with gateway.api(users["reviewer"]) as api:
                r = api.post(f"/api/v1/tasks/{task_id_from(display)}/review", json={"decision": "reject", "comment": "no"})
                assert r.status_code == 200
            ex = await kc.collect(first["header"]["msg_id"])
            assert ex.status == "error"
            ex2 = await kc.collect(second["header"]["msg_id"])
            assert ex2.status == "aborted"
    try:
        asyncio.run(body())
    finally:
        gateway.set_target("lite")


def test_messages_outside_the_allow_list_are_refused_visibly(jupyter: Jupyter) -> None:
    kid = start_kernel(jupyter, "py")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            ex = await kc.execute("1 + 1", user_expressions={"x": "__import__('os').getcwd()"})
            assert ex.status == "error" and "user_expressions" in ex.reply["content"]["evalue"]
            dbg = kc.request("debug_request", {"command": "initialize"}, channel="control")
            reply = await kc.collect(dbg["header"]["msg_id"], reply_type="debug_reply")
            assert reply.reply["content"]["status"] == "error"
            comm = kc.request("comm_open", {"comm_id": "x", "target_name": "jupyter.widget", "data": {}})
            refused = await kc.collect(comm["header"]["msg_id"], reply_type="comm_open_reply")
            assert "not allowed" in refused.reply["content"]["evalue"]
            info = kc.request("kernel_info_request", {})
            got = await kc.collect(info["header"]["msg_id"], reply_type="kernel_info_reply", until_idle=False)
            assert got.reply["content"]["language_info"]["name"] == "python"
            ok = await kc.execute("print(6 * 7)")
            assert ok.status == "ok" and "42" in ok.text
    asyncio.run(body())


def test_interrupt_cancels_a_postgres_query(jupyter: Jupyter) -> None:
    kid = start_kernel(jupyter, "pg")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            msg = kc.send_execute("SELECT pg_sleep(60)")
            await kc.wait_for(msg["header"]["msg_id"], "status")
            await asyncio.sleep(0.5)
            t0 = time.monotonic()
            async with httpx.AsyncClient(base_url=jupyter.url, headers={"Authorization": f"token {jupyter.token}"}) as api:
                r = await api.post(f"/api/kernels/{kid}/interrupt")
                assert r.status_code == 204, r.text
            ex = await kc.collect(msg["header"]["msg_id"], timeout=10)
            assert ex.status == "error"
            assert time.monotonic() - t0 < 2.0
            after = await kc.execute("SELECT 'still here' AS s")
            assert after.status == "ok" and "still here" in after.text
    asyncio.run(body())


def test_restart_loses_state(jupyter: Jupyter) -> None:
    kid = start_kernel(jupyter, "py")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            assert (await kc.execute("x = 5")).status == "ok"
            async with httpx.AsyncClient(base_url=jupyter.url, headers={"Authorization": f"token {jupyter.token}"}, timeout=60) as api:
                r = await api.post(f"/api/kernels/{kid}/restart")
                assert r.status_code == 200, r.text
            ex = await kc.execute("x")
            assert ex.status == "error" and ex.reply["content"]["ename"] == "NameError"
    asyncio.run(body())


def test_mariadb_sqlite_and_python_targets(jupyter: Jupyter) -> None:
    async def run(target: str, code: str) -> str:
        kid = start_kernel(jupyter, target)
        async with connect(jupyter, kid) as kc:
            ex = await kc.execute(code)
            assert ex.status == "ok", ex.msgs
            return ex.text

    assert "mariadb" in asyncio.run(run("maria", "SELECT lower(version()) AS v")).lower()
    assert "holder 3" in asyncio.run(run("lite", "SELECT holder FROM accounts WHERE id = 3"))
    assert "sqlite" in asyncio.run(run("py", "import os; print(os.environ['CELLGATE_TARGET_URL'].split(':')[0])"))


def test_another_user_cannot_see_or_touch_a_kernel(jupyter: Jupyter, jupyter2: Jupyter, gateway: Gateway, users: dict) -> None:
    kid = start_kernel(jupyter, "py")
    with jupyter2.api() as api:
        assert kid not in [k["id"] for k in api.get("/api/kernels").json()]
    with gateway.api(users["dev2"]) as api:
        assert api.get(f"/api/kernels/{kid}").status_code == 404
        assert api.post(f"/api/kernels/{kid}/interrupt").status_code == 404
        assert api.post(f"/api/kernels/{kid}/restart").status_code == 404
        assert api.delete(f"/api/kernels/{kid}").status_code == 404
        assert kid not in [k["id"] for k in api.get("/api/kernels").json()]

    async def attach() -> None:
        from tornado.httpclient import HTTPClientError, HTTPRequest
        from tornado.websocket import websocket_connect
        ws = gateway.url.replace("http://", "ws://") + f"/api/kernels/{kid}/channels"
        with pytest.raises(HTTPClientError) as err:
            await websocket_connect(HTTPRequest(ws, headers={"Authorization": f"token {users['dev2']}"}))
        assert err.value.code == 404
    asyncio.run(attach())
    with gateway.api(users["dev"]) as api:
        assert api.get(f"/api/kernels/{kid}").status_code == 200
        assert api.delete(f"/api/kernels/{kid}").status_code == 204


def test_output_streams_into_the_cell_as_it_comes(jupyter: Jupyter) -> None:
    kid = start_kernel(jupyter, "py")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            msg = kc.send_execute("import time\nprint('first', flush=True)\ntime.sleep(1.5)\nprint('second')")
            first = await kc.wait_for(msg["header"]["msg_id"], "stream")
            t_first = time.monotonic()
            assert "first" in first["content"]["text"]
            ex = await kc.collect(msg["header"]["msg_id"])
            assert ex.status == "ok" and "second" in ex.text
            assert time.monotonic() - t_first > 1.0  # the first line came before the cell finished
    asyncio.run(body())
