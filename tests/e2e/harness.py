"""Real processes on loopback: a gateway, an agent, a jupyter_server in gateway mode.

The gateway's store is PostgreSQL (a fresh database per test session) unless
``CELLGATE_TEST_STORE=sqlite``. SQL targets are the PostgreSQL and MariaDB servers of this
machine and a SQLite file. Every agent runs its kernels isolated, each as its own uid of
``KERNEL_UIDS`` (the tests run as root); ``agent_config`` moves a SQLite target's file where
those uids can write it (``share_sqlite``) and sets ``kernel_gid = KERNEL_GID``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from databases import MARIADB_URL, PG_URL

BIN = Path(sys.executable).parent
CELLGATE = str(BIN / "cellgate")
PG_ADMIN = PG_URL  # this pytest process's target database (tests/databases.py)
MARIADB = MARIADB_URL
KERNEL_UIDS = "61000-61999"
KERNEL_GID = 62000  # the group of shared SQLite files (outside KERNEL_UIDS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float, what: str, log: Path | None = None) -> Any:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried
            last = exc
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s (last error: {last})\n{tail}")


def create_pg_database() -> str:
    import psycopg

    name = f"cellgate_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
    fh = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd)
    fh.close()
    return Proc(proc, log)


@dataclass
class Gateway:
    url: str
    db_url: str
    admin_token: str
    proc: Proc
    tokens: dict[str, str] = field(default_factory=dict)

    def api(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def admin(self) -> httpx.Client:
        return self.api(self.admin_token)

    def user(self, name: str, groups: tuple[str, ...] = (), is_admin: bool = False) -> str:
        """Create ``name`` (once) in ``groups``; return a token for it."""
        if name in self.tokens:
            return self.tokens[name]
        with self.admin() as api:
            r = api.post("/api/v1/users", json={"name": name, "is_admin": is_admin})
            assert r.status_code in (201, 409), r.text
            for group in groups:
                api.post("/api/v1/groups", json={"name": group})
                r = api.put(f"/api/v1/groups/{group}/members/{name}")
                assert r.status_code == 200, r.text
            r = api.post(f"/api/v1/users/{name}/tokens", json={"note": "test"})
            assert r.status_code == 201, r.text
            self.tokens[name] = r.json()["token"]
        return self.tokens[name]

    def set_target(self, name: str, review_groups: list[str] | None = None, submit_groups: list[str] | None = None) -> None:
        with self.admin() as api:
            r = api.put(f"/api/v1/targets/{name}", json={"review_groups": review_groups or [],
                                                         "submit_groups": submit_groups or []})
            assert r.status_code == 200, r.text


def start_gateway(workdir: Path, db_url: str, port: int | None = None, config: str = "",
                  env: dict[str, str] | None = None) -> Gateway:
    """A gateway on ``db_url`` with an admin; ``config``: the text of its cellgate_config.py; ``env``: more
    environment for it (secrets such as ``CELLGATE_SLACK_BOT_TOKEN``)."""
    port = port or free_port()
    config_file = workdir / f"gateway-{port}-config.py"
    config_file.write_text(config)
    out = subprocess.run([CELLGATE, "init-admin", "admin", "--db-url", db_url, "--config", str(config_file)],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    log = workdir / f"gateway-{port}.log"
    url = f"http://127.0.0.1:{port}"
    proc = spawn([CELLGATE, "gateway", "--port", str(port), "--db-url", db_url, "--public-url", url,
                  "--config", str(config_file), "--log-level", "INFO"], log, env=env)
    gw = Gateway(url=url, db_url=db_url, admin_token=token, proc=proc)
    wait_until(lambda: httpx.get(f"{url}/api/v1/").status_code == 200, 30, "gateway", log)
    return gw


def share_sqlite(url: str) -> str:
    """Make the SQLite file of ``url`` one the kernels' uids can use; return the URL to configure.

    Kernels run as unprivileged uids of group ``KERNEL_GID`` and cannot reach pytest's tmp_path
    (root's 0700). The file (created empty when missing) moves to a directory they can reach and
    the group can write (SQLite writes its journal next to the file), mode 0660, and a symlink
    is left at the old path, so the test goes on reading and writing the same file there.
    """
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return url
    old = Path(url[len("sqlite:///"):])
    if old.is_symlink():  # shared already (two agents on one file)
        return f"sqlite:///{old.resolve()}"
    root = Path(tempfile.mkdtemp(prefix="cellgate-e2e-sqlite-"))
    root.chmod(0o711)
    data = root / "data"
    data.mkdir()
    os.chown(data, 0, KERNEL_GID)
    data.chmod(0o2770)
    new = data / old.name
    if old.exists():
        os.replace(old, new)
    else:
        new.touch()
    os.chown(new, 0, KERNEL_GID)
    new.chmod(0o660)
    old.symlink_to(new)
    return f"sqlite:///{new}"


def agent_config(path: Path, agent_id: str, targets: dict[str, dict[str, Any]]) -> Path:
    """The agent's config file; its kernels run isolated, SQLite targets made usable by them."""
    lines = ["[agent]", f'id = "{agent_id}"', f'kernel_uids = "{KERNEL_UIDS}"', ""]
    for name, spec in targets.items():
        if str(spec.get("url", "")).startswith("sqlite:///") and ":memory:" not in spec["url"]:
            spec = {**spec, "url": share_sqlite(spec["url"]), "kernel_gid": KERNEL_GID}
        lines.append(f"[targets.{name}]")
        for key, value in spec.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path.write_text("\n".join(lines))
    path.chmod(0o600)
    return path


def bind_agent(gw: Gateway, config: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """As an admin sets an agent up: each target of ``config`` gets the kind and dialect its agent
    announces (set on the gateway: agents cannot), and a token bound to the config's agent id and
    those targets. Returns (token, token id)."""
    from cellgate.agent.config import load_config

    conf = load_config(config, {**os.environ, **(env or {})})
    with gw.admin() as api:
        for name, target in conf.targets.items():
            kind = {"kind": target.kind, "dialect": target.dialect if target.kind == "sql" else None}
            r = api.put(f"/api/v1/targets/{name}", json=kind)
            assert r.status_code == 200, r.text
        r = api.post("/api/v1/agent-tokens", json={"name": conf.agent_id, "targets": sorted(conf.targets)})
        assert r.status_code == 201, r.text
    return r.json()["token"], r.json()["id"]


def start_agent(gw: Gateway, workdir: Path, config: Path, name: str = "agent") -> Proc:
    token, _ = bind_agent(gw, config)
    return spawn([CELLGATE, "agent", "--gateway", gw.url, "--token", token, "--config", str(config)],
                 workdir / f"{name}.log")


def wait_online(gw: Gateway, targets: list[str], log: Path, timeout: float = 60) -> None:
    def online() -> bool:
        with gw.admin() as api:
            found = {t["name"]: t["online"] for t in api.get("/api/v1/targets").json()["targets"]}
        return all(found.get(t) for t in targets)
    wait_until(online, timeout, f"targets {targets} online", log)


@dataclass
class Jupyter:
    url: str
    token: str
    proc: Proc
    root: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=120)


def start_jupyter(gw: Gateway, user_token: str, workdir: Path, name: str = "jupyter") -> Jupyter:
    port = free_port()
    token = uuid.uuid4().hex
    root = workdir / f"{name}-root"
    root.mkdir(exist_ok=True)
    log = workdir / f"{name}.log"
    # as users run it: a stock jupyter server with the cellgate extension pointing it at the gateway
    proc = spawn([str(BIN / "jupyter"), "server", "--allow-root", "--no-browser", f"--port={port}",
                  "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
                  '--ServerApp.jpserver_extensions={"cellgate.notebook_ext": True}',
                  "--GatewayClient.request_timeout=120"],
                 log, env={"JUPYTER_CONFIG_DIR": str(workdir / f"{name}-config"), "JUPYTER_RUNTIME_DIR": str(workdir / f"{name}-rt"),
                           "CELLGATE_URL": gw.url, "CELLGATE_TOKEN": user_token, "CELLGATE_CONFIG_DIR": str(workdir / "no-credentials")})
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/api/status", params={"token": token}).status_code == 200, 60, "jupyter server", log)
    return Jupyter(url=url, token=token, proc=proc, root=root)


# ---------------------------------------------------------------- a kernel client
@dataclass
class Execution:
    msgs: list[dict[str, Any]]
    reply: dict[str, Any]

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [m for m in self.msgs if m["header"]["msg_type"] in types]

    @property
    def text(self) -> str:
        parts = []
        for m in self.of_type("stream", "execute_result", "display_data"):
            c = m["content"]
            parts.append(c.get("text") or c.get("data", {}).get("text/plain", ""))
        return "".join(parts)

    @property
    def status(self) -> str:
        return self.reply["content"]["status"]


class KernelConnection:
    """The Jupyter JSON websocket protocol against a kernel, as JupyterLab speaks it."""

    def __init__(self, ws_url: str, headers: dict[str, str]) -> None:
        self.ws_url = ws_url
        self.headers = headers
        self.session = uuid.uuid4().hex
        self.ws: Any = None
        self.inbox: list[dict[str, Any]] = []

    async def __aenter__(self) -> KernelConnection:
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        self.ws = await websocket_connect(HTTPRequest(self.ws_url, headers=self.headers))
        self.ws.protocol.stream.set_nodelay(True)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        """Close and wait for the close handshake, so the socket is gone before the loop ends."""
        self.ws.close()
        try:
            while await asyncio.wait_for(self.ws.read_message(), 5) is not None:
                pass
        except (TimeoutError, ConnectionError):
            pass

    def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell",
                metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        msg_id = uuid.uuid4().hex
        msg = {"header": {"msg_id": msg_id, "msg_type": msg_type, "session": self.session, "username": "test",
                          "date": "2026-01-01T00:00:00.000000Z", "version": "5.3"},
               "parent_header": {}, "metadata": metadata or {}, "content": content, "buffers": [], "channel": channel}
        self.ws.write_message(json.dumps(msg))
        return msg

    def send_execute(self, code: str, **kw: Any) -> dict[str, Any]:
        metadata = kw.pop("metadata", None)
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True, **kw}
        return self.request("execute_request", content, metadata=metadata)

    async def collect(self, msg_id: str, timeout: float = 60, reply_type: str = "execute_reply",
                      until_idle: bool = True) -> Execution:
        msgs: list[dict[str, Any]] = []
        reply = None
        idle = not until_idle
        deadline = asyncio.get_running_loop().time() + timeout
        # messages read earlier for this request
        for m in [m for m in self.inbox if m.get("parent_header", {}).get("msg_id") == msg_id]:
            self.inbox.remove(m)
            msgs.append(m)
        for m in msgs:
            reply = m if m["header"]["msg_type"] == reply_type else reply
            idle = idle or (m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle")
        while reply is None or not idle:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {reply_type}/idle for {msg_id} in {timeout}s; got {[m['header']['msg_type'] for m in msgs]}")
            raw = await asyncio.wait_for(self.ws.read_message(), remaining)
            if raw is None:
                raise ConnectionError("websocket closed")
            m = json.loads(raw)
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                self.inbox.append(m)
                continue
            msgs.append(m)
            if m["header"]["msg_type"] == reply_type:
                reply = m
            if m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
                idle = True
        return Execution(msgs, reply)

    async def execute(self, code: str, timeout: float = 60, **kw: Any) -> Execution:
        msg = self.send_execute(code, **kw)
        return await self.collect(msg["header"]["msg_id"], timeout)

    async def wait_for(self, msg_id: str, msg_type: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for one message of ``msg_type`` parented to ``msg_id`` (keeps the others)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for m in self.inbox:
                if m.get("parent_header", {}).get("msg_id") == msg_id and m["header"]["msg_type"] == msg_type:
                    return m
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {msg_type} for {msg_id}")
            raw = await asyncio.wait_for(self.ws.read_message(), remaining)
            if raw is None:
                raise ConnectionError("websocket closed")
            self.inbox.append(json.loads(raw))


# ---------------------------------------------------------------- helpers for the tests
def cli(gw: Gateway, token: str, *args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The real `cellgate` command, as ``token``'s user, against ``gw``."""
    env = {**os.environ, "CELLGATE_URL": gw.url, "CELLGATE_TOKEN": token, "CELLGATE_CONFIG_DIR": "/nonexistent"}
    return subprocess.run([CELLGATE, *args], capture_output=True, text=True, env=env, input=stdin, timeout=timeout)


def start_kernel(jp: Jupyter, target: str, path: str | None = None) -> str:
    """Start a kernel through the jupyter_server (a session when ``path`` is given)."""
    with jp.api() as api:
        if path:
            r = api.post("/api/sessions", json={"path": path, "type": "notebook", "name": path, "kernel": {"name": target}})
            assert r.status_code == 201, r.text
            return r.json()["kernel"]["id"]
        r = api.post("/api/kernels", json={"name": target})
        assert r.status_code == 201, r.text
        return r.json()["id"]


def connect(jp: Jupyter, kernel_id: str) -> KernelConnection:
    ws = jp.url.replace("http://", "ws://") + f"/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
    return KernelConnection(ws, {"Authorization": f"token {jp.token}"})


def task_id_from(display: dict[str, Any]) -> int:
    """The task number in a held cell's status display."""
    import re
    return int(re.search(r"task #(\d+)", display["content"]["data"]["text/plain"]).group(1))
