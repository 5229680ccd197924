"""`cellgate run` and the review commands against the real gateway, agent and databases."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from harness import CELLGATE, Gateway, cli, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.mariadb]


def test_run_streams_output_and_exits_zero(gateway: Gateway, agent, users: dict) -> None:
    out = cli(gateway, users["dev"], "run", "--target", "pg", "-e", "SELECT 'hello' AS greeting")
    assert out.returncode == 0, out.stderr
    assert "hello" in out.stdout
    out = cli(gateway, users["dev"], "run", "--target", "py", "-f", "-",
              stdin="import time\nprint('first', flush=True)\ntime.sleep(0.2)\nprint('second')\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("first") < out.stdout.index("second")


def test_remote_failure_fails_locally(gateway: Gateway, agent, users: dict) -> None:
    out = cli(gateway, users["dev"], "run", "--target", "maria", "-e", "SELECT * FROM no_such_table_here")
    assert out.returncode == 1
    assert "no_such_table_here" in out.stderr
    out = cli(gateway, users["dev"], "run", "--target", "py", "-e", "raise SystemError('boom')")
    assert out.returncode == 1 and "boom" in out.stderr


def test_review_from_the_terminal(gateway: Gateway, agent, users: dict) -> None:
    gateway.set_target("py", review_groups=["dba"])
    try:
        env = {**os.environ, "CELLGATE_URL": gateway.url, "CELLGATE_TOKEN": users["dev"], "CELLGATE_CONFIG_DIR": "/nonexistent"}
        proc = subprocess.Popen([CELLGATE, "run", "--target", "py", "--why", "SUP-9", "-e", "print('approved run')"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        inbox = wait_until(lambda: json.loads(cli(gateway, users["reviewer"], "reviews", "--json").stdout)["tasks"], 30, "review inbox")
        task = inbox[0]
        assert task["why"] == "SUP-9" and task["user"] == "dev"
        own = cli(gateway, users["dev"], "review", "approve", str(task["id"]))
        assert own.returncode == 8 and "author" in own.stderr
        ok = cli(gateway, users["reviewer"], "review", "approve", str(task["id"]), "--comment", "fine")
        assert ok.returncode == 0, ok.stderr
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert "approved run" in stdout and "awaiting review" in stderr
        shown = json.loads(cli(gateway, users["dev"], "task", "show", str(task["id"]), "--json").stdout)
        assert shown["status"] == "succeeded" and shown["reviews"][0]["user"] == "reviewer"

        proc = subprocess.Popen([CELLGATE, "run", "--target", "py", "-e", "print('never')"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        task = wait_until(lambda: json.loads(cli(gateway, users["reviewer"], "reviews", "--json").stdout)["tasks"], 30, "inbox")[0]
        no = cli(gateway, users["reviewer"], "review", "reject", str(task["id"]), "--comment", "not today")
        assert no.returncode == 0, no.stderr
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 3
        assert "never" not in stdout and "not today" in stderr and "reviewer" in stderr
    finally:
        gateway.set_target("py")


def test_denied_unknown_target_and_bad_token(gateway: Gateway, agent, users: dict) -> None:
    gateway.set_target("lite", submit_groups=["dba"])
    try:
        out = cli(gateway, users["dev"], "run", "--target", "lite", "-e", "SELECT 1")
        assert out.returncode == 4, out.stderr
        assert "dev may not run code on lite" in out.stderr
    finally:
        gateway.set_target("lite")
    out = cli(gateway, users["dev"], "run", "--target", "nope", "-e", "SELECT 1")
    assert out.returncode == 8 and "nope" in out.stderr
    out = cli(gateway, "cg_not_a_token", "tasks")
    assert out.returncode == 7 and "cg_not_a_token" not in out.stderr
    out = cli(gateway, users["dev"], "run", "--target", "pg", "-e", "SELECT 1", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["status"] == "succeeded"


def test_listing_commands_take_json(gateway: Gateway, agent, users: dict) -> None:
    tasks = json.loads(cli(gateway, users["dev"], "tasks", "--json").stdout)["tasks"]
    assert tasks and {"id", "status", "target", "user", "code"} <= set(tasks[0])
    targets = json.loads(cli(gateway, users["dev"], "targets", "--json").stdout)["targets"]
    assert {"pg", "maria", "lite", "py"} <= {t["name"] for t in targets}
    export = cli(gateway, gateway.admin_token, "audit", "export", "--format", "jsonl")
    events = [json.loads(line) for line in export.stdout.splitlines()]
    assert any(e["action"] == "task.succeeded" for e in events)
    assert all(users["dev"] not in line for line in export.stdout.splitlines())
    csv_out = cli(gateway, gateway.admin_token, "audit", "export", "--format", "csv")
    assert csv_out.stdout.startswith("id,ts,actor,action")
    verify = cli(gateway, gateway.admin_token, "audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert cli(gateway, users["dev"], "audit", "verify").returncode == 8
