"""An agent token speaks for one agent and serves the targets an admin gave it; kinds and dialects
are the gateway's; kernel frames count only from the connection hosting the kernel; an agent id
is not taken over by a second connection.

Everything goes through a real gateway process and real WebSockets (``websocket-client`` plays
the agents and the user's notebook client).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import terminate, wait_answering
import websocket

from cellgate.gateway import auth, binding
from cellgate.gateway.agents import REFUSAL_AUDIT_INTERVAL, AgentRegistry
from cellgate.gateway.models import Target, Token
from cellgate.gateway.store import Store

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    url: str
    db_url: str
    admin_token: str
    log: Path
    user_token: str = ""

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"token {token or self.admin_token}"}, timeout=30)

    def put_target(self, name: str, **body: Any) -> httpx.Response:
        with self.api() as api:
            return api.put(f"/api/v1/targets/{name}", json=body)

    def agent_token(self, name: str, targets: list[str]) -> str:
        with self.api() as api:
            resp = api.post("/api/v1/agent-tokens", json={"name": name, "targets": targets})
        assert resp.status_code == 201, resp.text
        return resp.json()["token"]

    def audit(self, action: str) -> list[dict[str, Any]]:
        with self.api() as api:
            resp = api.get("/api/v1/audit", params={"format": "jsonl"})
        assert resp.status_code == 200, resp.text
        events = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
        return [e for e in events if e["action"] == action]

    def wait_audit(self, action: str, match: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.audit(action):
                detail = event.get("detail") or {}
                if all(detail.get(k) == v for k, v in match.items()):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError(f"no audit event {action} with {match}: {self.audit(action)}")
            time.sleep(0.2)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("binding")
    db = f"sqlite:///{tmp}/gw.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    init = subprocess.run([str(BIN / "cellgate"), "init-admin", "admin", "--db-url", db], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp)
    assert init.returncode == 0, init.stderr
    admin_token = init.stdout.strip().splitlines()[-1]
    port = _free_port()
    log = tmp / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "cellgate"), "gateway", "--port", str(port), "--db-url", db,
                                 "--log-level", "INFO"], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    gw = Gateway(url=f"http://127.0.0.1:{port}", db_url=db, admin_token=admin_token, log=log)
    try:
        wait_answering(proc, gw.url, log)
        with gw.api() as api:
            assert api.post("/api/v1/users", json={"name": "uma"}).status_code == 201
            gw.user_token = api.post("/api/v1/users/uma/tokens", json={"note": "binding"}).json()["token"]
        for name, kind in {"pg": ("sql", "postgresql"), "pg2": ("sql", "postgresql"), "maria": ("sql", "mariadb"),
                           "lite": ("sql", "sqlite"), "py": ("python", None), "pyb": ("python", None)}.items():
            resp = gw.put_target(name, kind=kind[0], dialect=kind[1])
            assert resp.status_code == 200, resp.text
        assert gw.put_target("bare", description="no kind yet").status_code == 200
        yield gw
    finally:
        terminate(proc)


# ------------------------------------------------------------------------- fake agents

def announce(name: str, kind: str, dialect: str | None = None) -> dict[str, Any]:
    return {"name": name, "kind": kind, "language": kind, "display_name": f"{name} as the agent calls it",
            "dialect": dialect}


@dataclass
class FakeAgent:
    """One agent WebSocket. ``serve()`` answers pings and requests in a thread (an agent alive)."""

    ws: websocket.WebSocket
    frames: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    closed: tuple[int, str] | None = None
    _thread: threading.Thread | None = None

    @classmethod
    def connect(cls, gw: Gateway, token: str) -> FakeAgent:
        ws = websocket.create_connection(gw.url.replace("http", "ws") + "/api/v1/agent",
                                         header=[f"Authorization: token {token}"], timeout=15)
        return cls(ws)

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def hello(self, agent_id: str, targets: list[dict[str, Any]], kernels: list[str] | None = None) -> dict[str, Any]:
        """Send hello; return the gateway's answer (welcome or error), skipping pings."""
        self.send({"type": "hello", "agent_id": agent_id, "version": "test", "tags": [], "targets": targets,
                   "kernels": kernels or []})
        return self.next_frame(lambda f: f["type"] != "ping")

    def _read(self) -> dict[str, Any] | None:
        """The next text frame; None once the gateway closed (``closed`` = (code, reason))."""
        while True:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except (websocket.WebSocketConnectionClosedException, OSError):  # (OSError: we shut it down)
                self.closed = self.closed or (1006, "")
                return None
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                self.closed = (code, data[2:].decode(errors="replace"))
                return None
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return json.loads(data)

    def next_frame(self, want: Any = lambda f: True) -> dict[str, Any]:
        while True:
            frame = self._read() if self._thread is None else self.frames.get(timeout=15)
            assert frame is not None, f"the gateway closed the socket: {self.closed}"
            if want(frame):
                return frame

    def wait_closed(self, timeout: float = 15) -> tuple[int, str]:
        deadline = time.monotonic() + timeout
        while self.closed is None:
            assert time.monotonic() < deadline, "the gateway did not close the socket"
            if self._thread is None:
                self._read()
            else:
                time.sleep(0.05)
        return self.closed

    def serve(self) -> FakeAgent:
        def _loop() -> None:
            while True:
                frame = self._read()
                if frame is None:
                    return
                if frame["type"] == "ping":
                    self.send({"type": "pong", "ts": frame.get("ts")})
                elif "req_id" in frame:
                    self.send({"type": "reply", "req_id": frame["req_id"], "ok": True})
                    self.frames.put(frame)
                else:
                    self.frames.put(frame)
        self._thread = threading.Thread(target=_loop, daemon=True, name="fake-agent")
        self._thread.start()
        return self

    def close(self) -> None:
        try:
            self.ws.close(timeout=3)
        except Exception:  # the gateway closed it first
            pass
        self.ws.shutdown()  # the socket itself, whatever state the protocol is in
        if self._thread is not None:
            self._thread.join(5)


