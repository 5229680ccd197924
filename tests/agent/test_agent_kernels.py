"""The agent as a subprocess against a fake gateway: hello, kernels, relaying, lifecycle."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import pytest
from agent_harness import KERNEL_GID, KERNEL_UIDS, TOKEN, remove_shared, running, shared_sqlite

SECRET = "pw-Zx81-do-not-leak"
INLINE_SECRET = "inline-Qq42-secret"
URL = f"postgresql://app:{SECRET}@db.internal:5432/payments"


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
id = "agent-test-1"
tags = ["test"]
kernel_uids = "{KERNEL_UIDS}"

[targets.payments]
kind = "python"
display_name = "Payments (test)"
url_env = "CG_TEST_PAYMENTS_URL"
env = {{ EXTRA = "x" }}

[targets.reports]
kind = "python"
url = "mysql+pymysql://ro:{INLINE_SECRET}@db.internal/reports"
""")
    config.chmod(0o600)  # it holds a password
    return config


def run(coro):
    return asyncio.run(coro)


def msg_types(got):
    return [(f["channel"], f["msg"]["header"]["msg_type"]) for _, f in got]


def test_hello_execute_and_no_secret_leaves(tmp_path):
    async def scenario():
        env = {"CG_TEST_PAYMENTS_URL": URL, "CELLGATE_AGENT_TOKEN": TOKEN}
        async with running(write_config(tmp_path), env=env, token_arg=None) as (gw, agent):
            hello = await asyncio.wait_for(gw.hellos.get(), 15)
            assert hello["agent_id"] == "agent-test-1"
            assert hello["tags"] == ["test"]
            assert hello["targets"] == [
                {"name": "payments", "kind": "python", "language": "python",
                 "display_name": "Payments (test)", "dialect": "postgresql"},
                {"name": "reports", "kind": "python", "language": "python",
                 "display_name": "reports", "dialect": "mysql"},
            ]

            gw.send({"type": "ping", "ts": 12.5})
            assert (await asyncio.wait_for(gw.pongs.get(), 5))["ts"] == 12.5

            kid = str(uuid.uuid4())
            reply = await gw.request("kernel_start", kernel_id=kid, target="payments",
                                     env={"KERNEL_USERNAME": "alice", "NOT_KERNEL": "no"})
            assert reply == {"type": "reply", "req_id": reply["req_id"], "ok": True}

            out, _ = await gw.run(kid, (
                "import os\n"
                "e = os.environ\n"
                "print(e['DATABASE_URL'] == e['CELLGATE_TARGET_URL'] == e['CG_URL_SEEN'] "
                "if 'CG_URL_SEEN' in e else e['DATABASE_URL'] == e['CELLGATE_TARGET_URL'])\n"
                "print('CELLGATE_AGENT_TOKEN' in e, 'CG_TEST_PAYMENTS_URL' in e, 'NOT_KERNEL' in e)\n"
                "print(e.get('EXTRA'), e.get('KERNEL_USERNAME'), e.get('CELLGATE_TARGET_NAME'))\n"))
            assert out.split("\n")[:3] == ["True", "False False False", "x alice payments"]

            # streamed as it comes: the first print arrives a second before the second one
            msg_id = gw.send_execute(kid, "import time\nprint('first', flush=True)\n"
                                          "time.sleep(1)\nprint('second')\n1 + 1")
            got = await gw.collect(msg_id)
            for _, f in got:
                assert f["msg"]["parent_header"]["msg_id"] == msg_id
                assert "buffers" not in f["msg"]
                assert isinstance(f["msg"]["header"]["date"], str)
            kinds = msg_types(got)
            assert kinds[0] == ("iopub", "status")
            assert got[0][1]["msg"]["content"]["execution_state"] == "busy"
            assert ("shell", "execute_reply") in kinds and ("iopub", "execute_result") in kinds
            streams = [(at, f["msg"]["content"]["text"]) for at, f in got
                       if f["msg"]["header"]["msg_type"] == "stream"]
            first = next(at for at, text in streams if "first" in text)
            second = next(at for at, text in streams if "second" in text)
            assert second - first > 0.7
            result = next(f["msg"]["content"] for _, f in got
                          if f["msg"]["header"]["msg_type"] == "execute_result")
            assert result["data"]["text/plain"] == "2"

            assert (await gw.request("kernel_stop", kernel_id=kid))["ok"] is True
            assert not (await gw.request("kernel_stop", kernel_id=kid))["ok"]
            assert await agent.stop() == 0

        log = agent.log
        assert "inline URL carries a password" in log
        for text in [*gw.raw, log]:
            assert SECRET not in text and INLINE_SECRET not in text and TOKEN not in text

    run(scenario())


