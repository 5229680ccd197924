"""Revoking a token or deactivating a user takes effect on the next request, WebSockets included:
kernel channels (straight to the gateway) and agent sockets close within seconds, a held cell
does not run once approved, and nothing authenticates with the token again."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import CELLGATE, Gateway, KernelConnection, Proc, agent_config, bind_agent, spawn, task_id_from, wait_online
from oidc_harness import db_execute, wait_for
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

CLOSE_REVOKED = 1008


@pytest.fixture(scope="module")
def targets(gateway: Gateway, oidc_workdir: Path) -> Iterator[Proc]:
    """An agent serving ``rlite`` (no review) and ``rlite-reviewed`` (reviewed by dba), one SQLite file."""
    db = oidc_workdir / "rlite.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    conn.close()
    gateway.set_target("rlite")
    gateway.set_target("rlite-reviewed", review_groups=["dba"])
    config = agent_config(oidc_workdir / "rev-agent.toml", "rev-agent", {
        "rlite": {"kind": "sql", "url": f"sqlite:///{db}"},
        "rlite-reviewed": {"kind": "sql", "url": f"sqlite:///{db}"}})
    token, _ = bind_agent(gateway, config)
    proc = spawn([CELLGATE, "agent", "--gateway", gateway.url, "--token", token, "--config", str(config)],
                 oidc_workdir / "rev-agent.log")
    wait_online(gateway, ["rlite", "rlite-reviewed"], proc.log)
    yield proc
    proc.stop()


def user_token(gw: Gateway, name: str, groups: tuple[str, ...] = ()) -> tuple[str, int]:
    token = gw.user(name, groups)
    with gw.api(token) as api:
        [current] = [t for t in api.get("/api/v1/tokens").json()["tokens"] if t["current"]]
    return token, current["id"]


def start_kernel(gw: Gateway, token: str, target: str = "rlite") -> str:
    with gw.api(token) as api:
        resp = api.post("/api/kernels", json={"name": target})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


@asynccontextmanager
async def channels(gw: Gateway, kernel_id: str, token: str) -> AsyncIterator[KernelConnection]:
    """The kernel's channels, straight to the gateway; closed at the end unless the server closed them."""
    kc = KernelConnection(gw.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels",
                          {"Authorization": f"token {token}"})
    await kc.__aenter__()
    try:
        yield kc
    finally:
        if kc.ws.close_code is None:
            await kc.__aexit__(None, None, None)
        else:
            kc.ws.close()  # the server closed it: acknowledge, nothing left to read