def refusal(agent: FakeAgent, answer: dict[str, Any], code: int) -> str:
    """The error frame then the close, both with ``code``; returns the reason."""
    assert answer["type"] == "error" and answer["code"] == code, answer
    assert agent.wait_closed()[0] == code
    return answer["message"]


def kernel_frame(kernel_id: str, text: str) -> dict[str, Any]:
    msg = {"header": {"msg_id": uuid.uuid4().hex, "msg_type": "stream", "username": "k", "session": "s",
                      "date": "2026-01-01T00:00:00Z", "version": "5.3"},
           "parent_header": {}, "metadata": {}, "content": {"name": "stdout", "text": text}}
    return {"type": "kernel_msg", "kernel_id": kernel_id, "channel": "iopub", "msg": msg}


# --------------------------------------------------------------- kinds and dialects

def test_the_rules_themselves() -> None:
    assert binding.check_kind("sql", "mariadb") == ("sql", "sql", "mariadb")
    assert binding.check_kind("python", None) == ("python", "python", "")
    pg = Target(name="pg", kind="sql", dialect="postgresql")
    maria = Target(name="m", kind="sql", dialect="mariadb")
    assert binding.target_refusal("pg", {"kind": "sql", "dialect": "postgresql"}, ["pg"], pg) is None
    assert binding.target_refusal("m", {"kind": "sql", "dialect": "mysql"}, ["m"], maria) is None
    assert "mariadb" in (binding.target_refusal("m", {"kind": "sql", "dialect": "sqlite"}, ["m"], maria) or "")
    assert "does not exist" in (binding.target_refusal("x", {"kind": "sql"}, ["x"], None) or "")
    # the token's list is checked first: an agent learns nothing about targets it was not given
    assert "does not list" in (binding.target_refusal("x", {"kind": "sql"}, ["pg"], None) or "")
    assert binding.token_refusal(Token(id=1, kind="agent", agent_name="a"), "a") is None
    assert "not bound" in (binding.token_refusal(Token(id=1, kind="agent", agent_name=None), "a") or "")
    reg = AgentRegistry()
    assert reg.audit_refusal("k", now=0.0) and not reg.audit_refusal("k", now=1.0) and reg.audit_refusal("other", now=1.0)
    assert reg.audit_refusal("k", now=REFUSAL_AUDIT_INTERVAL + 0.5)