def test_interrupt_restart_death_and_clean_shutdown(tmp_path):
    async def scenario():
        async with running(write_config(tmp_path), env={"CG_TEST_PAYMENTS_URL": URL}) as (gw, agent):
            await asyncio.wait_for(gw.hellos.get(), 15)
            kid = str(uuid.uuid4())
            assert (await gw.request("kernel_start", kernel_id=kid, target="payments"))["ok"]
            await gw.run(kid, "x = 41")

            msg_id = gw.send_execute(kid, "import time\nprint('sleeping', flush=True)\n"
                                          "time.sleep(60)")
            while True:  # wait until the cell is inside the sleep
                _, f = await asyncio.wait_for(gw.kernel_msgs.get(), 10)
                if f["msg"]["header"]["msg_type"] == "stream":
                    break
            sent = time.monotonic()
            assert (await gw.request("kernel_interrupt", kernel_id=kid))["ok"]
            got = await gw.collect(msg_id, timeout=10)
            assert time.monotonic() - sent < 5
            reply = next(f["msg"]["content"] for _, f in got
                         if f["msg"]["header"]["msg_type"] == "execute_reply")
            assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"

            assert (await gw.request("kernel_restart", kernel_id=kid))["ok"]
            out, _ = await gw.run(kid, "print('x' in globals())")
            assert out == "False\n"

            # a kernel that dies by itself is reported, and a restart revives it
            gw.send_execute(kid, "import os\nos._exit(3)")
            status = await asyncio.wait_for(gw.statuses.get(), 10)
            assert status["kernel_id"] == kid and status["state"] == "dead"
            assert "code 3" in status["reason"]
            assert (await gw.request("kernel_restart", kernel_id=kid))["ok"]
            out, _ = await gw.run(kid, "import os\nprint(os.getpid())")
            pid = int(out)

            assert await agent.stop() == 0  # SIGTERM: kernels are shut down, exit 0
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert "stopping" in agent.log

    run(scenario())


def test_reconnect_keeps_kernels(tmp_path):
    async def scenario():
        async with running(write_config(tmp_path), env={"CG_TEST_PAYMENTS_URL": URL}) as (gw, agent):
            first = await asyncio.wait_for(gw.hellos.get(), 15)
            assert first["kernels"] == []
            kid, orphan = str(uuid.uuid4()), str(uuid.uuid4())
            for k in (kid, orphan):
                assert (await gw.request("kernel_start", kernel_id=k, target="payments"))["ok"]
            await gw.run(kid, "x = 5")
            out, _ = await gw.run(orphan, "import os\nprint(os.getpid())")
            orphan_pid = int(out)

            await gw.stop()
            await asyncio.sleep(1.0)
            gw.adopt = [kid]  # the new gateway adopts one kernel; the agent stops the other
            gw.start()
            again = await asyncio.wait_for(gw.hellos.get(), 15)
            assert sorted(again.pop("kernels")) == sorted([kid, orphan])
            # the fake gateway acknowledged nothing: the journal reports task 1 (the last run of it) as ended
            assert [(t["task_id"], t["state"], t["status"]) for t in again.pop("tasks")] == [(1, "ended", "ok")]
            first.pop("kernels")
            assert first.pop("tasks") == []
            assert again == first
            out, _ = await gw.run(kid, "print(x)")
            assert out == "5\n"
            for _ in range(50):
                try:
                    os.kill(orphan_pid, 0)
                except ProcessLookupError:
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("the kernel not adopted is still running")
            reply = await gw.request("kernel_interrupt", kernel_id=orphan)
            assert reply["ok"] is False and "unknown kernel" in reply["error"]
            assert await agent.stop() == 0
        assert "connection to the gateway lost" in agent.log

    run(scenario())


def test_refused_token_is_reported_and_retried(tmp_path):
    async def scenario():
        async with running(write_config(tmp_path), reject=2,
                           env={"CG_TEST_PAYMENTS_URL": URL}) as (gw, agent):
            await asyncio.wait_for(gw.hellos.get(), 15)
            assert gw.attempts == 3
            assert await agent.stop() == 0
        assert "refused the agent token (HTTP 401)" in agent.log

    run(scenario())


def test_sql_target_on_sqlite(tmp_path):
    pytest.importorskip("cellgate.kernels.specs")
    db, shared = shared_sqlite()  # the kernel runs as an unprivileged uid of group KERNEL_GID
    config = tmp_path / "sql.toml"
    config.write_text(f'[agent]\nkernel_uids = "{KERNEL_UIDS}"\n'
                      f'[targets.demo]\nkind = "sql"\nurl = "sqlite:///{db}"\nrow_limit = 10\n'
                      f'kernel_gid = {KERNEL_GID}\n')

    async def scenario():
        async with running(config) as (gw, agent):
            hello = await asyncio.wait_for(gw.hellos.get(), 15)
            assert hello["targets"][0]["dialect"] == "sqlite"
            assert hello["targets"][0]["language"] == "sql"
            kid = str(uuid.uuid4())
            reply = await gw.request("kernel_start", kernel_id=kid, target="demo")
            assert reply["ok"], reply
            sql = "create table t (x int); insert into t values (40); select x + 2 as answer from t"
            statements = ["create table t (x int)", "insert into t values (40)",
                          "select x + 2 as answer from t"]
            got = await gw.collect(gw.send_execute(kid, sql, statements=statements))
            reply = next(f["msg"]["content"] for _, f in got
                         if f["msg"]["header"]["msg_type"] == "execute_reply")
            assert reply["status"] == "ok", reply
            assert "42" in str([f["msg"]["content"] for _, f in got])
            assert await agent.stop() == 0
        assert "as uid 61" in agent.log  # the SQL kernel ran as an unprivileged uid

    try:
        run(scenario())
    finally:
        remove_shared(shared)
