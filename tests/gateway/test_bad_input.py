"""Bad input gets 400, never a 5xx: regression tests for the inputs that reached the store or Python's
parser and came back as 500 (NUL bytes, a lone surrogate, 100k-deep JSON, ids and ``after`` past
2^63, ``limit=-1``), against a real gateway process on SQLite and on PostgreSQL (where NUL and
2^63 bite); the checks themselves (``gateway/handlers/inputs.py``) unit-tested; malformed agent
frames answered with an ``error`` frame; an unexpected exception answered with the JSON shape."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websocket
from live_gateway import LiveGateway, live_gateway
from tornado import httpclient, httpserver, netutil, web

from cellgate import protocol
from cellgate.gateway.errors import BadRequest
from cellgate.gateway.handlers import inputs
from cellgate.gateway.handlers.base import APIHandler

BIG = 2**63  # one past the largest signed 64-bit integer
COLUMN = inputs.COLUMN_MAX  # the largest id the store's columns hold
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    workdir = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    db = f"sqlite:///{workdir}/gw.db" if request.param == "sqlite" else request.getfixturevalue("pg_database")
    with live_gateway(workdir, db) as gateway:
        yield gateway
        assert gateway.unhandled() == [], "\n".join(gateway.unhandled())
        with gateway.admin() as adm:  # none of the refused requests made or changed a task
            tasks = adm.get("/api/v1/tasks").json()["tasks"]
        assert [(t["id"], t["status"]) for t in tasks] == [(gateway.task_id, "pending_review")]


def _raw(gw: LiveGateway, method: str, path: str, body: bytes | None = None, token: str | None = None) -> httpx.Response:
    with gw.client(token or gw.user_token) as client:
        return client.request(method, path, content=body,
                              headers={"Content-Type": "application/json"} if body is not None else {})


def _refused(resp: httpx.Response, *words: str) -> None:
    assert resp.status_code == 400, f"{resp.request.method} {resp.request.url} → {resp.status_code} {resp.text[:300]}"
    body = resp.json()
    assert set(body) == {"status", "message"} and body["status"] == 400, body
    for word in words:
        assert word in body["message"], body


# the nine of issue 10, and their neighbours -------------------------------------------------------------------------

def test_a_nul_in_a_body_string_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "POST", "/api/v1/tasks", json.dumps({"target": "t1", "code": "select '\x00'"}).encode()),
             "NUL", "code")


def test_a_nul_in_a_body_key_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "PUT", "/api/v1/targets/t1", json.dumps({"policy": {"lim\x00its": {}}}).encode(), gw.admin_token),
             "NUL", "key")


def test_a_nul_in_the_path_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "GET", "/api/v1/targets/t%001"), "NUL")
    _refused(_raw(gw, "PUT", "/api/v1/slack/links/U1%00", json.dumps({"user": "user1"}).encode(), gw.admin_token), "NUL")


def test_a_nul_in_a_query_argument_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "GET", "/api/v1/tasks?target=t%001"), "NUL", "target")


def test_a_lone_surrogate_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "POST", "/api/v1/tasks", b'{"target": "t1", "code": "select \'\\ud800\'"}'), "surrogate")
    _refused(_raw(gw, "POST", "/api/v1/groups", b'{"name": "\\udfff"}', gw.admin_token), "surrogate")


def test_a_surrogate_pair_is_a_character_and_accepted(gw: LiveGateway) -> None:
    resp = _raw(gw, "GET", "/api/v1/tasks?target=%F0%9F%98%80")  # 😀 in the query
    assert resp.status_code == 200 and resp.json() == {"tasks": []}, resp.text
    resp = _raw(gw, "POST", "/api/v1/users", b'{"name": "\\ud83d\\ude00"}', gw.admin_token)  # 😀 in JSON: not a name
    _refused(resp, "user name")


@pytest.mark.parametrize(("inner", "words"), [("\\u0000", "NUL"), ("\\udfff", "surrogate")])
def test_a_notebook_sent_as_text_is_held_to_the_same_limits(gw: LiveGateway, inner: str, words: str) -> None:
    notebook = ('{"cells": [{"cell_type": "code", "source": "select 1' + inner + '", "metadata": {}, "outputs": [], '
                '"execution_count": null}], "metadata": {"kernelspec": {"name": "sql", "language": "sql", '
                '"display_name": "SQL"}}, "nbformat": 4, "nbformat_minor": 5}')
    _refused(_raw(gw, "POST", "/api/v1/tasks", json.dumps({"target": "t1", "notebook": notebook}).encode()),
             "the notebook", words)
    deep = json.dumps({"target": "t1", "notebook": DEEP.decode()}).encode()
    _refused(_raw(gw, "POST", "/api/v1/tasks", deep), "the notebook", "nested too deep")


def test_json_nested_100k_deep_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "POST", "/api/v1/tasks", DEEP), "nested too deep")
    _refused(_raw(gw, "POST", "/api/v1/apply", b'{"document": ' + DEEP + b"}", gw.admin_token), "nested too deep")


def test_json_past_the_depth_limit_is_refused(gw: LiveGateway) -> None:
    deep = {"target": "t1", "code": "select 1", "parameters": json.loads("[" * 70 + "]" * 70)}
    _refused(_raw(gw, "POST", "/api/v1/tasks", json.dumps(deep).encode()), "nested too deep", str(inputs.MAX_DEPTH))


@pytest.mark.parametrize(("method", "path", "admin"), [
    ("GET", "/api/v1/tasks/{}", False),
    ("GET", "/api/v1/tasks/{}/output", False),
    ("GET", "/api/v1/tasks/{}/notebook", False),
    ("POST", "/api/v1/tasks/{}/cancel", False),
    ("POST", "/api/v1/tasks/{}/review", False),
    ("DELETE", "/api/v1/tokens/{}", False),
    ("PUT", "/api/v1/agent-tokens/{}", True),
])
def test_an_id_past_2_63_is_refused(gw: LiveGateway, method: str, path: str, admin: bool) -> None:
    body = json.dumps({"decision": "approve", "targets": ["t1"]}).encode() if method in ("POST", "PUT") else None
    token = gw.admin_token if admin else None
    _refused(_raw(gw, method, path.format(BIG), body, token), "task_id" if "tasks" in path else "token_id")
    _refused(_raw(gw, method, path.format("9" * 400), body, token))
    _refused(_raw(gw, method, path.format(COLUMN + 1), body, token))  # past the id column (int4 on PostgreSQL)
    largest = _raw(gw, method, path.format(COLUMN), body, token)
    assert largest.status_code == 404, largest.text  # in range: asked of the store, not there


def test_after_past_2_63_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "GET", f"/api/v1/tasks/{gw.task_id}/output?after={BIG}"), "after")
    _refused(_raw(gw, "GET", f"/api/v1/tasks/{gw.task_id}/output?after={-BIG - 1}"), "after")
    _refused(_raw(gw, "GET", f"/api/v1/tasks/{gw.task_id}/output?after={COLUMN + 1}"), "after")
    for after in (COLUMN, inputs.COLUMN_MIN):
        resp = _raw(gw, "GET", f"/api/v1/tasks/{gw.task_id}/output?after={after}")
        assert resp.status_code == 200 and resp.json()["done"] is False, resp.text


@pytest.mark.parametrize("limit", ["-1", str(BIG), "ten", "1e3"])
def test_a_bad_limit_is_refused(gw: LiveGateway, limit: str) -> None:
    _refused(_raw(gw, "GET", f"/api/v1/tasks?limit={limit}"), "limit")


def test_limit_zero_and_past_the_cap(gw: LiveGateway) -> None:
    assert _raw(gw, "GET", "/api/v1/tasks?limit=0").json() == {"tasks": []}
    assert len(_raw(gw, "GET", "/api/v1/tasks?limit=5000").json()["tasks"]) == 1  # capped at 1000, not refused


@pytest.mark.parametrize("wait", ["nan", "inf", "-1", "soon"])
def test_a_bad_wait_is_refused(gw: LiveGateway, wait: str) -> None:
    _refused(_raw(gw, "GET", f"/api/v1/tasks/{gw.task_id}/output?wait={wait}"), "wait")


def test_a_status_outside_the_list_is_refused(gw: LiveGateway) -> None:
    _refused(_raw(gw, "GET", "/api/v1/tasks?status=done"), "status", "pending_review")


# the agent WebSocket: a malformed frame gets an error frame -----------------------------------------------------------

def test_malformed_agent_frames_get_an_error_frame(gw: LiveGateway) -> None:
    ws = websocket.create_connection(gw.url.replace("http", "ws") + "/api/v1/agent",
                                     header=[f"Authorization: token {gw.agent_token}"], timeout=10)
    try:
        for frame, words in (("{nope", "not JSON"), ("[1, 2]", "JSON object"), ('{"type": 7}', "type"),
                             ('{"type": "launch"}', "unknown frame type"), (DEEP.decode(), "nested too deep")):
            ws.send(frame)
            answer = json.loads(ws.recv())
            assert answer["type"] == "error" and answer["code"] == protocol.INVALID_FRAME, answer
            assert words in answer["message"], answer
        ws.send(json.dumps({"type": "hello", "agent_id": 5}))  # an invalid hello: refused, and the socket closed
        answer = json.loads(ws.recv())
        assert answer["type"] == "error" and answer["code"] == protocol.CLOSE_NOT_HELLO, answer
        opcode, data = ws.recv_data(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == protocol.CLOSE_NOT_HELLO
    finally:
        ws.shutdown()  # the socket itself (close() leaves it open once the gateway closed first)
    gw.assert_alive()


def _serve_agent(gw: LiveGateway) -> tuple[websocket.WebSocket, threading.Thread]:
    """A fake agent for ``t1``: says hello, then answers pings and every request with ``ok``."""
    agent = websocket.create_connection(gw.url.replace("http", "ws") + "/api/v1/agent",
                                        header=[f"Authorization: token {gw.agent_token}"], timeout=15)
    agent.send(json.dumps({"type": "hello", "agent_id": "agent1", "version": "test", "tags": [], "kernels": [],
                           "targets": [{"name": "t1", "kind": "sql", "language": "sql", "display_name": "t1",
                                        "dialect": "sqlite"}]}))
    assert json.loads(agent.recv())["type"] == "welcome"

    def serve() -> None:
        while True:
            try:
                opcode, data = agent.recv_data(control_frame=True)
            except (websocket.WebSocketException, OSError):
                return
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            frame = json.loads(data)
            if frame["type"] == "ping":
                agent.send(json.dumps({"type": "pong", "ts": frame.get("ts")}))
            elif "req_id" in frame:
                agent.send(json.dumps({"type": "reply", "req_id": frame["req_id"], "ok": True}))
    thread = threading.Thread(target=serve, daemon=True, name="fake-agent")
    thread.start()
    return agent, thread


def test_a_kernel_message_the_store_cannot_hold_gets_an_error_reply(gw: LiveGateway) -> None:
    agent, thread = _serve_agent(gw)
    client: websocket.WebSocket | None = None
    try:
        with gw.user() as api:
            made = api.post("/api/kernels", json={"name": "t1"})
        assert made.status_code == 201, made.text
        client = websocket.create_connection(f"{gw.url.replace('http', 'ws')}/api/kernels/{made.json()['id']}/channels",
                                             header=[f"Authorization: token {gw.user_token}"], timeout=15)
        client.send(DEEP.decode())  # not even a message: dropped, the socket stays
        for code, words in (("select '\x00'", "NUL"), ("select '\udc00'", "surrogate")):
            msg_id = uuid.uuid4().hex
            client.send(json.dumps({"channel": "shell", "header": {"msg_id": msg_id, "msg_type": "execute_request",
                                                                   "session": "s", "username": "u", "version": "5.3"},
                                    "parent_header": {}, "metadata": {}, "content": {"code": code, "silent": False}}))
            replies = []
            while not any(r.get("msg_type") == "execute_reply" for r in replies):
                replies.append(json.loads(client.recv()))
            reply = next(r for r in replies if r["msg_type"] == "execute_reply")
            assert reply["parent_header"]["msg_id"] == msg_id
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "CellgateRefused", reply
            assert words in reply["content"]["evalue"], reply
    finally:
        if client is not None:
            client.shutdown()
        agent.shutdown()
        thread.join(5)
    gw.assert_alive()  # and (the fixture checks) no task was made of either cell


# the checks, unit-tested ------------------------------------------------------------------------------------------------

def test_parse_json_depth_limit_is_exact() -> None:
    ok = "[" * inputs.MAX_DEPTH + "]" * inputs.MAX_DEPTH
    assert inputs.parse_json(ok) is not None
    with pytest.raises(BadRequest, match="nested too deep"):
        inputs.parse_json("[" + ok + "]")
    with pytest.raises(BadRequest, match="nested too deep"):
        inputs.parse_json('{"a": ' * (inputs.MAX_DEPTH + 1) + "1" + "}" * (inputs.MAX_DEPTH + 1))


def test_parse_json_names_where_the_bad_string_is() -> None:
    with pytest.raises(BadRequest, match=r"at policy\.limits\[1\]\).*NUL"):
        inputs.parse_json('{"policy": {"limits": ["x", "a\\u0000b"]}}')
    with pytest.raises(BadRequest, match=r"surrogate \(\\udc00\)"):
        inputs.parse_json('["\\udc00"]')
    assert inputs.parse_json('["\\ud83d\\ude00", "tab\\t", "é"]') == ["😀", "tab\t", "é"]


def test_parse_json_refuses_what_is_not_json() -> None:
    for raw in (b"{", b"\xff\xfe", b"NaN-ish", b'{"a": 1,}'):
        with pytest.raises(BadRequest, match="not valid JSON"):
            inputs.parse_json(raw)


@pytest.mark.parametrize(("text", "ok"), [("0", True), (str(2**31 - 1), True), (str(2**31), False), ("-1", False),
                                          (" 12 ", True), ("1.5", False), ("", False)])
def test_path_id_range(text: str, ok: bool) -> None:
    if ok:
        assert inputs.path_id(text, "task_id") == int(text)
    else:
        with pytest.raises(BadRequest, match="task_id"):
            inputs.path_id(text, "task_id")


def test_query_declarations_parse_and_refuse() -> None:
    limit = inputs.Query("limit", int, default=100, minimum=0)
    assert (limit.parse(None), limit.parse(""), limit.parse("7")) == (100, 100, 7)
    with pytest.raises(BadRequest, match="from 0 to"):
        limit.parse("-1")
    wait = inputs.Query("wait", float, default=0.0, minimum=0.0)
    assert wait.parse("2.5") == 2.5
    for bad in ("nan", "inf", "-0.1"):
        with pytest.raises(BadRequest, match="wait"):
            wait.parse(bad)
    kind = inputs.Query("kind", choices=("user", "agent"))
    with pytest.raises(BadRequest, match="one of user, agent"):
        kind.parse("robot")
    with pytest.raises(LookupError, match="not declared"):
        inputs.Operation(query=(limit,)).argument("offset")


# an unexpected exception: the JSON shape, 500, no traceback ----------------------------------------------------------------

class _Boom(APIHandler):
    access = {"GET": "anonymous"}

    async def get(self) -> None:
        raise RuntimeError("secret detail at /srv/cellgate/x.py line 12")


def test_an_unexpected_exception_is_the_json_shape_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> Any:
        socks = netutil.bind_sockets(0, "127.0.0.1")
        server = httpserver.HTTPServer(web.Application([(r"/boom", _Boom)], store=None))
        server.add_sockets(socks)
        client = httpclient.AsyncHTTPClient(force_instance=True)
        try:
            return await client.fetch(f"http://127.0.0.1:{socks[0].getsockname()[1]}/boom", raise_error=False,
                                      request_timeout=10)
        finally:
            client.close()
            server.stop()
            await server.close_all_connections()

    resp = asyncio.run(main())
    assert resp.code == 500 and resp.headers["Content-Type"].startswith("application/json")
    assert json.loads(resp.body) == {"status": 500, "message": "Unhandled error"}
    assert b"secret" not in resp.body and b"Traceback" not in resp.body
    assert any("unhandled error on GET /boom" in r.getMessage() for r in caplog.records)


def test_every_route_reads_ids_through_the_check() -> None:
    """Every path group that is an id is range-checked (``inputs.ID_PARAMS``), and every ``\\d+`` group is one."""
    from cellgate.gateway.app import routes
    from cellgate.gateway.openapi import path_template

    for pattern, handler in routes():
        for name, regex in path_template(pattern)[1].items():
            if regex == "\\d+" and issubclass(handler, APIHandler):
                assert name in inputs.ID_PARAMS, f"{pattern}: add {name!r} to inputs.ID_PARAMS"