def test_target_kind_and_dialect_are_set_by_an_admin_and_validated(gateway: Gateway) -> None:
    for body, field_ in (({"kind": "mongo"}, "kind"), ({"kind": "sql"}, "dialect"),
                         ({"kind": "sql", "dialect": "oracle"}, "dialect"), ({"kind": "python", "dialect": "sqlite"}, "dialect"),
                         ({"dialect": "sqlite"}, "kind"), ({"kind": 3}, "kind")):
        resp = gateway.put_target("kd", **body)
        assert resp.status_code == 400, (body, resp.text)
        assert field_ in resp.json()["message"], resp.text
    made = gateway.put_target("kd", kind="sql", dialect="mysql", display_name="KD (prod)").json()
    assert (made["kind"], made["language"], made["dialect"], made["display_name"]) == ("sql", "sql", "mysql", "KD (prod)")
    kept = gateway.put_target("kd", description="kind kept").json()
    assert (kept["kind"], kept["dialect"]) == ("sql", "mysql")
    redialect = gateway.put_target("kd", kind="sql").json()
    assert redialect["dialect"] == "mysql"
    py = gateway.put_target("kd", kind="python").json()
    assert (py["kind"], py["language"], py["dialect"]) == ("python", "python", "")
    assert gateway.wait_audit("target.updated", {"kind": "python"})["target"] == "kd"


def test_apply_sets_kind_and_dialect_and_refuses_bad_ones(gateway: Gateway) -> None:
    doc = {"targets": {"ap": {"kind": "sql", "dialect": "postgresql", "display_name": "AP"}}}
    with gateway.api() as api:
        resp = api.post("/api/v1/apply", json={"document": doc})
        assert resp.status_code == 200, resp.text
        assert resp.json()["changes"] == ["target ap: created"]
        doc["targets"]["ap"]["dialect"] = "mariadb"
        resp = api.post("/api/v1/apply", json={"document": doc})
        assert resp.json()["changes"] == ["target ap: dialect: 'postgresql' → 'mariadb'"], resp.json()
        doc["targets"]["ap"]["dialect"] = "postgresql"
        assert api.post("/api/v1/apply", json={"document": doc}).status_code == 200
        got = api.get("/api/v1/targets/ap").json()
        assert (got["kind"], got["dialect"], got["language"], got["display_name"]) == ("sql", "postgresql", "sql", "AP")
        # kind/dialect left out: left alone
        resp = api.post("/api/v1/apply", json={"document": {"targets": {"ap": {"description": "again"}}}})
        assert resp.status_code == 200, resp.text
        assert api.get("/api/v1/targets/ap").json()["dialect"] == "postgresql"
        bad = api.post("/api/v1/apply", json={"document": {"targets": {"ap": {"kind": "sql", "dialect": "db2"}}}})
        assert bad.status_code == 400 and bad.json()["field"] == "targets.ap.dialect", bad.text


# ------------------------------------------------------------------------ agent tokens

def test_agent_tokens_are_bound_to_a_name_and_known_targets(gateway: Gateway) -> None:
    with gateway.api() as api:
        missing = api.post("/api/v1/agent-tokens", json={"name": "tok-a"})
        assert missing.status_code == 400 and "targets" in missing.json()["message"]
        unknown = api.post("/api/v1/agent-tokens", json={"name": "tok-a", "targets": ["pg", "nope", "zilch"]})
        assert unknown.status_code == 400
        assert "nope, zilch" in unknown.json()["message"] and "cellgate target set" in unknown.json()["message"]
        assert api.post("/api/v1/agent-tokens", json={"name": "bad name!", "targets": ["pg"]}).status_code == 400
        made = api.post("/api/v1/agent-tokens", json={"name": "tok-a", "targets": ["pg", "lite", "pg"]})
        assert made.status_code == 201, made.text
        body = made.json()
        assert body["token"].startswith("cg_") and (body["agent"], body["targets"], body["bound"]) == ("tok-a", ["lite", "pg"], True)
        listed = {t["id"]: t for t in api.get("/api/v1/agent-tokens").json()["agent_tokens"]}
        assert "token" not in listed[body["id"]] and listed[body["id"]]["targets"] == ["lite", "pg"]
        assert listed[body["id"]]["state"] == "active" and listed[body["id"]]["created_at"]
        changed = api.put(f"/api/v1/agent-tokens/{body['id']}", json={"targets": ["py"]})
        assert changed.status_code == 200 and changed.json()["targets"] == ["py"], changed.text
        assert api.put(f"/api/v1/agent-tokens/{body['id']}", json={"targets": ["ghost"]}).status_code == 400
        assert api.put("/api/v1/agent-tokens/999999", json={"targets": ["py"]}).status_code == 404
    created = gateway.wait_audit("token.created", {"agent": "tok-a"})
    assert created["detail"]["targets"] == ["lite", "pg"]
    gateway.wait_audit("agent_token.targets_changed", {"token_id": body["id"], "before": ["lite", "pg"], "after": ["py"]})


