"""A fake gateway (tornado WebSocket server on 127.0.0.1) and the agent as a real subprocess.

Every agent started here isolates its kernels (``KERNEL_UIDS``; the tests run as root).
``shared_sqlite`` makes a SQLite file those kernels can write through ``kernel_gid``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from tornado.httpserver import HTTPServer
from tornado.web import Application, HTTPError
from tornado.websocket import WebSocketHandler

CELLGATE = str(Path(sys.executable).parent / "cellgate")
TOKEN = f"agent-token-{secrets.token_hex(8)}"  # per run: no file holds it
KERNEL_UIDS = "61000-61999"  # the uids the test agents run kernels as
KERNEL_GID = 62000  # the group of the SQLite files kernels share (outside KERNEL_UIDS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _AgentSocket(WebSocketHandler):
    def initialize(self, gw: FakeGateway) -> None:
        self.gw = gw

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.gw.attempts += 1
        if self.gw.reject > 0:
            self.gw.reject -= 1
            raise HTTPError(401)
        if self.request.headers.get("Authorization") != f"token {self.gw.token}":
            raise HTTPError(401)
        await super().get(*args, **kwargs)

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.gw.ws = self

    def on_message(self, message: str | bytes) -> None:
        self.gw.on_frame(message if isinstance(message, str) else message.decode())

    def on_close(self) -> None:
        if self.gw.ws is self:
            self.gw.ws = None


class FakeGateway:
    """Records every frame; routes replies to waiting requests; queues the rest by type."""

    def __init__(self, port: int, token: str = TOKEN, reject: int = 0) -> None:
        self.port, self.token, self.reject = port, token, reject
        self.attempts = 0
        self.adopt: list[str] | None = None  # sent as welcome.kernels when set
        self.raw: list[str] = []
        self.ws: _AgentSocket | None = None
        self.hellos: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.kernel_msgs: asyncio.Queue[tuple[float, dict[str, Any]]] = asyncio.Queue()
        self.statuses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.pongs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = Application([(r"/api/v1/agent", _AgentSocket, {"gw": self})])
        self._server = HTTPServer(app)
        self._server.listen(self.port, "127.0.0.1")

    async def stop(self) -> None:
        assert self._server is not None
        self._server.stop()
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        await self._server.close_all_connections()
        self._server = None

    def on_frame(self, raw: str) -> None:
        self.raw.append(raw)
        frame = json.loads(raw)
        kind = frame["type"]
        if kind == "hello":
            self.hellos.put_nowait(frame)
            welcome = {"type": "welcome", "agent_id": frame["agent_id"],
                       "targets": [t["name"] for t in frame["targets"]]}
            if self.adopt is not None:
                welcome["kernels"] = self.adopt
            self.send(welcome)
        elif kind == "reply":
            future = self._replies.pop(frame["req_id"], None)
            if future is not None and not future.done():
                future.set_result(frame)
        elif kind == "kernel_msg":
            self.kernel_msgs.put_nowait((time.monotonic(), frame))
        elif kind == "kernel_status":
            self.statuses.put_nowait(frame)
        elif kind == "pong":
            self.pongs.put_nowait(frame)

    def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None, "the agent is not connected"
        self.ws.write_message(json.dumps(frame, default=json_default))

    async def request(self, kind: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        req_id = f"r{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[req_id] = future
        self.send({"type": kind, "req_id": req_id, **fields})
        return await asyncio.wait_for(future, timeout)

    def send_execute(self, kernel_id: str, code: str, task_id: int = 1,
                     statements: list[str] | None = None) -> str:
        """Send an execute_request; ``statements`` (SQL) go in ``metadata.cellgate`` as the
        gateway would send them."""
        metadata = {} if statements is None else {
            "cellgate": {"task_id": task_id, "statements": statements, "mode": "read-write"}}
        msg = Session().msg("execute_request", metadata=metadata, content={
            "code": code, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        self.send({"type": "kernel_msg", "kernel_id": kernel_id, "channel": "shell",
                   "msg": msg, "task_id": task_id})
        return msg["header"]["msg_id"]

    async def collect(self, msg_id: str, timeout: float = 30) -> list[tuple[float, dict[str, Any]]]:
        """Frames parented to msg_id until both the execute_reply and iopub idle arrived."""
        got: list[tuple[float, dict[str, Any]]] = []
        reply = idle = False
        deadline = time.monotonic() + timeout
        while not (reply and idle):
            try:
                at, frame = await asyncio.wait_for(self.kernel_msgs.get(),
                                                   max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                seen = [(f["channel"], f["msg"]["header"]["msg_type"]) for _, f in got]
                raise TimeoutError(f"no execute_reply + idle for {msg_id}; got {seen}") from None
            msg = frame["msg"]
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            got.append((at, frame))
            reply = reply or msg["header"]["msg_type"] == "execute_reply"
            idle = idle or (msg["header"]["msg_type"] == "status"
                            and msg["content"]["execution_state"] == "idle")
        return got

    async def run(self, kernel_id: str, code: str) -> tuple[str, dict[str, Any]]:
        """Execute code; return (stdout text, execute_reply content)."""
        got = await self.collect(self.send_execute(kernel_id, code))
        out = "".join(f["msg"]["content"]["text"] for _, f in got
                      if f["msg"]["header"]["msg_type"] == "stream")
        reply = next(f["msg"]["content"] for _, f in got
                     if f["msg"]["header"]["msg_type"] == "execute_reply")
        return out, reply


def shared_sqlite(name: str = "demo.db", gid: int = KERNEL_GID) -> tuple[Path, Path]:
    """(database file, its directory to remove): a SQLite file kernels of ``gid`` can write.

    Under a directory others can traverse (pytest's tmp_path is root's 0700), the directory
    group-writable by ``gid`` (SQLite writes its journal next to the file), the file 0660.
    """
    root = Path(tempfile.mkdtemp(prefix="cellgate-sqlite-"))
    root.chmod(0o711)
    data = root / "data"
    data.mkdir()
    os.chown(data, 0, gid)
    data.chmod(0o2770)
    db = data / name
    db.touch()
    os.chown(db, 0, gid)
    db.chmod(0o660)
    return db, root


def remove_shared(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)


class AgentProcess:
    """`cellgate agent` as a subprocess; its stderr goes to a file readable as ``log``."""

    def __init__(self, config: Path, gateway_url: str, env: dict[str, str] | None = None,
                 token_arg: str | None = TOKEN, token_file: Path | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.config, self.gateway_url = config, gateway_url
        self.args = args
        # each agent its own journal (agent/journal.py): a test's tasks are not reported by the next test's agent
        self.env = {**os.environ, "CELLGATE_AGENT_STATE_ROOT": str(config.parent / f"{config.stem}-state"), **(env or {})}
        self.token_arg = token_arg
        self.token_file = token_file
        self.log_path = config.with_suffix(".log")
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    async def start(self) -> None:
        args = [CELLGATE, "agent", "--gateway", self.gateway_url, "--config", str(self.config), *self.args]
        if self.token_file:
            args += ["--token-file", str(self.token_file)]
        elif self.token_arg:
            args += ["--token", self.token_arg]
        with open(self.log_path, "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *args, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL, stderr=log)

    async def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        assert self.proc.returncode is not None
        return self.proc.returncode


@asynccontextmanager
async def running(config: Path, reject: int = 0, env: dict[str, str] | None = None,
                  token_arg: str | None = TOKEN, token_file: Path | None = None, args: tuple[str, ...] = ()):
    """A started fake gateway and a started agent (its hello may still be on the way); ``args``:
    more flags for `cellgate agent`."""
    gw = FakeGateway(free_port(), reject=reject)
    gw.start()
    agent = AgentProcess(config, gw.url, env=env, token_arg=token_arg, token_file=token_file, args=args)
    await agent.start()
    try:
        yield gw, agent
    finally:
        await agent.stop()
        if gw._server is not None:
            await gw.stop()