async def closed_within(kc: KernelConnection, timeout: float) -> float:
    """Seconds until the server closes the socket (messages before that are skipped)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while await asyncio.wait_for(kc.ws.read_message(), max(0.01, start + timeout - loop.time())) is not None:
        pass
    return loop.time() - start


async def refused_status(url: str, token: str) -> int:
    try:
        ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    except HTTPClientError as exc:
        return exc.code
    ws.close()
    return 101


def me_status(gw: Gateway, token: str) -> int:
    return httpx.get(f"{gw.url}/api/v1/me", headers={"Authorization": f"token {token}"}).status_code


def call(fn: Any, *args: Any) -> Any:
    return asyncio.to_thread(fn, *args)


def test_revoking_a_token_closes_its_kernel_socket(gateway: Gateway, targets: Proc) -> None:
    token, token_id = user_token(gateway, "carol")
    kernel_id = start_kernel(gateway, token)

    def revoke() -> dict[str, Any]:
        with gateway.api(token) as api:  # carol revokes the token she is using
            resp = api.delete(f"/api/v1/tokens/{token_id}")
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def scenario() -> None:
        async with channels(gateway, kernel_id, token) as kc:
            ex = await kc.execute("select 41 + 1 as answer")
            assert ex.status == "ok" and "42" in ex.text
            body = await call(revoke)
            assert body["state"] == "revoked" and body["closed_sockets"] == 1
            assert await closed_within(kc, 3) < 3
            assert kc.ws.close_code == CLOSE_REVOKED and "revoked" in kc.ws.close_reason
        assert await refused_status(kc.ws_url, token) == 401

    asyncio.run(scenario())
    assert me_status(gateway, token) == 401


def test_deactivating_a_user_closes_their_kernel_socket(gateway: Gateway, targets: Proc) -> None:
    token, _ = user_token(gateway, "dave")
    kernel_id = start_kernel(gateway, token)

    def deactivate() -> None:
        with gateway.admin() as api:
            assert api.delete("/api/v1/users/dave").status_code == 200

    async def scenario() -> None:
        async with channels(gateway, kernel_id, token) as kc:
            assert (await kc.execute("select 1")).status == "ok"
            await call(deactivate)
            assert await closed_within(kc, 3) < 3
            assert kc.ws.close_code == CLOSE_REVOKED and "deactivated" in kc.ws.close_reason
        assert await refused_status(kc.ws_url, token) == 401

    asyncio.run(scenario())
    assert me_status(gateway, token) == 401


def test_a_token_revoked_elsewhere_is_found_by_the_periodic_recheck(gateway: Gateway, targets: Proc) -> None:
    """Another replica (or the CLI on the gateway host) writes the revocation: no handler here knows."""
    token, token_id = user_token(gateway, "erik")
    kernel_id = start_kernel(gateway, token)

    async def scenario() -> None:
        async with channels(gateway, kernel_id, token) as kc:
            assert (await kc.execute("select 1")).status == "ok"
            await call(db_execute, gateway, "UPDATE tokens SET revoked_at = '2026-01-01 00:00:00.000000' WHERE id = ?",
                       (token_id,))
            assert await closed_within(kc, 5) < 5  # c.Gateway.socket_recheck_interval = 1.0
            assert kc.ws.close_code == CLOSE_REVOKED

    asyncio.run(scenario())
    assert me_status(gateway, token) == 401


def test_a_held_cell_does_not_run_once_its_token_is_revoked(gateway: Gateway, targets: Proc) -> None:
    token, token_id = user_token(gateway, "hank", ("devs",))
    reviewer = gateway.user("rita", ("dba",))
    kernel_id = start_kernel(gateway, token, "rlite-reviewed")

    async def scenario() -> int:
        async with channels(gateway, kernel_id, token) as kc:
            msg = kc.send_execute("insert into t values (1)")
            display = await kc.wait_for(msg["header"]["msg_id"], "display_data")
            task_id = task_id_from(display)
            with gateway.api(token) as api:
                assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 200
            assert await closed_within(kc, 3) < 3
            return task_id

    task_id = asyncio.run(scenario())
    with gateway.api(reviewer) as api:
        resp = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "fine"})
        assert resp.status_code == 200, resp.text

    def final() -> dict[str, Any] | None:
        with gateway.admin() as api:
            task = api.get(f"/api/v1/tasks/{task_id}").json()
        return task if task["status"] not in ("pending_review", "approved") else None
    task = wait_for(final, 10, "the held task to end")
    assert task["status"] == "cancelled" and task["started_at"] is None
    assert "revoked" in task["decision_comment"]
    assert db_execute(gateway, "SELECT count(*) FROM audit_events WHERE task_id = ? AND action = 'task.cancelled'",
                      (task_id,)) == [(1,)]


def test_revoking_an_agent_token_closes_the_agent_socket_for_good(gateway: Gateway, targets: Proc, oidc_workdir: Path) -> None:
    gateway.set_target("rlite-b")
    config = agent_config(oidc_workdir / "agent-b.toml", "agent-b",
                          {"rlite-b": {"kind": "sql", "url": f"sqlite:///{oidc_workdir / 'rlite.db'}"}})
    token, token_id = bind_agent(gateway, config)
    proc = spawn([CELLGATE, "agent", "--gateway", gateway.url, "--token", token, "--config", str(config)],
                 oidc_workdir / "agent-b.log")
    try:
        wait_online(gateway, ["rlite-b"], proc.log)

        def agents() -> set[str]:
            with gateway.admin() as api:
                return {a["agent_id"] for a in api.get("/api/v1/agents").json()["agents"]}
        assert "agent-b" in agents()
        with gateway.admin() as api:
            listed = {t["id"]: t for t in api.get("/api/v1/tokens", params={"kind": "agent"}).json()["tokens"]}
            assert listed[token_id]["kind"] == "agent" and listed[token_id]["state"] == "active"
            resp = api.delete(f"/api/v1/tokens/{token_id}")
        assert resp.status_code == 200 and resp.json()["closed_sockets"] == 1
        started = time.monotonic()
        wait_for(lambda: "agent-b" not in agents(), 5, "agent-b to be disconnected")
        assert time.monotonic() - started < 5
        wait_for(lambda: "refused the agent token (HTTP 401)" in proc.log.read_text(), 15, "the agent to log 401")
        assert "agent-b" not in agents() and proc.proc.poll() is None  # it keeps trying, and keeps being refused
    finally:
        proc.stop()