# ------------------------------------------------------------------------------ hello

def test_agent_id_other_than_the_tokens_name_is_refused_and_audited(gateway: Gateway) -> None:
    token = gateway.agent_token("agent-right", ["pg"])
    agent = FakeAgent.connect(gateway, token)
    try:
        reason = refusal(agent, agent.hello("agent-wrong", [announce("pg", "sql", "postgresql")]), 4003)
    finally:
        agent.close()
    assert "'agent-right'" in reason and "'agent-wrong'" in reason
    event = gateway.wait_audit("agent.refused", {"agent": "agent-wrong", "code": 4003})
    assert "agent-right" in event["detail"]["reason"]
    again = FakeAgent.connect(gateway, token)  # as a misconfigured agent retries: refused, logged, audited once
    try:
        assert refusal(again, again.hello("agent-wrong", []), 4003) == reason
    finally:
        again.close()
    assert len([e for e in gateway.audit("agent.refused") if e["detail"]["agent"] == "agent-wrong"]) == 1
    assert gateway.log.read_text().count("refused agent 'agent-wrong'") == 2
    with gateway.api() as api:
        assert "agent-wrong" not in {a["agent_id"] for a in api.get("/api/v1/agents").json()["agents"]}


def test_a_token_from_before_binding_is_refused(gateway: Gateway) -> None:
    raw = auth.TOKEN_PREFIX + uuid.uuid4().hex
    store = Store(gateway.db_url)
    try:
        token_id = store.call(lambda s: _legacy_token(s, raw))
    finally:
        store.close()
    agent = FakeAgent.connect(gateway, raw)
    try:
        reason = refusal(agent, agent.hello("old-agent", [announce("pg", "sql", "postgresql")]), 4003)
    finally:
        agent.close()
    assert "not bound" in reason and "cellgate agent-tokens create old-agent --targets" in reason
    gateway.wait_audit("agent.refused", {"agent": "old-agent", "token_id": token_id})
    with gateway.api() as api:
        listed = {t["id"]: t for t in api.get("/api/v1/agent-tokens").json()["agent_tokens"]}
    assert listed[token_id]["bound"] is False and listed[token_id]["agent"] is None


def _legacy_token(session: Any, raw: str) -> int:
    tok = Token(kind="agent", name="old-agent", hash=auth.hash_token(raw), prefix=raw[:8])
    session.add(tok)
    session.flush()
    return tok.id


