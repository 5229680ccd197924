"""A real gateway process on loopback for the input tests: a store (SQLite file or a PostgreSQL
database), an admin, a user, a target, an agent token and a task waiting for review."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from gateway_harness import terminate, wait_answering

BIN = Path(sys.executable).parent
#: what the gateway logs for a 5xx: its own "unhandled error", tornado's uncaught exception or access line
SERVER_ERROR = re.compile(r"unhandled error|Uncaught exception|Traceback|\b5\d\d (GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) ")

#: short waits, so that a generated ``wait=…`` cannot hold a test for long
CONFIG = "c.Gateway.long_poll_max = 0.5\nc.Gateway.task_poll_interval = 0.2\n"


@dataclass
class LiveGateway:
    url: str
    db_url: str
    admin_token: str
    user_token: str
    agent_token: str
    task_id: int
    token_ids: tuple[int, ...]  # the admin's, the user's and the agent's
    log: Path

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def user(self) -> httpx.Client:
        return self.client(self.user_token)

    def assert_alive(self) -> None:
        assert httpx.get(f"{self.url}/api/v1", timeout=5).status_code == 200, self.log.read_text()[-3000:]

    def unhandled(self) -> list[str]:
        """Lines of the gateway's log that report an unhandled error (a 500 with a traceback behind it)."""
        return [line for line in self.log.read_text().splitlines() if SERVER_ERROR.search(line)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url} → {resp.status_code} {resp.text}"
    return resp.json()


@contextmanager
def live_gateway(workdir: Path, db_url: str) -> Iterator[LiveGateway]:
    """A gateway on ``db_url`` (migrated by ``init-admin``), seeded; stopped (SIGTERM) at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    config = workdir / "cellgate_config.py"
    config.write_text(CONFIG)
    init = subprocess.run([str(BIN / "cellgate"), "init-admin", "admin", "--db-url", db_url, "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=workdir)
    assert init.returncode == 0, init.stderr
    admin_token = init.stdout.strip().splitlines()[-1]
    port = _free_port()
    log = workdir / "gateway.log"
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "cellgate"), "gateway", "--port", str(port), "--db-url", db_url,
                                 "--public-url", url, "--config", str(config)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_answering(proc, url, log)
        with httpx.Client(base_url=url, headers={"Authorization": f"token {admin_token}"}, timeout=30) as adm:
            _ok(adm.post("/api/v1/users", json={"name": "user1"}), 201)
            _ok(adm.post("/api/v1/groups", json={"name": "dba"}), 201)
            _ok(adm.put("/api/v1/groups/dba/members/admin"))
            admin_token_id = next(t["id"] for t in _ok(adm.get("/api/v1/tokens"))["tokens"] if t["current"])
            made = _ok(adm.post("/api/v1/users/user1/tokens", json={"note": "inputs"}), 201)
            user_token, user_token_id = made["token"], made["id"]
            _ok(adm.put("/api/v1/targets/t1", json={"description": "inputs", "review_groups": ["dba"],
                                                     "kind": "sql", "dialect": "sqlite"}))
            made = _ok(adm.post("/api/v1/agent-tokens", json={"name": "agent1", "targets": ["t1"]}), 201)
            agent_token, agent_token_id = made["token"], made["id"]
        with httpx.Client(base_url=url, headers={"Authorization": f"token {user_token}"}, timeout=30) as usr:
            task = _ok(usr.post("/api/v1/tasks", json={"target": "t1", "code": "select 1", "why": "inputs"}), 201)
        yield LiveGateway(url=url, db_url=db_url, admin_token=admin_token, user_token=user_token,
                          agent_token=agent_token, task_id=task["id"],
                          token_ids=(admin_token_id, user_token_id, agent_token_id), log=log)
    finally:
        terminate(proc)
