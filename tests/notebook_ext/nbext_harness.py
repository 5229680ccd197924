"""The real gateway (and optionally an agent) and `jupyter server` as subprocesses, on free ports."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
CELLGATE = str(BIN / "cellgate")
JUPYTER = str(BIN / "jupyter")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, *, token: str | None = None, method: str = "GET", body: Any = None,
            timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body or text); HTTP errors are returned, not raised."""
    headers = {"Authorization": f"token {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args!r} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Gateway:
    """A real gateway with an admin, user ``dev`` (and its token) and target ``payments``."""

    tmp: Path
    port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cleanup: list[Path] = field(default_factory=list)
    admin_token: str = ""
    dev_token: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.tmp / "gw.db"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=self.tmp)
        self.procs.append(proc)
        return proc, log

    def start(self) -> None:
        db_url = f"sqlite:///{self.db_path}"
        out = subprocess.run([CELLGATE, "init-admin", "admin", "--db-url", db_url], capture_output=True, text=True,
                             check=True, timeout=60)
        self.admin_token = out.stdout.strip().splitlines()[-1]
        proc, log = self.spawn("gateway", [CELLGATE, "gateway", "--port", str(self.port), "--db-url", db_url])
        wait_http(f"{self.url}/api/v1/", proc, log)
        self.api("POST", "/api/v1/users", {"name": "dev"})
        self.dev_token = self.api("POST", "/api/v1/users/dev/tokens", {})["token"]
        self.api("PUT", "/api/v1/targets/payments", {"review_groups": [], "kind": "sql", "dialect": "sqlite"})

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, data = request(self.url + path, token=self.admin_token, method=method, body=body)
        assert status < 300, (method, path, status, data)
        return data

    def start_agent(self) -> None:
        # the agent runs the kernel as an unprivileged uid of group 62000 (the tests run as
        # root): the database lives where that uid can reach it, group-writable
        shared = Path(tempfile.mkdtemp(prefix="cellgate-nbext-"))
        self.cleanup.append(shared)
        shared.chmod(0o711)
        (shared / "data").mkdir()
        os.chown(shared / "data", 0, 62000)
        (shared / "data").chmod(0o2770)
        db = shared / "data" / "payments.db"
        sqlite3.connect(db).close()
        os.chown(db, 0, 62000)
        db.chmod(0o660)
        config = self.tmp / "agent.toml"
        config.write_text(f'[agent]\nid = "test-agent"\nkernel_uids = "61000-61999"\n\n'
                          f'[targets.payments]\nkind = "sql"\nurl = "sqlite:///{db}"\nkernel_gid = 62000\n')
        agent_token = self.api("POST", "/api/v1/agent-tokens", {"name": "test-agent", "targets": ["payments"]})["token"]
        proc, log = self.spawn("agent", [CELLGATE, "agent", "--gateway", self.url, "--config", str(config)],
                               env={"CELLGATE_AGENT_TOKEN": agent_token})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            targets = self.api("GET", "/api/v1/targets")["targets"]
            if any(t["name"] == "payments" and t["online"] for t in targets):
                return
            time.sleep(0.2)
        raise AssertionError(f"the agent did not come online:\n{log.read_text()}")

    def kernel_paths(self) -> dict[str, str | None]:
        with sqlite3.connect(self.db_path) as conn:
            return dict(conn.execute("SELECT id, notebook_path FROM kernels").fetchall())

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class JupyterServer:
    """``jupyter server`` with the cellgate extension enabled on the command line."""

    tmp: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    token: str = "jupyter-test-token"
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.tmp / f"root-{self.port}"

    def start(self) -> None:
        root = self.root
        root.mkdir()
        self.log = self.tmp / f"jupyter-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELLGATE_", "JUPYTER_GATEWAY"))}
        env.update(JUPYTER_CONFIG_DIR=str(self.tmp / "jupyter-config"), JUPYTER_RUNTIME_DIR=str(self.tmp / "runtime"),
                   CELLGATE_CONFIG_DIR=str(self.tmp / "cellgate-config"))
        env.update(self.env)
        argv = [JUPYTER, "server", "--allow-root", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--port-retries=0", f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                '--ServerApp.jpserver_extensions={"cellgate.notebook_ext": True}']
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.tmp)
        wait_http(f"{self.url}/api/status", self.proc, self.log)

    def get(self, path: str, *, auth: bool = True, method: str = "GET", body: Any = None) -> tuple[int, Any]:
        return request(self.url + path, token=self.token if auth else None, method=method, body=body)

    def log_text(self) -> str:
        assert self.log is not None
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