def test_each_target_is_checked_against_the_token_and_the_gateway(gateway: Gateway) -> None:
    token = gateway.agent_token("multi", ["pg", "pg2", "maria", "lite", "py", "bare"])
    agent = FakeAgent.connect(gateway, token)
    try:
        welcome = agent.hello("multi", [
            announce("pg", "sql", "postgresql"),       # as the gateway has it
            announce("maria", "sql", "mysql"),         # mysql:// for a MariaDB target: one family
            announce("py", "python"),
            announce("pg2", "python"),                 # a PostgreSQL target announced as python
            announce("lite", "sql", "postgresql"),     # a SQLite target announced as PostgreSQL
            announce("bare", "sql", "postgresql"),     # no kind on the gateway yet
            announce("pyb", "python"),                 # not in the token
        ])
        assert welcome["type"] == "welcome", welcome
        assert sorted(welcome["targets"]) == ["maria", "pg", "py"]
        refused = {r["target"]: r["reason"] for r in welcome["refused"]}
        assert set(refused) == {"pg2", "lite", "bare", "pyb"}, refused
        assert "kind 'python'" in refused["pg2"] and "'sql'" in refused["pg2"]
        assert "dialect 'postgresql'" in refused["lite"] and "'sqlite'" in refused["lite"]
        assert "no kind" in refused["bare"] and "cellgate target set bare" in refused["bare"]
        assert "does not list" in refused["pyb"]
        for name, why in refused.items():
            gateway.wait_audit("agent.target_refused", {"agent": "multi", "target": name, "reason": why})
        with gateway.api() as api:
            targets = {t["name"]: t for t in api.get("/api/v1/targets").json()["targets"]}
            agents = {a["agent_id"]: a for a in api.get("/api/v1/agents").json()["agents"]}
        assert agents["multi"]["targets"] == ["maria", "pg", "py"]
        assert targets["pg"]["online"] and targets["maria"]["online"] and not targets["pg2"]["online"]
        # what the agent announced changed nothing on the gateway
        assert (targets["pg2"]["kind"], targets["pg2"]["dialect"]) == ("sql", "postgresql")
        assert targets["maria"]["dialect"] == "mariadb" and targets["bare"]["kind"] == ""
        assert targets["pg"]["display_name"] == ""
        # the admin changes the kind under a connected agent: it stops serving it at once
        assert gateway.put_target("py", kind="sql", dialect="sqlite").status_code == 200
        with gateway.api() as api:
            assert "py" not in {a["agent_id"]: a for a in api.get("/api/v1/agents").json()["agents"]}["multi"]["targets"]
    finally:
        agent.close()
        gateway.put_target("py", kind="python")


# ------------------------------------------------------------------------ kernel frames

def test_kernel_frames_count_only_from_the_agent_hosting_the_kernel(gateway: Gateway) -> None:
    host = FakeAgent.connect(gateway, gateway.agent_token("host-a", ["pg"]))
    other = FakeAgent.connect(gateway, gateway.agent_token("other-b", ["maria"]))
    client: websocket.WebSocket | None = None
    try:
        assert host.hello("host-a", [announce("pg", "sql", "postgresql")])["targets"] == ["pg"]
        host.serve()
        assert other.hello("other-b", [announce("maria", "sql", "mariadb")])["targets"] == ["maria"]
        with gateway.api(gateway.user_token) as api:
            resp = api.post("/api/kernels", json={"name": "pg"})
        assert resp.status_code == 201, resp.text
        kernel_id = resp.json()["id"]
        assert host.next_frame(lambda f: f["type"] == "kernel_start")["kernel_id"] == kernel_id
        client = websocket.create_connection(f"{gateway.url.replace('http', 'ws')}/api/kernels/{kernel_id}/channels",
                                             header=[f"Authorization: token {gateway.user_token}"], timeout=15)
        for _ in range(3):  # frames for a kernel agent B does not host, also as a kernel death
            other.send(kernel_frame(kernel_id, "INJECTED by B\n"))
        other.send({"type": "kernel_status", "kernel_id": kernel_id, "state": "dead", "reason": "B says so"})
        time.sleep(1.0)
        host.send(kernel_frame(kernel_id, "from the host\n"))
        seen = []
        deadline = time.monotonic() + 15
        while "from the host" not in json.dumps(seen):
            assert time.monotonic() < deadline, f"the host's frame never reached the client: {seen}"
            seen.append(json.loads(client.recv()))
        assert "INJECTED" not in json.dumps(seen) and "B says so" not in json.dumps(seen)
        assert not any(m.get("content", {}).get("execution_state") == "dead" for m in seen)
        events = [e for e in gateway.audit("agent.foreign_kernel_msg") if e["detail"]["agent"] == "other-b"]
        assert len(events) == 1 and events[0]["kernel_id"] == kernel_id and events[0]["detail"]["hosted_by"] == "host-a"
        assert gateway.log.read_text().count("which it does not host") == 1
    finally:
        if client is not None:
            client.close()
        host.close()
        other.close()


# --------------------------------------------------------------------------- one id, one connection

