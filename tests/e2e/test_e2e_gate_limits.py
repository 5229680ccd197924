"""The gate through the real gateway: approvals count people, code size, history and introspection.

REST reviews (one person in two groups is one approval), the size cap on cells (WebSocket) and
scripts (413), the removed Python auto-approval, ``history_request`` answered by the gateway,
and ``inspect_request``/``complete_request`` on Python targets following the policy.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import Gateway, Jupyter, cli, connect, start_kernel

MAX = 1 << 20  # Gateway.max_code_bytes (default)


def set_policy(gw: Gateway, target: str, review_groups: list[str], **policy: Any) -> None:
    with gw.admin() as api:
        r = api.put(f"/api/v1/targets/{target}", json={"review_groups": review_groups, "policy": policy})
        assert r.status_code == 200, r.text


def submit(gw: Gateway, token: str, target: str, code: str) -> httpx.Response:
    with gw.api(token) as api:
        return api.post("/api/v1/tasks", json={"target": target, "code": code, "why": "test"})


def review(gw: Gateway, token: str, task_id: int) -> dict[str, Any]:
    with gw.api(token) as api:
        r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "ok"})
        assert r.status_code == 200, r.text
        return r.json()


def cancel(gw: Gateway, token: str, task_id: int) -> None:
    with gw.api(token) as api:
        api.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "test over"})


@pytest.fixture(scope="module")
def people(gateway: Gateway, users: dict[str, str]) -> dict[str, str]:
    return {**users, "both": gateway.user("both", ("dba", "sec")), "sec1": gateway.user("sec1", ("sec",))}


# --------------------------------------------------------------------- approvals count people
def test_rest_all_mode_needs_a_distinct_person_per_group(gateway: Gateway, people: dict[str, str]) -> None:
    set_policy(gateway, "reviewed", ["dba", "sec"], review={"mode": "all"})
    r = submit(gateway, people["dev"], "reviewed", "UPDATE accounts SET balance = 0 WHERE id = 4")
    assert r.status_code == 201, r.text
    task_id = r.json()["id"]
    try:
        after = review(gateway, people["both"], task_id)
        assert after["status"] == "pending_review", after
        assert any("both's approval already counts for" in m for m in after["missing_approvals"]), after
        assert review(gateway, people["reviewer"], task_id)["status"] == "approved"
    finally:
        cancel(gateway, people["dev"], task_id)


def test_rest_count_mode_counts_each_person_once(gateway: Gateway, people: dict[str, str]) -> None:
    set_policy(gateway, "reviewed2", ["dba", "sec"], review={"mode": "count", "approvals": 2})
    task_id = submit(gateway, people["dev"], "reviewed2", "UPDATE accounts SET balance = 0 WHERE id = 5").json()["id"]
    try:
        assert review(gateway, people["both"], task_id)["status"] == "pending_review"
        assert review(gateway, people["sec1"], task_id)["status"] == "approved"
    finally:
        cancel(gateway, people["dev"], task_id)


# ------------------------------------------------------------------------------- policy
def test_python_auto_approval_is_refused_with_the_reason(gateway: Gateway, agent, tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text('[targets.py]\ndescription = "Python"\npython_auto_approve = "unflagged"\n')
    out = cli(gateway, gateway.admin_token, "apply", "-f", str(policy_file))
    assert out.returncode != 0
    assert "targets.py.python_auto_approve" in out.stderr and "removed" in out.stderr, out.stderr
    shown = cli(gateway, gateway.admin_token, "policy", "show", "py")
    assert shown.returncode == 0 and "introspection:  refuse" in shown.stdout, shown.stdout + shown.stderr
    with gateway.admin() as api:
        r = api.put("/api/v1/targets/py", json={"policy": {"python_auto_approve": "unflagged"}})
        assert r.status_code == 400, r.text
        assert "removed" in r.json()["message"] and "always reviewed" in r.json()["message"]
        shown = api.get("/api/v1/targets/py").json()["policy"]
        assert shown["python_auto_approve"] == "never" and shown["introspection"] == "refuse"


# ---------------------------------------------------------------------------- code size
def test_a_script_over_the_cap_is_413_and_no_task(gateway: Gateway, users: dict[str, str]) -> None:
    with gateway.api(users["dev"]) as api:
        before = len(api.get("/api/v1/tasks").json()["tasks"])
        code = "-- " + "é" * (MAX // 2)  # over 1 MiB in UTF-8, under it in characters
        r = api.post("/api/v1/tasks", json={"target": "lite", "code": code, "why": "big"})
        assert r.status_code == 413, r.text
        body = r.json()
        assert body["status"] == 413 and "Gateway.max_code_bytes" in body["message"]
        assert f"at most {MAX}" in body["message"] and f"is {len(code.encode())} bytes" in body["message"]
        assert len(api.get("/api/v1/tasks").json()["tasks"]) == before
        # just under the cap: accepted
        ok = api.post("/api/v1/tasks", json={"target": "lite", "code": "SELECT 1 -- " + "x" * (MAX - 100), "why": "fits"})
        assert ok.status_code == 201, ok.text


def test_a_cell_over_the_cap_is_refused_visibly_and_is_no_task(jupyter: Jupyter, gateway: Gateway, users: dict[str, str]) -> None:
    kid = start_kernel(jupyter, "py")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            ex = await kc.execute("x = 1\n#" + "y" * MAX)
            assert ex.status == "error", ex.reply
            err = ex.reply["content"]
            assert err["ename"] == "CellTooLarge" and "Gateway.max_code_bytes" in err["evalue"]
            assert any(m["header"]["msg_type"] == "error" for m in ex.msgs)
            ok = await kc.execute("print(40 + 2)")
            assert ok.status == "ok" and "42" in ok.text
    asyncio.run(body())
    with gateway.api(users["dev"]) as api:
        codes = [t["code"] for t in api.get("/api/v1/tasks", params={"target": "py", "limit": 5}).json()["tasks"]]
    assert not any(len(c) > MAX for c in codes)


# ---------------------------------------------------------------- history and introspection
def test_history_is_answered_by_the_gateway(jupyter: Jupyter) -> None:
    kid = start_kernel(jupyter, "py")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            for code in ("a = 1", "b = 2", "print(a + b)"):
                assert (await kc.execute(code)).status == "ok"
            msg = kc.request("history_request", {"output": False, "raw": True, "hist_access_type": "tail", "n": 2})
            got = await kc.collect(msg["header"]["msg_id"], reply_type="history_reply")
            assert got.reply["content"] == {"status": "ok", "history": [[0, 2, "b = 2"], [0, 3, "print(a + b)"]]}
            assert [m["header"]["msg_type"] for m in got.msgs if m["header"]["msg_type"] == "status"] == ["status", "status"]
            rng = kc.request("history_request", {"output": False, "raw": True, "hist_access_type": "range",
                                                 "session": 0, "start": 1, "stop": 3})
            got = await kc.collect(rng["header"]["msg_id"], reply_type="history_reply")
            assert got.reply["content"]["history"] == [[0, 1, "a = 1"], [0, 2, "b = 2"]]
            search = kc.request("history_request", {"output": False, "raw": True, "hist_access_type": "search",
                                                    "pattern": "print*", "n": 10})
            got = await kc.collect(search["header"]["msg_id"], reply_type="history_reply")
            assert got.reply["content"]["history"] == [[0, 3, "print(a + b)"]]
    asyncio.run(body())


def test_introspection_on_python_follows_the_policy(jupyter: Jupyter, gateway: Gateway) -> None:
    kid = start_kernel(jupyter, "py")

    async def body(expect_refused: bool) -> None:
        async with connect(jupyter, kid) as kc:
            assert (await kc.execute("value = 42")).status == "ok"
            comp = kc.request("complete_request", {"code": "val", "cursor_pos": 3})
            got = await kc.collect(comp["header"]["msg_id"], reply_type="complete_reply")
            insp = kc.request("inspect_request", {"code": "value", "cursor_pos": 5, "detail_level": 0})
            seen = await kc.collect(insp["header"]["msg_id"], reply_type="inspect_reply")
            if expect_refused:
                c = got.reply["content"]
                assert (c["status"], c["ename"], c["matches"], c["cursor_start"], c["cursor_end"]) == \
                    ("error", "CellgateRefused", [], 3, 3)
                assert 'introspection = "refuse"' in c["evalue"]
                i = seen.reply["content"]
                assert (i["status"], i["found"], i["ename"]) == ("error", False, "CellgateRefused")
            else:
                assert got.reply["content"]["status"] == "ok" and "value" in got.reply["content"]["matches"]
                assert seen.reply["content"]["status"] == "ok" and seen.reply["content"]["found"] is True
    try:
        asyncio.run(body(expect_refused=True))
        set_policy(gateway, "py", [], introspection="allow")
        asyncio.run(body(expect_refused=False))
    finally:
        set_policy(gateway, "py", [], introspection="refuse")


def test_introspection_on_sql_is_passed_through(jupyter: Jupyter) -> None:
    kid = start_kernel(jupyter, "lite")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            comp = kc.request("complete_request", {"code": "SEL", "cursor_pos": 3})
            got = await kc.collect(comp["header"]["msg_id"], reply_type="complete_reply", until_idle=False)
            assert got.reply["content"].get("ename") != "CellgateRefused", got.reply
    asyncio.run(body())
