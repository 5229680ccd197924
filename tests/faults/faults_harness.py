"""Fault tests' helpers (the fixtures are in conftest.py): a real gateway, a real agent (through a TCP
proxy the test can cut), real kernels and a real PostgreSQL target table that each test checks at the
end (the approved write happened at most once).

The gateway's grace for a disconnected agent is short (``GRACE`` seconds instead of 30), so "an agent back
within the grace / after it" takes seconds; the agent reconnects quickly (backoff capped at 1 s).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))

from harness import CELLGATE, PG_ADMIN, Gateway, Proc, spawn, wait_online, wait_until
from tcp_proxy import TcpProxy

#: seconds the gateway waits for a disconnected agent (Gateway.agent_grace; 30 by default)
GRACE = 6.0
TARGET_PG = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")


@dataclass
class World:
    gw: Gateway
    proxy: TcpProxy
    workdir: Path
    config: Path
    agent_settings: Path
    token: str
    dev: str
    table: str
    #: the agent's own target (a new one per test: the tasks listed are this test's)
    target: str
    agent: Proc | None = None
    runs: int = 0

    def start_agent(self) -> Proc:
        """The agent, dialing the gateway through the proxy; the same state directory every time."""
        self.runs += 1
        self.agent = spawn([CELLGATE, "agent", "--gateway", f"http://127.0.0.1:{self.proxy.port}", "--token", self.token,
                            "--config", str(self.config), "--config-file", str(self.agent_settings)],
                           self.workdir / f"agent-{self.runs}.log")
        wait_online(self.gw, [self.target], self.agent.log)
        return self.agent

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.proc.kill()
        self.agent.proc.wait()

    def submit(self, code: str) -> int:
        with self.gw.api(self.dev) as api:
            r = api.post("/api/v1/tasks", json={"target": self.target, "code": code, "why": "fault test"})
            assert r.status_code == 201, r.text
            return int(r.json()["id"])

    def task(self, task_id: int) -> dict[str, Any]:
        with self.gw.api(self.dev) as api:
            r = api.get(f"/api/v1/tasks/{task_id}")
            assert r.status_code == 200, r.text
            return dict(r.json())

    def outputs(self, task_id: int) -> list[dict[str, Any]]:
        with self.gw.api(self.dev) as api:
            r = api.get(f"/api/v1/tasks/{task_id}/output", params={"after": 0})
            assert r.status_code == 200, r.text
            return list(r.json()["outputs"])

    def text(self, task_id: int) -> str:
        return "".join(o["output"].get("text", "") for o in self.outputs(task_id))

    def wait_status(self, task_id: int, statuses: set[str], timeout: float) -> dict[str, Any]:
        return dict(wait_until(lambda: (t := self.task(task_id))["status"] in statuses and t, timeout,
                               f"task {task_id} {statuses}", self.agent.log if self.agent else None))

    def rows(self, tag: str) -> int:
        """How many times the task tagged ``tag`` wrote its row in the target table."""
        with psycopg.connect(TARGET_PG, autocommit=True) as conn:
            count = conn.execute(f"SELECT count(*) FROM {self.table} WHERE tag = %s", (tag,)).fetchone()
            assert count is not None
            return int(count[0])

    def writer(self, tag: str, after: str = "", before: str = "") -> str:
        """Python for the ``py`` target: ``before``, insert one row tagged ``tag``, ``after``."""
        return (f"import psycopg, sys, time\n{before}\n"
                f"with psycopg.connect({TARGET_PG!r}, autocommit=True) as c:\n"
                f"    c.execute(\"INSERT INTO {self.table} (tag) VALUES (%s)\", ({tag!r},))\n"
                f"print('wrote {tag}', flush=True)\n{after}\n")


def settle(seconds: float) -> None:
    """Wait on purpose: a fault must last this long (a link cut, an agent away)."""
    time.sleep(seconds)