def test_a_second_connection_of_a_live_agent_is_refused(gateway: Gateway) -> None:
    token = gateway.agent_token("twin", ["pg"])
    first = FakeAgent.connect(gateway, token)
    second = FakeAgent.connect(gateway, token)
    try:
        assert first.hello("twin", [announce("pg", "sql", "postgresql")])["type"] == "welcome"
        first.serve()
        reason = refusal(second, second.hello("twin", [announce("pg", "sql", "postgresql")]), 4009)
        assert "already connected" in reason
        gateway.wait_audit("agent.refused", {"agent": "twin", "code": 4009})
        assert first.closed is None
        with gateway.api() as api:
            assert "twin" in {a["agent_id"] for a in api.get("/api/v1/agents").json()["agents"]}
    finally:
        first.close()
        second.close()


def test_a_silent_connection_is_replaced_and_a_reconnect_after_a_close_is_at_once(gateway: Gateway) -> None:
    token = gateway.agent_token("phoenix", ["pg"])
    dead = FakeAgent.connect(gateway, token)
    assert dead.hello("phoenix", [announce("pg", "sql", "postgresql")])["type"] == "welcome"
    # ``dead`` never reads again: it answers no ping
    new = FakeAgent.connect(gateway, token)
    started = time.monotonic()
    try:
        welcome = new.hello("phoenix", [announce("pg", "sql", "postgresql")])
        assert welcome["type"] == "welcome" and welcome["targets"] == ["pg"], welcome
        assert time.monotonic() - started >= 2.5  # it waited for the old one's answer first
        assert dead.wait_closed()[0] == 4009
        new.serve()
        with gateway.api() as api:
            assert "phoenix" in {a["agent_id"] for a in api.get("/api/v1/agents").json()["agents"]}
    finally:
        new.close()
        dead.close()
    again = FakeAgent.connect(gateway, token)
    try:
        started = time.monotonic()
        assert again.hello("phoenix", [announce("pg", "sql", "postgresql")])["type"] == "welcome"
        assert time.monotonic() - started < 2.5
    finally:
        again.close()


# ------------------------------------------------------------------------------ the CLI

def test_the_cli_against_the_real_gateway(gateway: Gateway, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")},
           "CELLGATE_URL": gateway.url, "CELLGATE_TOKEN": gateway.admin_token, "CELLGATE_CONFIG_DIR": str(tmp_path)}

    def cellgate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "cellgate"), *args], capture_output=True, text=True, timeout=60, env=env)

    p = cellgate("target", "set", "clit", "--kind", "sql", "--dialect", "mariadb", "--display-name", "CLI target")
    assert p.returncode == 0 and p.stdout == "target clit created: submit nobody; review nobody; kind sql (mariadb)\n", p
    p = cellgate("agent-tokens", "create", "cli-agent", "--targets", "clit,ghost")
    assert p.returncode == 8 and "ghost" in p.stderr and "cellgate target set" in p.stderr, p
    p = cellgate("agent-tokens", "create", "cli-agent", "--targets", "clit,pg")
    assert p.returncode == 0 and p.stdout.startswith("cg_") and len(p.stdout.splitlines()) == 1, p
    token = p.stdout.strip()
    listed = json.loads(cellgate("agent-tokens", "list", "--json").stdout)["agent_tokens"]
    [mine] = [t for t in listed if t["agent"] == "cli-agent"]
    assert mine["targets"] == ["clit", "pg"]
    p = cellgate("agent-tokens", "set-targets", str(mine["id"]), "--targets", "clit")
    assert p.returncode == 0 and p.stdout == f"agent token {mine['id']} (cli-agent) may serve: clit\n", p
    table = cellgate("agent-tokens", "list").stdout
    assert any(line.split()[:3] == [str(mine["id"]), "cli-agent", "clit"] for line in table.splitlines()), table
    agent = FakeAgent.connect(gateway, token)
    try:
        welcome = agent.hello("cli-agent", [announce("clit", "sql", "mysql"), announce("pg", "sql", "postgresql")])
    finally:
        agent.close()
    assert welcome["targets"] == ["clit"] and [r["target"] for r in welcome["refused"]] == ["pg"]
