"""Policy through the real gateway: apply as code, auto-approval, denial, estimates, expiry, limits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from databases import mariadb
from harness import CELLGATE, PG_ADMIN, Gateway, Jupyter, cli, connect, start_kernel, task_id_from, wait_until
from readonly_roles import mariadb_readonly_url

pytestmark = [pytest.mark.postgres]

POLICY = """
[groups.dba]
members = ["reviewer", "reviewer2", "boss"]

[targets.pg]
description = "PostgreSQL (tests)"
auto_approve = "read-only"

[targets.pg.review]
groups = ["dba"]
mode = "any"

[targets.pg.deny]
statements = ["DROP", "TRUNCATE"]
tables = ["secrets"]
"""

OPEN = """
[targets.pg]
description = "PostgreSQL (tests)"
"""


def apply(gw: Gateway, tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return cli(gw, gw.admin_token, "apply", "-f", str(path), *extra)


@pytest.fixture
def pg_policy(gateway: Gateway, agent, users: dict, tmp_path: Path):
    out = apply(gateway, tmp_path, POLICY)
    assert out.returncode == 0, out.stderr
    yield
    assert apply(gateway, tmp_path, OPEN).returncode == 0


def test_apply_is_idempotent_prints_changes_and_refuses_a_bad_file(gateway: Gateway, agent, users: dict, tmp_path: Path) -> None:
    first = apply(gateway, tmp_path, POLICY)
    assert first.returncode == 0, first.stderr
    second = apply(gateway, tmp_path, POLICY)
    assert second.returncode == 0 and second.stdout == "" and "nothing to change" in second.stderr
    dry = apply(gateway, tmp_path, POLICY.replace('mode = "any"', 'mode = "all"'), "--dry-run")
    assert "would change: target pg: review.mode: 'any' → 'all'" in dry.stdout
    assert apply(gateway, tmp_path, POLICY).stdout == ""  # the dry run changed nothing
    bad = apply(gateway, tmp_path, POLICY.replace('mode = "any"', 'mode = "most"') + '\n[groups.new]\nmembers = ["x"]\n')
    assert bad.returncode == 2
    line = POLICY.splitlines().index('mode = "any"') + 1
    assert f"policy.toml:{line}: targets.pg.review.mode: must be one of" in bad.stderr and "nothing was changed" in bad.stderr
    groups = json.loads(cli(gateway, gateway.admin_token, "groups", "list", "--json").stdout)["groups"]
    assert "new" not in [g["name"] for g in groups]  # refused as a whole
    syntax = apply(gateway, tmp_path, "[targets.pg\n")
    assert syntax.returncode == 2 and "policy.toml:1" in syntax.stderr
    shown = cli(gateway, users["dev"], "policy", "show", "pg")
    assert "reviewers:      dba (one approval from any group)" in shown.stdout and "DROP" in shown.stdout
    assert apply(gateway, tmp_path, OPEN).returncode == 0


def test_reads_run_at_once_writes_wait_and_drop_is_denied(gateway: Gateway, jupyter: Jupyter, users: dict, pg_policy) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS policy_accounts")
        conn.execute("CREATE TABLE policy_accounts (id int primary key, status text)")
        conn.execute("INSERT INTO policy_accounts SELECT g, 'open' FROM generate_series(1, 400) g")
        conn.execute("ANALYZE policy_accounts")
    kid = start_kernel(jupyter, "pg")

    async def body() -> None:
        async with connect(jupyter, kid) as kc:
            read = await kc.execute("SELECT count(*) AS n FROM policy_accounts")
            assert read.status == "ok" and "400" in read.text
            assert not read.of_type("display_data") or "awaits review" not in json.dumps(read.msgs)
            denied = await kc.execute("DROP TABLE policy_accounts")
            assert denied.status == "error" and denied.reply["content"]["ename"] == "TaskDenied"
            assert "DROP statements are denied" in denied.reply["content"]["evalue"]
            write = kc.send_execute("UPDATE policy_accounts SET status = 'closed' WHERE id <= 100")
            display = await kc.wait_for(write["header"]["msg_id"], "display_data")
            text = display["content"]["data"]["text/plain"]
            assert "awaits review by dba" in text and "risk medium" in text
            assert "estimated rows affected: 100" in text
            assert "still needed: an approval from any of dba" in text
            task_id = task_id_from(display)
            with gateway.api(users["reviewer"]) as api:
                task = api.get(f"/api/v1/tasks/{task_id}").json()
                assert task["row_estimate"] == 100 and task["risk"]["level"] == "medium"
                assert task["missing_approvals"] == ["an approval from any of dba"]
                assert api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve"}).status_code == 200
            done = await kc.collect(write["header"]["msg_id"])
            assert done.status == "ok" and "UPDATE 100" in done.text
    asyncio.run(body())
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("DROP TABLE policy_accounts")


def test_reviewers_see_risk_in_the_terminal(gateway: Gateway, agent, users: dict, pg_policy) -> None:
    env = {**os.environ, "CELLGATE_URL": gateway.url, "CELLGATE_TOKEN": users["dev"], "CELLGATE_CONFIG_DIR": "/nonexistent"}
    proc = subprocess.Popen([CELLGATE, "run", "--target", "pg", "-e", "DELETE FROM pg_temp_never_there"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        task = wait_until(lambda: json.loads(cli(gateway, users["reviewer"], "reviews", "--json").stdout)["tasks"], 30, "inbox")[0]
        assert task["risk"]["level"] == "critical" and "delete_without_where" in task["risk"]["flags"]
        listing = cli(gateway, users["reviewer"], "reviews").stdout
        assert "critical" in listing
        shown = cli(gateway, users["reviewer"], "task", "show", str(task["id"])).stdout
        assert "critical" in shown and "no WHERE" in shown and "an approval from any of dba" in shown
        assert cli(gateway, users["reviewer"], "review", "reject", str(task["id"]), "--comment", "no").returncode == 0
        proc.communicate(timeout=60)
        assert proc.returncode == 3
    finally:
        proc.kill()
        proc.communicate()


def test_an_approval_that_expired_before_the_task_started_cannot_run(gateway: Gateway, agent, users: dict, tmp_path: Path) -> None:
    # a target no agent serves: the approved script waits for one, past its approval window
    text = '[targets.nowhere]\n[targets.nowhere.review]\ngroups = ["dba"]\n[targets.nowhere.limits]\napproval_window = 2\n'
    assert apply(gateway, tmp_path, text).returncode == 0
    env = {**os.environ, "CELLGATE_URL": gateway.url, "CELLGATE_TOKEN": users["dev"], "CELLGATE_CONFIG_DIR": "/nonexistent"}
    proc = subprocess.Popen([CELLGATE, "run", "--target", "nowhere", "-e", "SELECT 1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        task = wait_until(lambda: json.loads(cli(gateway, users["reviewer"], "reviews", "--json").stdout)["tasks"], 30, "inbox")[0]
        assert cli(gateway, users["reviewer"], "review", "approve", str(task["id"])).returncode == 0
        proc.communicate(timeout=30)
        assert proc.returncode == 5
        shown = json.loads(cli(gateway, users["dev"], "task", "show", str(task["id"]), "--json").stdout)
        assert shown["status"] == "expired" and shown["started_at"] is None
    finally:
        proc.kill()
        proc.communicate()


def test_time_and_output_limits(gateway: Gateway, agent, users: dict, tmp_path: Path) -> None:
    text = '[targets.py]\n[targets.py.limits]\ntimeout = 2\nmax_bytes = 2000\n'
    assert apply(gateway, tmp_path, text).returncode == 0
    try:
        t0 = time.monotonic()
        out = cli(gateway, users["dev"], "run", "--target", "py", "-e", "import time; time.sleep(30)")
        assert out.returncode == 6, out.stderr
        assert time.monotonic() - t0 < 20 and "limit of 2 s" in out.stderr
        out = cli(gateway, users["dev"], "run", "--target", "py", "-e", "for i in range(2000): print('x' * 50)")
        assert out.returncode == 0
        assert len(out.stdout) < 3000 and "output truncated" in out.stderr
    finally:
        assert apply(gateway, tmp_path, '[targets.py]\n').returncode == 0


@pytest.mark.mariadb
def test_mariadb_row_estimate_before_review(gateway: Gateway, agent, users: dict, tmp_path: Path) -> None:

    conn = mariadb()
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS policy_cards")
        cur.execute("CREATE TABLE policy_cards (id INT PRIMARY KEY, status VARCHAR(10))")
        cur.executemany("INSERT INTO policy_cards VALUES (%s, 'active')", [(i,) for i in range(1, 301)])
    mariadb_readonly_url()  # the read-only user is granted table by table: re-run after a new table, as documented
    assert apply(gateway, tmp_path,
                 '[targets.maria]\nauto_approve = "read-only"\n[targets.maria.review]\ngroups = ["dba"]\n').returncode == 0
    env = {**os.environ, "CELLGATE_URL": gateway.url, "CELLGATE_TOKEN": users["dev"], "CELLGATE_CONFIG_DIR": "/nonexistent"}
    proc = subprocess.Popen([CELLGATE, "run", "--target", "maria", "-e", "DELETE FROM policy_cards WHERE id <= 50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        task = wait_until(lambda: json.loads(cli(gateway, users["reviewer"], "reviews", "--json").stdout)["tasks"], 30, "inbox")[0]
        assert task["row_estimate"] is not None and 40 <= task["row_estimate"] <= 60, task["row_estimate"]
        with conn.cursor() as cur:  # EXPLAIN never ran the DELETE
            cur.execute("SELECT count(*) FROM policy_cards")
            assert cur.fetchone()[0] == 300
        assert cli(gateway, users["reviewer"], "review", "approve", str(task["id"])).returncode == 0
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM policy_cards")
            assert cur.fetchone()[0] == 250
    finally:
        proc.kill()
        proc.communicate()
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS policy_cards")
        conn.close()
        assert apply(gateway, tmp_path, "[targets.maria]\n").returncode == 0
