"""The agent protocol module (cellgate/protocol.py): the doc's tables match it, frames round-trip
byte for byte as the wire has them, bad frames are refused naming the field, and both sides
refuse an invalid frame whole (an error back, a log line, nothing applied)."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cellgate import protocol as p

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "agent-protocol.md"
JMSG = {"header": {"msg_id": "m1", "msg_type": "stream", "username": "k", "session": "s",
                   "date": "2026-01-01T00:00:00Z", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": {"name": "stdout", "text": "hi\n"}}


# ------------------------------------------------------------------------------ the doc

def _tables() -> dict[str, dict[str, str]]:
    """{direction: {type: fields cell}} from the doc's two tables."""
    tables: dict[str, dict[str, str]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            section = {"## Agent → gateway": p.AGENT, "## Gateway → agent": p.GATEWAY}.get(line.strip())
            continue
        if section is None or not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        kind = re.fullmatch(r"`(\w+)`", cells[0])
        assert kind, f"first cell of a frame row must be a `type`: {line}"
        tables.setdefault(section, {})[kind.group(1)] = cells[1]
    return tables


def _top_level(cell: str) -> str:
    """The fields cell without anything in parentheses (nested ones too)."""
    while True:
        stripped = re.sub(r"\([^()]*\)", "", cell)
        if stripped == cell:
            return cell
        cell = stripped


def test_the_doc_tables_list_exactly_the_frame_types_of_each_side() -> None:
    tables = _tables()
    assert set(tables[p.AGENT]) == set(p.AGENT_SENDS)
    assert set(tables[p.GATEWAY]) == set(p.GATEWAY_SENDS)


@pytest.mark.parametrize("sender", [p.AGENT, p.GATEWAY])
def test_the_doc_tables_list_exactly_the_fields_of_each_frame(sender: str) -> None:
    for kind, cell in _tables()[sender].items():
        documented = re.findall(r"`(\w+)`", _top_level(cell))
        assert sorted(documented) == sorted(p.fields_of(p.SENDS[sender][kind], sender)), (sender, kind, cell)


def test_the_doc_lists_the_fields_of_nested_objects() -> None:
    seen = 0
    for sender, rows in _tables().items():
        for kind, cell in rows.items():
            cls = p.SENDS[sender][kind]
            for name in p.fields_of(cls, sender):
                part = p.part_of(cls, name)
                if part is None:
                    continue
                found = re.search(rf"`{name}` \([^{{]*`\{{([^}}]*)\}}`", cell)
                assert found, f"{kind}.{name}: the doc must show its fields as `{{a, b}}`: {cell}"
                assert [f.strip() for f in found.group(1).split(",")] == p.fields_of(part), (kind, name)
                seen += 1
    assert seen == 4  # hello.targets, hello.tasks, welcome.refused, kernel_start.limits


def test_the_module_needs_the_standard_library_only() -> None:
    tree = ast.parse((ROOT / "cellgate" / "protocol.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


# ------------------------------------------------------------------------ good frames

TARGET = p.TargetAnnouncement(name="pg", kind="sql", language="sql", display_name="PG", dialect="postgresql")
#: (frame, its sender, the exact text today's code sends)
WIRE = [
    (p.Hello(agent_id="eu-1", version="0.1.0", tags=["a"],
             targets=[TARGET, dataclasses.replace(TARGET, name="py", kind="python", dialect=None)], kernels=["k1"]), p.AGENT,
     '{"type": "hello", "agent_id": "eu-1", "version": "0.1.0", "tags": ["a"], "targets": [{"name": "pg", "kind": "sql", '
     '"language": "sql", "display_name": "PG", "dialect": "postgresql"}, {"name": "py", "kind": "python", "language": "sql", '
     '"display_name": "PG", "dialect": null}], "kernels": ["k1"], "dead_kernels": [], "tasks": []}'),
    (p.Hello(agent_id="eu-1", kernels=["k1"], dead_kernels=["k2"],
             tasks=[p.TaskReport(task_id=7, kernel_id="k1", state="ended", started_at=1.5, status="ok", ended_at=2.5,
                                 last_seq=3, unacked=1)]), p.AGENT,
     '{"type": "hello", "agent_id": "eu-1", "version": "", "tags": [], "targets": [], "kernels": ["k1"], '
     '"dead_kernels": ["k2"], "tasks": [{"task_id": 7, "kernel_id": "k1", "state": "ended", "started_at": 1.5, '
     '"status": "ok", "ename": null, "evalue": null, "ended_at": 2.5, "last_seq": 3, "unacked": 1}]}'),
    (p.KernelMsg(kernel_id="k1", channel="iopub", msg=JMSG, task_id=7, seq=2), p.AGENT,
     '{"type": "kernel_msg", "kernel_id": "k1", "channel": "iopub", "msg": ' + json.dumps(JMSG) + ', "task_id": 7, "seq": 2}'),
    (p.Ack(task_id=7, seq=2, ended=True), p.GATEWAY, '{"type": "ack", "task_id": 7, "seq": 2, "ended": true}'),
    (p.KernelMsg(kernel_id="k1", channel="shell", msg=JMSG, task_id=7, max_bytes=100), p.GATEWAY,
     '{"type": "kernel_msg", "kernel_id": "k1", "channel": "shell", "msg": ' + json.dumps(JMSG) + ', "task_id": 7, '
     '"max_bytes": 100}'),
    (p.Reply(req_id="r1", ok=True), p.AGENT, '{"type": "reply", "req_id": "r1", "ok": true}'),
    (p.Reply(req_id="r1", ok=True, rows=[3, 4]), p.AGENT, '{"type": "reply", "req_id": "r1", "ok": true, "rows": [3, 4]}'),
    (p.Reply(req_id="r1", ok=False, error="no"), p.AGENT, '{"type": "reply", "req_id": "r1", "ok": false, "error": "no"}'),
    (p.KernelMsg(kernel_id="k1", channel="iopub", msg=JMSG), p.AGENT,
     '{"type": "kernel_msg", "kernel_id": "k1", "channel": "iopub", "msg": ' + json.dumps(JMSG) + "}"),
    (p.KernelStatus(kernel_id="k1", state="dead", reason="exit 1"), p.AGENT,
     '{"type": "kernel_status", "kernel_id": "k1", "state": "dead", "reason": "exit 1"}'),
    (p.Pong(ts=12.5), p.AGENT, '{"type": "pong", "ts": 12.5}'),
    (p.Welcome(agent_id="eu-1", targets=["pg"], refused=[p.Refusal(target="x", reason="why")], kernels=[]), p.GATEWAY,
     '{"type": "welcome", "agent_id": "eu-1", "targets": ["pg"], "refused": [{"target": "x", "reason": "why"}], "kernels": []}'),
    (p.Error(code=4003, message="no"), p.GATEWAY, '{"type": "error", "code": 4003, "message": "no"}'),
    (p.Ping(ts=1.5), p.GATEWAY, '{"type": "ping", "ts": 1.5}'),
    (p.KernelStart(kernel_id="k1", target="pg", env={"KERNEL_USERNAME": "u"}, limits=p.Limits(max_rows=10, timeout=30),
                   req_id="r2"), p.GATEWAY,
     '{"type": "kernel_start", "kernel_id": "k1", "target": "pg", "env": {"KERNEL_USERNAME": "u"}, '
     '"limits": {"max_rows": 10, "timeout": 30}, "req_id": "r2"}'),
    (p.Explain(target="pg", statements=["DELETE FROM t"], req_id="r3"), p.GATEWAY,
     '{"type": "explain", "target": "pg", "statements": ["DELETE FROM t"], "req_id": "r3"}'),
    (p.KernelStop(kernel_id="k1", req_id="r4"), p.GATEWAY, '{"type": "kernel_stop", "kernel_id": "k1", "req_id": "r4"}'),
    (p.KernelInterrupt(kernel_id="k1", req_id="r5"), p.GATEWAY, '{"type": "kernel_interrupt", "kernel_id": "k1", "req_id": "r5"}'),
    (p.KernelRestart(kernel_id="k1", req_id="r6"), p.GATEWAY, '{"type": "kernel_restart", "kernel_id": "k1", "req_id": "r6"}'),
    (p.KernelMsg(kernel_id="k1", channel="shell", msg=JMSG, task_id=7), p.GATEWAY,
     '{"type": "kernel_msg", "kernel_id": "k1", "channel": "shell", "msg": ' + json.dumps(JMSG) + ', "task_id": 7}'),
    (p.KernelMsg(kernel_id="k1", channel="shell", msg=JMSG), p.GATEWAY,
     '{"type": "kernel_msg", "kernel_id": "k1", "channel": "shell", "msg": ' + json.dumps(JMSG) + "}"),
]


@pytest.mark.parametrize(("frame", "sender", "text"), WIRE, ids=[f"{w[1]}-{w[0].type}" for w in WIRE])
def test_frames_are_sent_as_today_and_round_trip(frame: p.Frame, sender: str, text: str) -> None:
    assert frame.to_json() == text
    assert p.parse(text, sender) == frame
    assert p.parse(json.loads(text), sender) == frame
    assert p.parse(text) == frame  # no sender: any known type


def test_every_frame_type_is_covered() -> None:
    assert {(w[1], w[0].type) for w in WIRE} == {(s, t) for s, table in p.SENDS.items() for t in table}


def test_optional_fields_may_be_left_out_or_null() -> None:
    assert p.parse('{"type": "hello", "agent_id": "a"}', p.AGENT) == p.Hello(agent_id="a")
    assert p.parse('{"type": "welcome", "agent_id": "a", "targets": []}', p.GATEWAY).kernels is None  # keep them all
    start = p.parse('{"type": "kernel_start", "req_id": "r", "kernel_id": "k", "target": "t", "env": null}', p.GATEWAY)
    assert start == p.KernelStart(kernel_id="k", target="t", env={}, limits=None, req_id="r")
    assert p.parse('{"type": "pong", "ts": null}', p.AGENT) == p.Pong(ts=None)


def test_unknown_fields_and_the_other_sides_fields_are_ignored() -> None:
    frame = p.parse({"type": "kernel_msg", "kernel_id": "k", "channel": "iopub", "msg": JMSG, "max_bytes": 9, "new": 1},
                    p.AGENT)
    assert frame == p.KernelMsg(kernel_id="k", channel="iopub", msg=JMSG)  # max_bytes is the gateway's to send
    frame = p.parse({"type": "kernel_msg", "kernel_id": "k", "channel": "shell", "msg": JMSG, "seq": 9}, p.GATEWAY)
    assert frame == p.KernelMsg(kernel_id="k", channel="shell", msg=JMSG)  # seq is the agent's


# ------------------------------------------------------------------------- bad frames

BAD = [
    ("{nope", p.AGENT, "not JSON", None),
    ("[1, 2]", p.AGENT, "must be a JSON object, got an array", None),
    ('{"agent_id": "a"}', p.AGENT, 'no "type"', "type"),
    ('{"type": 3}', p.GATEWAY, 'no "type"', "type"),
    ('{"type": "teleport"}', p.AGENT, "unknown frame type 'teleport'", "type"),
    ('{"type": "kernel_start", "req_id": "r", "kernel_id": "k", "target": "t"}', p.AGENT,
     "kernel_start frame: the agent may not send it", "type"),
    ('{"type": "hello", "agent_id": "a"}', p.GATEWAY, "hello frame: the gateway may not send it", "type"),
    ('{"type": "hello"}', p.AGENT, "hello frame: field 'agent_id' is missing", "agent_id"),
    ('{"type": "hello", "agent_id": 7}', p.AGENT, "hello frame: field 'agent_id' must be a string, got a number", "agent_id"),
    ('{"type": "hello", "agent_id": "a", "tags": "x"}', p.AGENT, "field 'tags' must be an array, got a string", "tags"),
    ('{"type": "hello", "agent_id": "a", "targets": [{"name": "pg", "kind": "sql"}, {"name": "", "kind": "sql"}]}', p.AGENT,
     "hello frame: field 'targets[1].name' must not be empty", "targets[1].name"),
    ('{"type": "hello", "agent_id": "a", "targets": [{"name": "pg", "kind": null}]}', p.AGENT,
     "field 'targets[0].kind' must be a string, got null", "targets[0].kind"),
    ('{"type": "hello", "agent_id": "a", "targets": ["pg"]}', p.AGENT, "field 'targets[0]' must be an object, got a string", "targets[0]"),
    ('{"type": "reply", "req_id": "r", "ok": "yes"}', p.AGENT, "reply frame: field 'ok' must be a boolean, got a string", "ok"),
    ('{"type": "reply", "ok": true}', p.AGENT, "reply frame: field 'req_id' is missing", "req_id"),
    ('{"type": "reply", "req_id": "r", "ok": true, "rows": [1, "2"]}', p.AGENT,
     "field 'rows[1]' must be a number, got a string", "rows[1]"),
    ('{"type": "kernel_msg", "kernel_id": "k", "channel": "bogus", "msg": {}}', p.AGENT,
     "kernel_msg frame: field 'channel' must be one of 'iopub', 'shell', 'control', 'stdin', got 'bogus'", "channel"),
    ('{"type": "kernel_msg", "kernel_id": "k", "channel": "iopub", "msg": {"content": {}}}', p.AGENT,
     "field 'msg.header' must be an object, got null", "msg.header"),
    ('{"type": "kernel_msg", "kernel_id": "k", "channel": "iopub", "msg": {"header": {"msg_id": "m"}}}', p.AGENT,
     "field 'msg.header.msg_type' must be a string", "msg.header.msg_type"),
    ('{"type": "kernel_msg", "kernel_id": "k", "channel": "iopub", "msg": {"header": {"msg_id": "m", "msg_type": "x"}, "content": []}}',
     p.AGENT, "field 'msg.content' must be an object, got an array", "msg.content"),
    ('{"type": "kernel_msg", "kernel_id": "k", "channel": "iopub", "msg": ' + json.dumps(JMSG) + "}", p.GATEWAY,
     "kernel_msg frame: field 'channel' must be one of 'shell', 'control', 'stdin' towards a kernel, got 'iopub'", "channel"),
    ('{"type": "kernel_msg", "kernel_id": "k", "channel": "shell", "msg": ' + json.dumps(JMSG) + ', "task_id": true}', p.GATEWAY,
     "field 'task_id' must be an integer, got a boolean", "task_id"),
    ('{"type": "kernel_status", "kernel_id": "k", "state": "sleepy"}', p.AGENT,
     "kernel_status frame: field 'state' must be one of", "state"),
    ('{"type": "ping"}', p.GATEWAY, "ping frame: field 'ts' is missing", "ts"),
    ('{"type": "ping", "ts": "now"}', p.GATEWAY, "ping frame: field 'ts' must be a number, got a string", "ts"),
    ('{"type": "error", "code": "4003", "message": "m"}', p.GATEWAY, "error frame: field 'code' must be an integer", "code"),
    ('{"type": "welcome", "agent_id": "a", "targets": [], "refused": [{"target": "x"}]}', p.GATEWAY,
     "welcome frame: field 'refused[0].reason' is missing", "refused[0].reason"),
    ('{"type": "kernel_start", "req_id": "r", "kernel_id": "k", "target": "t", "env": {"KERNEL_X": 1}}', p.GATEWAY,
     "kernel_start frame: field 'env.KERNEL_X' must be a string, got a number", "env.KERNEL_X"),
    ('{"type": "kernel_start", "req_id": "r", "kernel_id": "k", "target": "t", "limits": {"max_rows": 1.5}}', p.GATEWAY,
     "field 'limits.max_rows' must be an integer, got a number", "limits.max_rows"),
    ('{"type": "kernel_stop", "kernel_id": "k"}', p.GATEWAY, "kernel_stop frame: field 'req_id' is missing", "req_id"),
    ('{"type": "kernel_stop", "kernel_id": "k", "req_id": ""}', p.GATEWAY, "field 'req_id' must not be empty", "req_id"),
    ('{"type": "explain", "req_id": "r", "target": "t", "statements": "DELETE"}', p.GATEWAY,
     "explain frame: field 'statements' must be an array, got a string", "statements"),
]


@pytest.mark.parametrize(("raw", "sender", "message", "field"), BAD)
def test_bad_frames_are_refused_naming_the_field(raw: str, sender: str, message: str, field: str | None) -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.parse(raw, sender)
    assert message in caught.value.message
    assert caught.value.field == field


def test_a_refusal_keeps_the_req_id_so_a_request_can_be_answered() -> None:
    with pytest.raises(p.ProtocolError) as caught:
        p.parse('{"type": "kernel_start", "req_id": "r9", "kernel_id": 5, "target": "t"}', p.GATEWAY)
    assert caught.value.req_id == "r9" and caught.value.frame_type == "kernel_start"


# --------------------------------------------------------------- the gateway refuses

class _Sessions:
    """Stands in for gateway/sessions.AgentSessions: records the frames the socket handler passes on."""

    def __init__(self) -> None:
        self.frames: list[p.Frame] = []

    def on_message(self, conn: Any, frame: p.Frame) -> None:
        self.frames.append(frame)

    async def room(self, frame: p.Frame) -> None:  # no back-pressure here
        return None


def _agent_socket(connected: bool = True) -> tuple[Any, _Sessions, list[dict[str, Any]], list[int]]:
    from cellgate.gateway.agents import AgentConnection
    from cellgate.gateway.handlers.agent_ws import AgentSocketHandler

    sent: list[dict[str, Any]] = []
    closed: list[int] = []
    service = _Sessions()
    handler = AgentSocketHandler.__new__(AgentSocketHandler)
    handler.application = SimpleNamespace(settings={"sessions": service})  # type: ignore[assignment]
    handler.write_message = lambda text: sent.append(json.loads(text))  # type: ignore[assignment,method-assign]
    handler.close = lambda code=None, reason=None: closed.append(code)  # type: ignore[assignment,method-assign]
    handler._closed = lambda: bool(closed)  # type: ignore[method-assign]
    if connected:
        handler.conn = AgentConnection(agent_id="eu-1", token_name="t", send_text=lambda text: sent.append(json.loads(text)))
    return handler, service, sent, closed


def test_the_gateway_refuses_an_invalid_frame_whole(caplog: pytest.LogCaptureFixture) -> None:
    handler, service, sent, closed = _agent_socket()
    bad = {"type": "kernel_status", "kernel_id": "k", "state": "dead", "reason": 3}
    with caplog.at_level(logging.WARNING, "cellgate.gateway.agent_ws"):
        asyncio.run(handler.on_message(json.dumps(bad)))
        asyncio.run(handler.on_message("{not json"))
        asyncio.run(handler.on_message(json.dumps({"type": "kernel_start", "req_id": "r", "kernel_id": "k", "target": "t"})))
    assert service.frames == []  # nothing applied
    assert [f["code"] for f in sent] == [p.INVALID_FRAME] * 3 and closed == []
    assert sent[0] == {"type": "error", "code": 4400, "message": "kernel_status frame: field 'reason' must be a string, got a number"}
    assert "kernel_start frame: the agent may not send it" in sent[2]["message"]
    assert "field 'reason' must be a string" in caplog.text
    asyncio.run(handler.on_message(json.dumps({"type": "kernel_status", "kernel_id": "k", "state": "dead", "reason": "r"})))
    assert service.frames == [p.KernelStatus(kernel_id="k", state="dead", reason="r")]


def test_an_invalid_reply_fails_its_request_at_once() -> None:
    handler, service, sent, _ = _agent_socket()

    async def _go() -> str:
        from cellgate.gateway.errors import Unavailable
        request = asyncio.ensure_future(handler.conn.request(p.KernelStop(kernel_id="k"), timeout=5))
        await asyncio.sleep(0)
        req_id = sent[-1]["req_id"]
        await handler.on_message(json.dumps({"type": "reply", "req_id": req_id, "ok": "sure"}))
        with pytest.raises(Unavailable) as caught:
            await request
        return str(caught.value.message if hasattr(caught.value, "message") else caught.value)

    assert "its reply was invalid: reply frame: field 'ok' must be a boolean" in asyncio.run(_go())
    assert sent[0]["type"] == "kernel_stop" and sent[1]["code"] == p.INVALID_FRAME
    assert service.frames == []


@pytest.mark.parametrize("first", [
    {"type": "hello", "agent_id": 1},
    {"type": "hello", "agent_id": "a", "targets": [{"kind": "sql"}]},
    {"type": "pong", "ts": 1},
])
def test_a_first_frame_that_is_not_a_valid_hello_closes_with_4000(first: dict[str, Any]) -> None:
    handler, service, sent, closed = _agent_socket(connected=False)
    asyncio.run(handler.on_message(json.dumps(first)))
    assert closed == [p.CLOSE_NOT_HELLO] and [f["type"] for f in sent] == ["error"] and sent[0]["code"] == 4000
    asyncio.run(handler.on_message(json.dumps({"type": "hello", "agent_id": "a"})))  # after the refusal: ignored
    assert len(sent) == 1 and service.frames == []


# ----------------------------------------------------------------- the agent refuses

class _WS:
    def __init__(self, frames: list[str]) -> None:
        self.frames = list(frames)
        self.sent: list[dict[str, Any]] = []

    async def read_message(self) -> str | None:
        return self.frames.pop(0) if self.frames else None

    def write_message(self, text: str) -> asyncio.Future[None]:
        self.sent.append(json.loads(text))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def test_the_agent_refuses_an_invalid_frame_and_answers_a_request(caplog: pytest.LogCaptureFixture) -> None:
    from cellgate.agent.connection import GatewayConnection

    dispatched: list[p.Frame] = []
    welcomed: list[p.Welcome] = []
    conn = GatewayConnection("http://127.0.0.1:1", "t", lambda: p.Hello(agent_id="a"), dispatched.append,
                             on_welcome=welcomed.append)
    ws = _WS([
        '{"type": "kernel_start", "req_id": "r1", "kernel_id": "k", "target": 5}',
        '{"type": "kernel_msg", "kernel_id": "k", "channel": "iopub", "msg": {}}',
        "not json",
        '{"type": "hello", "agent_id": "a"}',
        '{"type": "welcome", "agent_id": "a", "targets": ["pg"], "refused": [{"target": "x"}]}',
        '{"type": "ping", "ts": 2}',
        '{"type": "welcome", "agent_id": "a", "targets": ["pg"]}',
        '{"type": "kernel_stop", "req_id": "r2", "kernel_id": "k"}',
    ])

    async def _go() -> None:
        conn._ws = ws  # type: ignore[assignment]
        await conn._serve(ws)  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, "cellgate.agent.connection"):
        asyncio.run(_go())
    assert ws.sent == [
        {"type": "reply", "req_id": "r1", "ok": False,
         "error": "invalid frame: kernel_start frame: field 'target' must be a string, got a number"},
        {"type": "pong", "ts": 2},
    ]
    assert welcomed == [p.Welcome(agent_id="a", targets=["pg"])]
    assert dispatched == [p.KernelStop(kernel_id="k", req_id="r2")]
    assert "hello frame: the gateway may not send it" in caplog.text
    assert "field 'refused[0].reason' is missing" in caplog.text
