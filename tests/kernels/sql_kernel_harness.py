"""A harness for the SQL kernel: real kernels (subprocesses) against real databases.

PostgreSQL and MariaDB must be running (see the markers in pyproject.toml); if they are not,
the tests fail with a message saying which server is missing -- they never skip.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from databases import MARIADB_URL, PG_URL, mariadb
from jupyter_client.manager import KernelManager

from cellgate.kernels.specs import CellgateKernelSpecManager
from cellgate.kernels.sql.split import split_statements
from cellgate.kernels.sql.target import parse_target_url

TABLE = "application/vnd.dataresource+json"


def require_postgres() -> None:
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except Exception as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_URL} ({exc}); start it, these tests never skip")


def require_mariadb() -> None:
    try:
        mariadb(connect_timeout=3).close()
    except Exception as exc:
        pytest.fail(f"MariaDB is not reachable at {MARIADB_URL} ({exc}); start it, these tests never skip")


@dataclass
class Run:
    """What one ``execute_request`` produced."""

    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return self.reply["status"]

    @property
    def tables(self) -> list[dict[str, Any]]:
        return [o["content"]["data"] for o in self.outputs if o["msg_type"] in ("execute_result", "display_data")]

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [o["content"] for o in self.outputs if o["msg_type"] == "error"]

    @property
    def stdout(self) -> str:
        return "".join(o["content"]["text"] for o in self.outputs if o["msg_type"] == "stream")

    def everything(self) -> str:
        """All output and the reply as one string (for "the secret is nowhere" checks)."""
        return repr(self.reply) + repr([o["content"] for o in self.outputs])


class SQLKernelHandle:
    """A running ``cellgate-sql`` kernel with a blocking client."""

    def __init__(self, url: str, **env: str) -> None:
        self.dialect = parse_target_url(url).dialect if url else "sqlite"
        self.km = KernelManager(kernel_name="cellgate-sql", kernel_spec_manager=CellgateKernelSpecManager())
        self.km.start_kernel(env={**os.environ, "CELLGATE_TARGET_URL": url, **env})
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=30)

    def run(self, code: str, *, interrupt_after: float | None = None, timeout: float = 30,
            metadata: dict[str, Any] | None = None) -> Run:
        if metadata is None:
            msg_id = self.kc.execute(code)
        else:  # as the gateway sends it: the request's metadata carries "cellgate"
            content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                       "allow_stdin": False, "stop_on_error": True}
            msg = self.kc.session.msg("execute_request", content, metadata=metadata)
            self.kc.shell_channel.send(msg)
            msg_id = msg["header"]["msg_id"]
        started = time.monotonic()
        if interrupt_after is not None:
            time.sleep(interrupt_after)
            self.km.interrupt_kernel()
            started = time.monotonic()
        reply = self.kc.get_shell_msg(timeout=timeout)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=timeout)
        run = Run(reply["content"], seconds=time.monotonic() - started)
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return run
            if msg["msg_type"] in ("stream", "display_data", "execute_result", "error"):
                run.outputs.append(msg)

    def ok(self, code: str, **kwargs: Any) -> Run:
        run = self.run(code, **kwargs)
        assert run.status == "ok", run.reply
        return run

    def gated(self, code: str, mode: str = "read-only", **kwargs: Any) -> Run:
        """Run ``code`` with the metadata the gateway would send for it in ``mode``."""
        statements = split_statements(code, self.dialect)
        return self.run(code, metadata={"cellgate": {"task_id": 1, "statements": statements, "mode": mode}}, **kwargs)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
