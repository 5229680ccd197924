"""The authorization matrix: every route declares a rule for what it serves, and the running gateway
enforces it for every kind of caller; and the object-level rules of gateway/access.py, as predicates
over callers × objects and as SQL forms that select the same rows on a real store.

``EXPECTED`` is the decided table (docs/api.md): a new endpoint, a new method on an endpoint, or a
changed rule fails here until the table says what it should be.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_harness import Seed, terminate, wait_answering
from sqlalchemy import select
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import CompileError
from sqlalchemy.orm import Session
from tornado import web, websocket

from cellgate.gateway import access, auth, reviews
from cellgate.gateway.app import routes
from cellgate.gateway.auth import Identity
from cellgate.gateway.errors import Forbidden
from cellgate.gateway.handlers.base import RULES, APIHandler, NotFoundHandler
from cellgate.gateway.kernels import LiveKernel
from cellgate.gateway.models import Target, Task, Token, User
from cellgate.gateway.store import Store

BIN = Path(sys.executable).parent
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
NO_KERNEL = "00000000-0000-4000-8000-000000000000"

#: (route pattern, method) -> (rule, concrete path, JSON body or None)
#: {task}: a task of ``user`` waiting for review; {review_task}/{cancel_task}: tasks spent on those routes;
#: {agent_token}: the id of the agent token of ``agent``; {u}: unique per request (for creations).
EXPECTED: dict[tuple[str, str], tuple[str, str, Any]] = {
    (r"/api/v1/?", "GET"): ("anonymous", "/api/v1", None),
    (r"/api/v1/openapi.json", "GET"): ("anonymous", "/api/v1/openapi.json", None),
    (r"/tasks/(\d+)", "GET"): ("anonymous", "/tasks/{task}", None),
    (r"/api/kernelspecs/?", "GET"): ("user", "/api/kernelspecs", None),
    (r"/api/kernelspecs/(?P<name>[\w.\-]+)/?", "GET"): ("user", "/api/kernelspecs/t1", None),
    (r"/kernelspecs/(?P<name>[\w.\-]+)/(?P<path>.+)", "GET"): ("user", "/kernelspecs/t1/logo-64x64.png", None),
    (r"/api/kernels/?", "GET"): ("user", "/api/kernels", None),
    (r"/api/kernels/?", "POST"): ("user", "/api/kernels", {"name": "t1"}),
    (r"/api/kernels/(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)/?", "GET"): ("user", f"/api/kernels/{NO_KERNEL}", None),
    (r"/api/kernels/(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)/?", "DELETE"): ("user", f"/api/kernels/{NO_KERNEL}", None),
    (r"/api/kernels/(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)/(?P<action>interrupt|restart)/?", "POST"):
        ("user", f"/api/kernels/{NO_KERNEL}/interrupt", {}),
    (r"/api/kernels/(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)/channels", "GET"): ("user", f"/api/kernels/{NO_KERNEL}/channels", None),
    (r"/api/v1/agent", "GET"): ("agent", "/api/v1/agent", None),
    (r"/api/v1/tasks/?", "GET"): ("user", "/api/v1/tasks", None),
    (r"/api/v1/tasks/?", "POST"): ("user", "/api/v1/tasks", {"target": "t1", "code": "select 1", "why": "authz"}),
    (r"/api/v1/tasks/(?P<task_id>\d+)/?", "GET"): ("user", "/api/v1/tasks/{task}", None),
    (r"/api/v1/tasks/(?P<task_id>\d+)/output", "GET"): ("user", "/api/v1/tasks/{task}/output?wait=0", None),
    (r"/api/v1/tasks/(?P<task_id>\d+)/notebook", "GET"): ("user", "/api/v1/tasks/{task}/notebook", None),
    (r"/api/v1/tasks/(?P<task_id>\d+)/review", "POST"):
        ("user", "/api/v1/tasks/{review_task}/review", {"decision": "approve", "comment": "ok"}),
    (r"/api/v1/tasks/(?P<task_id>\d+)/cancel", "POST"): ("user", "/api/v1/tasks/{cancel_task}/cancel", {}),
    (r"/api/v1/reviews/?", "GET"): ("user", "/api/v1/reviews", None),
    (r"/api/v1/targets/?", "GET"): ("user", "/api/v1/targets", None),
    (r"/api/v1/targets/(?P<name>[^/]+)/?", "GET"): ("user", "/api/v1/targets/t1", None),
    (r"/api/v1/targets/(?P<name>[^/]+)/?", "PUT"): ("admin", "/api/v1/targets/t2", {"description": "made by authz"}),
    (r"/api/v1/apply/?", "POST"): ("admin", "/api/v1/apply", {"document": {}, "dry_run": True}),
    (r"/api/v1/me/?", "GET"): ("user", "/api/v1/me", None),
    (r"/api/v1/users/?", "GET"): ("admin", "/api/v1/users", None),
    (r"/api/v1/users/?", "POST"): ("admin", "/api/v1/users", {"name": "made-{u}"}),
    (r"/api/v1/users/(?P<name>[^/]+)/?", "DELETE"): ("admin", "/api/v1/users/victim", None),
    (r"/api/v1/users/(?P<name>[^/]+)/tokens/?", "POST"): ("admin", "/api/v1/users/victim/tokens", {"note": "authz"}),
    (r"/api/v1/groups/?", "GET"): ("admin", "/api/v1/groups", None),
    (r"/api/v1/groups/?", "POST"): ("admin", "/api/v1/groups", {"name": "made-{u}"}),
    (r"/api/v1/groups/(?P<group>[^/]+)/members/(?P<user>[^/]+)/?", "PUT"): ("admin", "/api/v1/groups/spare/members/victim", None),
    (r"/api/v1/groups/(?P<group>[^/]+)/members/(?P<user>[^/]+)/?", "DELETE"):
        ("admin", "/api/v1/groups/spare/members/victim", None),
    (r"/api/v1/agent-tokens/?", "GET"): ("admin", "/api/v1/agent-tokens", None),
    (r"/api/v1/agent-tokens/?", "POST"): ("admin", "/api/v1/agent-tokens", {"name": "made-{u}", "targets": ["t1"]}),
    (r"/api/v1/agent-tokens/(?P<token_id>\d+)/?", "PUT"): ("admin", "/api/v1/agent-tokens/{agent_token}", {"targets": ["t1"]}),
    (r"/api/v1/agents/?", "GET"): ("admin", "/api/v1/agents", None),
    (r"/api/v1/audit/?", "GET"): ("admin", "/api/v1/audit?format=jsonl", None),
    (r"/api/v1/audit/verify/?", "GET"): ("admin", "/api/v1/audit/verify", None),
    # sign-in (this gateway has no OIDC issuer: 404 for everyone; tests/oidc signs in for real)
    (r"/login/?", "GET"): ("anonymous", "/login", None),
    (r"/oauth/callback/?", "GET"): ("anonymous", "/oauth/callback?state=authz&code=authz", None),
    (r"/api/v1/login/token/?", "POST"): ("anonymous", "/api/v1/login/token", {"code": "authz", "code_verifier": "v" * 43}),
    (r"/api/v1/tokens/?", "GET"): ("user", "/api/v1/tokens", None),
    (r"/api/v1/tokens/(?P<token_id>\d+)/?", "DELETE"): ("user", "/api/v1/tokens/999999", None),
    # Slack: the links are admin's; Slack's own requests are anonymous at the HTTP level (see SIGNED)
    (r"/api/v1/slack/links/?", "GET"): ("admin", "/api/v1/slack/links", None),
    (r"/api/v1/slack/links/(?P<slack_user_id>[^/]+)/?", "PUT"): ("admin", "/api/v1/slack/links/UAUTHZ", {"user": "victim"}),
    (r"/api/v1/slack/links/(?P<slack_user_id>[^/]+)/?", "DELETE"): ("admin", "/api/v1/slack/links/UAUTHZ", None),
    (r"/slack/interactions", "POST"): ("anonymous", "/slack/interactions", {}),
    (r"/slack/commands", "POST"): ("anonymous", "/slack/commands", {}),
    (r"/slack/events", "POST"): ("anonymous", "/slack/events", {}),
    # templates: listing and showing are every user's (each sees what they may run); the repository is admins';
    # the push webhook is anonymous at the HTTP level and signed (see SIGNED)
    (r"/api/v1/templates/?", "GET"): ("user", "/api/v1/templates", None),
    (r"/api/v1/templates/(?P<name>[\w][\w./-]*)", "GET"): ("user", "/api/v1/templates/fixes/refund", None),
    (r"/api/v1/template-runs/?", "POST"): ("user", "/api/v1/template-runs", {"template": "fixes/refund", "target": "t1"}),
    (r"/api/v1/schedules/?", "GET"): ("user", "/api/v1/schedules", None),
    (r"/api/v1/schedules/?", "POST"): ("user", "/api/v1/schedules", {"name": "s-{u}", "template": "fixes/refund",
                                                                    "target": "t1", "cron": "0 8 * * *"}),
    (r"/api/v1/schedules/(?P<name>[a-z0-9][a-z0-9._-]*)/?", "GET"): ("user", "/api/v1/schedules/nope", None),
    (r"/api/v1/schedules/(?P<name>[a-z0-9][a-z0-9._-]*)/?", "DELETE"): ("user", "/api/v1/schedules/nope", None),
    (r"/api/v1/schedules/(?P<name>[a-z0-9][a-z0-9._-]*)/resubmit", "POST"): ("user", "/api/v1/schedules/nope/resubmit", {}),
    (r"/api/v1/template-repository/?", "GET"): ("admin", "/api/v1/template-repository", None),
    (r"/api/v1/template-repository/?", "POST"): ("admin", "/api/v1/template-repository", None),
    (r"/api/v1/template-repository/webhook", "POST"): ("anonymous", "/api/v1/template-repository/webhook", {}),
}
#: the catch-all: every method, anonymous, always 404
CATCH_ALL = r"/api/.*"
WEBSOCKETS = {r"/api/v1/agent", r"/api/kernels/(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)/channels"}

#: routes open at the HTTP level (``anonymous``: Slack and a repository host send no cellgate token) that
#: authenticate inside the handler by the request's signature. A cellgate token counts for nothing there:
#: unsigned, every caller gets 401 (and this gateway has no signing secret at all). tests/slack and
#: tests/gateway/test_templates_api.py cover the signed requests.
SIGNED = {(r"/slack/interactions", "POST"), (r"/slack/commands", "POST"), (r"/slack/events", "POST"),
          (r"/api/v1/template-repository/webhook", "POST")}

#: 403s that are object-level rules, not role rules: (pattern, method, who) -> why
OBJECT_LEVEL_403 = {
    (r"/api/v1/tasks/(?P<task_id>\d+)/review", "POST", "user"): "the author can never review their own task",
    (r"/api/v1/tasks/(?P<task_id>\d+)/cancel", "POST", "reviewer"): "only the author or an admin cancels",
}


def implemented(cls: type) -> set[str]:
    """HTTP methods the class serves: get/post/… defined below tornado's RequestHandler (inherited too)."""
    return {m for m in METHODS if getattr(cls, m.lower()) is not getattr(web.RequestHandler, m.lower())}


def own(cls: type) -> set[str]:
    """HTTP methods the class itself defines (not inherited from another handler)."""
    return {m for m in METHODS if m.lower() in vars(cls)}


def inherited_without_rule() -> list[tuple[str, str]]:
    """(pattern, method) a handler inherits from another handler but has no rule for: refused (405)."""
    return [(pattern, m) for pattern, cls in routes() if cls is not NotFoundHandler
            for m in sorted(implemented(cls) - own(cls) - set(cls.access))]


# ----------------------------------------------------------------------- declarations

def test_every_route_declares_a_known_rule_for_exactly_what_it_serves() -> None:
    problems = []
    for pattern, cls in routes():
        access = getattr(cls, "access", None)
        if not isinstance(access, dict):
            problems.append(f"{cls.__name__} ({pattern}) declares no access")
            continue
        unknown = {m: r for m, r in access.items() if r not in RULES}
        if unknown:
            problems.append(f"{cls.__name__} ({pattern}): unknown rules {unknown}")
        if cls is NotFoundHandler:
            continue
        served = implemented(cls)
        if own(cls) - set(access):
            problems.append(f"{cls.__name__} ({pattern}) serves {sorted(own(cls) - set(access))} without a rule")
        if set(access) - served:
            problems.append(f"{cls.__name__} ({pattern}) declares {sorted(set(access) - served)} it does not serve")
    assert not problems, "\n".join(problems)
    # a method inherited from another handler without a rule is refused (test_inherited_methods_without_a_rule_are_refused)
    assert len(inherited_without_rule()) <= 2, f"more handlers inherit methods they have no rule for: {inherited_without_rule()}"


def test_the_declared_rules_are_the_decided_ones() -> None:
    declared = {(pattern, m): rule for pattern, cls in routes() if cls is not NotFoundHandler
                for m, rule in cls.access.items()}
    decided = {key: rule for key, (rule, _, _) in EXPECTED.items()}
    missing = sorted(set(declared) - set(decided))
    assert not missing, f"routes without a decided rule in EXPECTED (add them, with their rule): {missing}"
    assert not sorted(set(decided) - set(declared)), "EXPECTED lists routes the gateway no longer has"
    changed = {key: (declared[key], decided[key]) for key in declared if declared[key] != decided[key]}
    assert not changed, f"rules that differ from the decided ones (declared, decided): {changed}"


def test_rules_are_checked_where_they_are_declared() -> None:
    """APIHandlers check in prepare(); websockets check in get() before the upgrade (seen live below);
    any other handler may only have anonymous rules, since nothing checks them."""
    last_pattern, last_cls = routes()[-1]
    assert (last_pattern, last_cls) == (CATCH_ALL, NotFoundHandler), "the catch-all must come last"
    assert NotFoundHandler.access == {m: "anonymous" for m in METHODS}
    for pattern, cls in routes():
        if issubclass(cls, APIHandler):
            assert cls.prepare is APIHandler.prepare or cls is NotFoundHandler, f"{cls.__name__} overrides prepare()"
        elif issubclass(cls, websocket.WebSocketHandler):
            assert pattern in WEBSOCKETS, f"a new websocket route {pattern}: add it to WEBSOCKETS"
            assert "get" in vars(cls), f"{cls.__name__} must authenticate in its own get()"
        else:
            assert set(cls.access.values()) == {"anonymous"}, f"{cls.__name__} is not an APIHandler: nothing checks its rules"


def test_openapi_document_carries_the_rules() -> None:
    from cellgate import __version__
    from cellgate.gateway import openapi
    from cellgate.gateway.app import routes
    doc = openapi.document(routes(), __version__)
    rules = {(path, m.upper()): op["x-cellgate-access"] for path, ops in doc["paths"].items() for m, op in ops.items()}
    assert rules[("/api/v1/users", "POST")] == "admin"
    assert rules[("/api/v1/agent", "GET")] == "agent"
    assert len(rules) == len(EXPECTED)


# --------------------------------------------------------------------------- live gateway

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    url: str
    tokens: dict[str, str | None]
    ids: dict[str, int]
    log: Path

    def client(self, who: str) -> httpx.Client:
        token = self.tokens[who]
        headers = {"Authorization": f"token {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url} → {resp.status_code} {resp.text}"
    return resp.json()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("authz")
    db = f"sqlite:///{tmp}/gw.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    init = subprocess.run([str(BIN / "cellgate"), "init-admin", "admin", "--db-url", db], capture_output=True,
                          text=True, timeout=60, env=env, cwd=tmp)
    assert init.returncode == 0, init.stderr
    admin_token = init.stdout.strip().splitlines()[-1]
    assert admin_token.startswith("cg_")

    port = _free_port()
    log = tmp / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "cellgate"), "gateway", "--port", str(port), "--db-url", db],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answering(proc, url, log)

        with httpx.Client(base_url=url, headers={"Authorization": f"token {admin_token}"}, timeout=30) as adm:
            for name in ("user1", "rev1", "victim"):
                _ok(adm.post("/api/v1/users", json={"name": name}), 201)
            for group in ("devs", "dba", "spare"):
                _ok(adm.post("/api/v1/groups", json={"name": group}), 201)
            # the admin reviews for dba too, so that no user route answers it 403 (being admin is not being a reviewer)
            for group, member in (("devs", "user1"), ("dba", "rev1"), ("dba", "admin")):
                _ok(adm.put(f"/api/v1/groups/{group}/members/{member}"))
            user_token = _ok(adm.post("/api/v1/users/user1/tokens", json={"note": "authz"}), 201)["token"]
            rev_token = _ok(adm.post("/api/v1/users/rev1/tokens", json={"note": "authz"}), 201)["token"]
            _ok(adm.put("/api/v1/targets/t1", json={"description": "authz", "submit_groups": [], "review_groups": ["dba"],
                                                     "kind": "sql", "dialect": "sqlite"}))
            made = _ok(adm.post("/api/v1/agent-tokens", json={"name": "agent1", "targets": ["t1"]}), 201)
            agent_token = made["token"]
        ids = {"agent_token": made["id"]}
        with httpx.Client(base_url=url, headers={"Authorization": f"token {user_token}"}, timeout=30) as usr:
            for key in ("task", "review_task", "cancel_task"):
                task = _ok(usr.post("/api/v1/tasks", json={"target": "t1", "code": f"select '{key}'", "why": "authz"}), 201)
                assert task["status"] == "pending_review", task
                ids[key] = task["id"]
        yield Gateway(url=url, tokens={"anonymous": None, "agent": agent_token, "user": user_token,
                                       "reviewer": rev_token, "admin": admin_token}, ids=ids, log=log)
    finally:
        terminate(proc)


WHO = ("anonymous", "agent", "user", "reviewer", "admin")


def expected_class(rule: str, who: str) -> str:
    """'401', '403' or 'allowed' (anything but 401/403, and never a 500)."""
    if rule == "anonymous":
        return "allowed"
    if who == "anonymous":
        return "401"
    if rule == "agent":
        return "allowed" if who == "agent" else "403"
    if who == "agent":
        return "403"
    if rule == "admin" and who != "admin":
        return "403"
    return "allowed"


def assert_error_shape(resp: httpx.Response) -> None:
    """``{"status": N, "message": str}`` (an error may add fields, e.g. ``field`` from /api/v1/apply)."""
    assert resp.headers.get("content-type", "").startswith("application/json"), \
        f"{resp.status_code} with content-type {resp.headers.get('content-type')!r}: {resp.text[:200]!r}"
    body = resp.json()
    assert isinstance(body, dict) and {"status", "message"} <= set(body), body
    assert body["status"] == resp.status_code and isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]


CASES = [(pattern, method, who) for (pattern, method) in EXPECTED for who in WHO]


def _case_id(case: tuple[str, str, str]) -> str:
    pattern, method, who = case
    return f"{method} {EXPECTED[(pattern, method)][1]} as {who}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matrix(gateway: Gateway, case: tuple[str, str, str]) -> None:
    pattern, method, who = case
    rule, path, body = EXPECTED[(pattern, method)]
    path = path.format(u=uuid.uuid4().hex[:8], **gateway.ids)
    if body is not None:
        body = json.loads(json.dumps(body).replace("{u}", uuid.uuid4().hex[:8]))
    with gateway.client(who) as client:
        resp = client.request(method, path, json=body)
    status = resp.status_code
    want = "401" if (pattern, method) in SIGNED else expected_class(rule, who)
    where = f"{method} {path} as {who} (rule {rule}) → {status} {resp.text[:300]}"
    if want == "allowed":
        if status == 403 and (pattern, method, who) in OBJECT_LEVEL_403:
            pass
        else:
            assert status not in (401, 403), where
        assert status < 500 or status == 503, where  # 503: no agent serves t1, which is fine here
    else:
        assert status == int(want), where
    if 400 <= status < 600:
        assert_error_shape(resp)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("who", WHO)
def test_unknown_api_path_is_a_json_404_for_everyone(gateway: Gateway, method: str, who: str) -> None:
    with gateway.client(who) as client:
        resp = client.request(method, "/api/v1/no-such-thing", json={} if method in ("POST", "PUT", "PATCH") else None)
    assert resp.status_code == 404
    assert_error_shape(resp)


@pytest.mark.parametrize("pattern_method", inherited_without_rule(), ids=lambda pm: f"{pm[1]} {pm[0]}")
@pytest.mark.parametrize("who", WHO)
def test_inherited_methods_without_a_rule_are_refused(gateway: Gateway, pattern_method: tuple[str, str], who: str) -> None:
    """e.g. TaskReviewHandler inherits TaskHandler.get: with no rule for GET, check_access answers 405."""
    pattern, method = pattern_method
    path = next(p for (pat, _), (_, p, _) in EXPECTED.items() if pat == pattern).split("?")[0].format(u="x", **gateway.ids)
    with gateway.client(who) as client:
        resp = client.request(method, path)
    assert resp.status_code == 405, resp.text
    assert_error_shape(resp)


@pytest.mark.parametrize("who", WHO)
def test_undeclared_method_is_a_json_405(gateway: Gateway, who: str) -> None:
    with gateway.client(who) as client:
        resp = client.request("PATCH", "/api/v1/tasks", json={})
    assert resp.status_code == 405
    assert_error_shape(resp)


@pytest.mark.parametrize("path", ["/api/v1/agent", f"/api/kernels/{NO_KERNEL}/channels"])
def test_websocket_routes_refuse_before_the_upgrade(gateway: Gateway, path: str) -> None:
    """A plain GET: anonymous → 401, the wrong kind of token → 403, both in the JSON shape."""
    right, wrong = ("agent", ("user", "reviewer", "admin")) if path == "/api/v1/agent" else ("user", ("agent",))
    with gateway.client("anonymous") as client:
        resp = client.get(path)
    assert resp.status_code == 401
    assert_error_shape(resp)
    for who in wrong:
        with gateway.client(who) as client:
            resp = client.get(path)
        assert resp.status_code == 403, f"{who}: {resp.status_code} {resp.text}"
        assert_error_shape(resp)
    # with an upgrade request and no token, the socket is refused too
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    resp = httpx.get(gateway.url + path, headers=headers, timeout=10)
    assert resp.status_code == 401
    assert right  # (the right kind passes the check: see test_matrix)


def test_tokens_in_either_scheme_and_bad_tokens(gateway: Gateway) -> None:
    token = gateway.tokens["user"]
    for header in (f"token {token}", f"Bearer {token}", f"bearer  {token}"):
        resp = httpx.get(gateway.url + "/api/v1/me", headers={"Authorization": header}, timeout=10)
        assert resp.status_code == 200, header
        assert resp.json()["name"] == "user1"
    for header in (f"Basic {token}", "token cg_forged", "token", f"{token}"):
        resp = httpx.get(gateway.url + "/api/v1/me", headers={"Authorization": header}, timeout=10)
        assert resp.status_code == 401, header
        assert_error_shape(resp)


def test_deactivated_user_is_refused_on_the_next_request(gateway: Gateway) -> None:
    with gateway.client("admin") as adm:
        _ok(adm.post("/api/v1/users", json={"name": "leaver"}), 201)
        token = _ok(adm.post("/api/v1/users/leaver/tokens", json={}), 201)["token"]
        me = httpx.get(gateway.url + "/api/v1/me", headers={"Authorization": f"token {token}"}, timeout=10)
        assert me.status_code == 200
        _ok(adm.delete("/api/v1/users/leaver"))
    resp = httpx.get(gateway.url + "/api/v1/me", headers={"Authorization": f"token {token}"}, timeout=10)
    assert resp.status_code == 401
    assert_error_shape(resp)


def test_admin_who_is_a_plain_user_elsewhere(gateway: Gateway) -> None:
    """The admin's /me and an audit chain that verifies after everything above."""
    with gateway.client("admin") as adm:
        me = _ok(adm.get("/api/v1/me"))
        assert me["is_admin"] is True and "dba" in me["groups"]
        result = _ok(adm.get("/api/v1/audit/verify"))
        assert result["ok"] is True, result


def test_the_task_list_holds_what_each_caller_may_see(gateway: Gateway) -> None:
    """GET /api/v1/tasks filters with access.visible_tasks: the author sees their own, a reviewer those
    of their review groups, the admin every task; ``limit`` counts visible tasks only."""
    seen = {}
    for who in ("user", "reviewer", "admin"):
        with gateway.client(who) as client:
            seen[who] = _ok(client.get("/api/v1/tasks", params={"limit": 1000}))["tasks"]
    fixture_tasks = {gateway.ids[k] for k in ("task", "review_task", "cancel_task")}
    assert fixture_tasks <= {t["id"] for t in seen["user"]}
    assert all(t["user"] == "user1" for t in seen["user"])
    assert fixture_tasks <= {t["id"] for t in seen["reviewer"]}
    assert all(t["user"] == "rev1" or "dba" in t["review_groups"] for t in seen["reviewer"])
    assert {t["id"] for t in seen["user"]} | {t["id"] for t in seen["reviewer"]} <= {t["id"] for t in seen["admin"]}
    with gateway.client("reviewer") as client:
        first = _ok(client.get("/api/v1/tasks", params={"limit": 1}))["tasks"]
    assert [t["id"] for t in first] == [seen["reviewer"][0]["id"]]


def test_tokens_of_others_are_refused_or_not_disclosed(gateway: Gateway) -> None:
    """access.may_list_tokens (403 with its text) and may_revoke_token (404, as for an absent token)."""
    with gateway.client("admin") as adm:
        admin_tokens = _ok(adm.get("/api/v1/tokens"))["tokens"]
        assert _ok(adm.get("/api/v1/tokens", params={"kind": "agent"}))["tokens"]
        assert {t["user"] for t in _ok(adm.get("/api/v1/tokens", params={"user": "user1"}))["tokens"]} == {"user1"}
    with gateway.client("user") as usr:
        own = _ok(usr.get("/api/v1/tokens"))["tokens"]
        assert own and {t["user"] for t in own} == {"user1"}
        assert {t["user"] for t in _ok(usr.get("/api/v1/tokens", params={"user": "user1"}))["tokens"]} == {"user1"}
        for params in ({"kind": "agent"}, {"user": "admin"}):
            resp = usr.get("/api/v1/tokens", params=params)
            assert resp.status_code == 403, resp.text
            assert resp.json()["message"] == "only admins list other users' or agents' tokens"
        resp = usr.delete(f"/api/v1/tokens/{admin_tokens[0]['id']}")
        assert resp.status_code == 404 and resp.json()["message"] == f"token {admin_tokens[0]['id']} not found", resp.text
        absent = usr.delete("/api/v1/tokens/999999")
        assert absent.status_code == 404 and absent.json()["message"] == "token 999999 not found"
    with gateway.client("admin") as adm:
        assert _ok(adm.get("/api/v1/me"))["name"] == "admin"  # the admin's token was not revoked by the user


# -------------------------------------------------------------- object-level rules (access.py)
#
# The predicates over a matrix of callers × objects, then each SQL form against its predicate on the
# same rows of a real store (SQLite and PostgreSQL).

GATEWAY = Path(__file__).resolve().parents[2] / "gateway"
ODD = 'a"b%_é'  # a group name that would trip a LIKE on the JSON text

#: the callers: (user id, groups, admin); the agent has no user
CALLERS: dict[str, Identity] = {
    "author": Identity(kind="user", name="author", user_id=1, groups=frozenset({"dev"})),
    "reviewer": Identity(kind="user", name="rev", user_id=2, groups=frozenset({"dba"})),
    "outsider": Identity(kind="user", name="ops", user_id=3, groups=frozenset({"ops"})),
    "admin": Identity(kind="user", name="root", user_id=4, is_admin=True),
    "admin_reviewer": Identity(kind="user", name="boss", user_id=5, is_admin=True, groups=frozenset({"dba"})),
    "other": Identity(kind="user", name="other", user_id=6),
    "agent": Identity(kind="agent", name="agent1", token_id=9),
}


def _task(user_id: int = 1, groups: tuple[str, ...] = ("dba",), task_id: int = 7) -> Task:
    return Task(id=task_id, user_id=user_id, review_groups=list(groups), status="pending_review")


#: who sees / cancels a pending task of ``author`` reviewed by dba
SEES = {"author": True, "reviewer": True, "outsider": False, "admin": True, "admin_reviewer": True,
        "other": False, "agent": False}
CANCELS = {"author": True, "reviewer": False, "outsider": False, "admin": True, "admin_reviewer": True,
           "other": False, "agent": False}


@pytest.mark.parametrize("who", CALLERS)
def test_who_sees_and_cancels_a_task(who: str) -> None:
    ident, task = CALLERS[who], _task()
    assert access.may_see_task(ident, task) is SEES[who]
    assert access.may_cancel_task(ident, task) is CANCELS[who]


def test_a_task_without_review_groups_is_seen_by_its_author_and_admins_only() -> None:
    task = _task(groups=())
    assert {w for w, i in CALLERS.items() if access.may_see_task(i, task)} == {"author", "admin", "admin_reviewer"}
    several = _task(groups=("ops", "dba"))
    assert {w for w, i in CALLERS.items() if access.may_see_task(i, several)} == {"author", "reviewer", "outsider", "admin",
                                                                                   "admin_reviewer"}


def _user(user_id: int, name: str, *, active: bool = True, admin: bool = False) -> User:
    return User(id=user_id, name=name, active=active, is_admin=admin)


def test_review_refusals_name_the_rule() -> None:
    task = _task()
    assert access.review_refusal(task, _user(2, "rev"), ["dba"]) is None
    assert access.may_review_task(task, _user(2, "rev"), ["dba", "ops"])
    # the author never reviews, admin or not, whatever their groups
    for author in (_user(1, "author"), _user(1, "author", admin=True)):
        assert access.review_refusal(task, author, ["dba"]) == \
            "task 7 is yours: the author of a task can never review it (ask a member of dba)"
    assert access.review_refusal(task, _user(8, "gone", active=False), ["dba"]) == "gone is deactivated"
    assert access.review_refusal(task, _user(3, "ops"), ["ops"]) == "ops is not in a review group of task 7 (dba)"
    # being admin is not being a reviewer
    assert access.review_refusal(task, _user(4, "root", admin=True), []) == "root is not in a review group of task 7 (dba)"
    assert not access.may_review_task(task, _user(4, "root", admin=True), [])
    assert access.may_decide_reviews(CALLERS["reviewer"]) and not access.may_decide_reviews(CALLERS["agent"])


def test_check_reviewer_raises_the_refusal(store: Store) -> None:
    """reviews.check_reviewer is access.review_refusal with the groups read from the store now."""
    seed = Seed(store)
    author, rev = seed.user("author"), seed.user("rev", ["dba"])
    task_id = seed.task(author, status="pending_review", review_groups=["dba"])

    def _check(session: Session, user_id: int) -> str | None:
        try:
            reviews.check_reviewer(session, session.get(Task, task_id), session.get(User, user_id))
        except Forbidden as exc:
            return exc.message
        return None
    assert store.call(lambda s: _check(s, rev)) is None
    seed.leave("rev", "dba")  # membership is read at decision time
    assert store.call(lambda s: _check(s, rev)) == f"rev is not in a review group of task {task_id} (dba)"


@pytest.mark.parametrize(("who", "submit_groups", "may"), [
    ("author", [], True), ("agent", [], False), ("author", ["dev"], True), ("reviewer", ["dev"], False),
    ("admin", ["dev"], True), ("other", ["dev", "ops"], False), ("outsider", ["dev", "ops"], True),
])
def test_who_may_submit_to_a_target(who: str, submit_groups: list[str], may: bool) -> None:
    target = Target(name="prod", submit_groups=submit_groups, review_groups=[])
    assert access.may_submit(CALLERS[who], target) is may


@pytest.mark.parametrize(("who", "groups", "may"), [
    ("author", ["dev"], True), ("author", [], False), ("admin", [], True), ("reviewer", ["dev"], False),
    ("outsider", ["dev", "ops"], True), ("agent", ["dev"], False), ("other", ["dev"], False),
])
def test_who_may_run_a_template(who: str, groups: list[str], may: bool) -> None:
    """Unlike a target's submit groups, a template without groups is for admins only."""
    assert access.may_run_template(CALLERS[who], groups) is may


@pytest.mark.parametrize("who", sorted(CALLERS))
def test_who_sees_and_manages_a_schedule(who: str) -> None:
    """The author's schedule, reviewed by dba: seen as its review task is, changed by the author and admins."""
    review = _task()
    assert access.may_see_schedule(CALLERS[who], 1, review) is SEES[who]
    assert access.may_see_schedule(CALLERS[who], 1, None) is (who in ("author", "admin", "admin_reviewer"))
    assert access.may_manage_schedule(CALLERS[who], 1) is CANCELS[who]


def test_only_admins_manage_templates() -> None:
    assert {w for w, i in CALLERS.items() if access.may_manage_templates(i)} == {"admin", "admin_reviewer"}


@pytest.mark.parametrize(("targets", "kinds", "target", "may"), [
    (["prod"], [], Target(name="prod", kind="sql"), True), ([], ["sql"], Target(name="prod", kind="sql"), True),
    (["prod"], [], Target(name="prod2", kind="sql"), False), ([], ["python"], Target(name="prod", kind="sql"), False),
    ([], ["sql"], Target(name="new", kind=""), False), ([], [], Target(name="prod", kind="sql"), False),
])
def test_a_template_runs_only_where_it_says(targets: list[str], kinds: list[str], target: Target, may: bool) -> None:
    assert access.template_allows_target(targets, kinds, target) is may


@pytest.mark.parametrize(("who", "owner", "ephemeral", "may"), [
    ("author", 1, False, True), ("author", 1, True, False), ("reviewer", 1, False, False),
    ("admin", 1, False, False), ("admin", 4, False, True), ("agent", 1, False, False), ("other", 0, False, False),
])
def test_who_may_use_a_kernel(who: str, owner: int, ephemeral: bool, may: bool) -> None:
    kernel = LiveKernel(id="k", user_id=owner, user_name="x", target="prod", agent_id="a1", ephemeral=ephemeral)
    assert access.may_use_kernel(CALLERS[who], kernel) is may


@pytest.mark.parametrize(("who", "user_name", "kind", "may"), [
    ("author", None, None, True), ("author", "author", None, True), ("author", "author", "user", True),
    ("author", "rev", None, False), ("author", None, "agent", False), ("author", "author", "agent", False),
    ("admin", "rev", None, True), ("admin", None, "agent", True),
])
def test_who_may_list_tokens(who: str, user_name: str | None, kind: str | None, may: bool) -> None:
    assert access.may_list_tokens(CALLERS[who], user_name, kind) is may


@pytest.mark.parametrize(("who", "owner", "may"), [
    ("author", 1, True), ("author", 2, False), ("author", None, False), ("admin", 1, True), ("admin", None, True),
    ("agent", None, False), ("reviewer", 1, False),
])
def test_who_may_see_and_revoke_a_token(who: str, owner: int | None, may: bool) -> None:
    token = Token(id=3, kind="user" if owner else "agent", user_id=owner)
    assert access.may_see_token(CALLERS[who], token) is may
    assert access.may_revoke_token(CALLERS[who], token) is may


# ----------------------------------------------------------------- the SQL forms, on a store

#: review groups of the tasks each user writes
TASK_GROUPS: list[list[str]] = [[], ["dba"], ["ops"], ["dba", "ops"], ["ops", "dba"], [ODD], ["dbax"], ["db"], ["dba_"]]


def _world(store: Store) -> dict[str, Identity]:
    """Users (one deactivated), tasks of several of them with every TASK_GROUPS, tokens; the callers."""
    seed = Seed(store)
    ids = {"author": seed.user("author", ["dev"]), "rev": seed.user("rev", ["dba"]), "ops": seed.user("ops", ["ops"]),
           "both": seed.user("both", ["dba", "ops"]), "odd": seed.user("odd", [ODD]), "root": seed.user("root", admin=True),
           "other": seed.user("other"), "gone": seed.user("gone", ["dba"])}
    for name in ("author", "rev", "root"):
        for groups in TASK_GROUPS:
            seed.task(ids[name], status="pending_review", review_groups=groups)

    def _tokens(session: Session) -> None:
        for name in ("author", "rev", "root", "gone"):
            auth.new_token(session, "user", user=session.get(User, ids[name]), name=f"{name}'s")
        auth.new_token(session, "agent", name="agent1", agent_targets=["prod"])
        session.get(User, ids["gone"]).active = False
    store.call(_tokens)

    def _identities(session: Session) -> dict[str, Identity]:
        found = {name: Identity(kind="user", name=name, user_id=uid, is_admin=session.get(User, uid).is_admin,
                                groups=frozenset(auth.user_groups(session, uid))) for name, uid in ids.items()}
        return {**found, "agent": Identity(kind="agent", name="agent1", token_id=99)}
    return store.call(_identities)


def _agrees(store: Store, model: type, clause: Any, admits: Any) -> tuple[set[int], set[int]]:
    """(ids the SQL clause selects, ids the predicate admits) over every row of ``model``."""
    def _tx(session: Session) -> tuple[set[int], set[int]]:
        rows = session.execute(select(model)).unique().scalars().all()
        chosen = set(session.execute(select(model.id).where(clause)).scalars())
        return chosen, {r.id for r in rows if admits(session, r)}
    return store.call(_tx)


def test_visible_tasks_selects_what_may_see_task_admits(store: Store) -> None:
    callers = _world(store)
    counts = {}
    for name, ident in callers.items():
        chosen, admitted = _agrees(store, Task, access.visible_tasks(ident), lambda _s, t, i=ident: access.may_see_task(i, t))
        assert chosen == admitted, f"{name}: SQL {sorted(chosen)} ≠ predicate {sorted(admitted)}"
        counts[name] = len(chosen)
    n = len(TASK_GROUPS)
    # own tasks, plus the others' tasks reviewed by one of the caller's groups (two writers besides oneself)
    assert counts == {"author": n, "rev": n + 2 * 3, "ops": 3 * 3, "both": 3 * 4, "odd": 3, "root": 3 * n, "other": 0,
                      "gone": 3 * 3, "agent": 0}


def test_reviewable_tasks_selects_what_may_review_task_admits(store: Store) -> None:
    callers = _world(store)
    counts = {}
    for name, ident in callers.items():
        if ident.kind != "user" or name == "gone":  # the inbox is asked by an active user only
            continue
        groups = sorted(ident.groups)

        def admits(session: Session, task: Task, uid: int = ident.user_id or 0, groups: list[str] = groups) -> bool:
            return access.may_review_task(task, session.get(User, uid), groups)
        chosen, admitted = _agrees(store, Task, access.reviewable_tasks(ident.user_id or 0, groups), admits)
        assert chosen == admitted, f"{name}: SQL {sorted(chosen)} ≠ predicate {sorted(admitted)}"
        counts[name] = len(chosen)
    # never one's own task; the admin, in no group, reviews nothing
    assert counts == {"author": 0, "rev": 2 * 3, "ops": 3 * 3, "both": 3 * 4, "odd": 3, "root": 0, "other": 0}


def test_visible_tokens_selects_what_may_see_token_admits(store: Store) -> None:
    callers = _world(store)
    for name, ident in callers.items():
        chosen, admitted = _agrees(store, Token, access.visible_tokens(ident), lambda _s, t, i=ident: access.may_see_token(i, t))
        assert chosen == admitted, f"{name}: SQL {sorted(chosen)} ≠ predicate {sorted(admitted)}"
        assert len(chosen) == {"root": 5, "author": 1, "rev": 1, "gone": 1}.get(name, 0), name


def test_the_json_overlap_is_refused_on_other_stores() -> None:
    with pytest.raises(CompileError, match="SQLite or PostgreSQL"):
        select(Task.id).where(access.visible_tasks(CALLERS["reviewer"])).compile(dialect=mysql.dialect())


# --------------------------------------------------------------------- one home for the rules

#: every public function of access.py, each covered by a test above: a new rule is added here with its test
COVERED = {"may_see_task", "visible_tasks", "may_cancel_task", "may_decide_reviews", "review_refusal", "may_review_task",
           "reviewable_tasks", "may_submit", "may_use_kernel", "may_list_tokens", "may_see_token", "may_revoke_token",
           "visible_tokens", "may_run_template", "template_allows_target",
           "may_manage_templates", "may_see_schedule", "may_manage_schedule"}

#: modules that read ``.is_admin`` to decide something, and why that is not an object-level rule
ADMIN_DECIDED_ELSEWHERE = {
    "access.py": "the object-level rules",
    "handlers/base.py": "the declared per-route rule `admin`",
    "handlers/login.py": "the signed-in page says '(admin)'",
    "provision.py": "sign-in copies the provider's admin claim onto the user",
}
#: call sites not yet switched to access.py, each to be removed from here when it is
NOT_YET_SWITCHED: dict[str, str] = {}


def test_every_predicate_of_access_is_covered() -> None:
    public = {name for name, fn in vars(access).items()
              if inspect.isfunction(fn) and fn.__module__ == access.__name__ and not name.startswith("_")}
    assert public == COVERED, f"uncovered: {sorted(public - COVERED)}; gone: {sorted(COVERED - public)}"
    for name in public:
        assert (getattr(access, name).__doc__ or "").strip(), f"access.{name} has no docstring stating its rule"


def _deciding_admin_reads(tree: ast.AST) -> list[int]:
    """Lines where ``x.is_admin`` is tested (a condition, a boolean operation, a comparison, ``not``)."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr == "is_admin" and isinstance(node.ctx, ast.Load)):
            continue
        cur, up = node, parents.get(node)
        while up is not None:
            if isinstance(up, (ast.BoolOp, ast.Compare)) or (isinstance(up, ast.UnaryOp) and isinstance(up.op, ast.Not)) \
                    or (isinstance(up, (ast.If, ast.IfExp, ast.While, ast.Assert)) and cur is up.test) \
                    or (isinstance(up, ast.comprehension) and cur in up.ifs):
                lines.append(node.lineno)
                break
            if isinstance(up, ast.stmt):
                break
            cur, up = up, parents.get(up)
    return lines


def test_admin_exceptions_are_decided_only_in_access() -> None:
    """No module but those listed tests ``is_admin``: an object rule with an admin exception lives in access.py."""
    found = {}
    for path in sorted(GATEWAY.rglob("*.py")):
        lines = _deciding_admin_reads(ast.parse(path.read_text(), str(path)))
        if lines:
            found[path.relative_to(GATEWAY).as_posix()] = lines
    unexpected = {f: lines for f, lines in found.items() if f not in ADMIN_DECIDED_ELSEWHERE and f not in NOT_YET_SWITCHED}
    assert not unexpected, f"is_admin decided outside access.py (make it a predicate there): {unexpected}"
    switched = sorted(set(NOT_YET_SWITCHED) - set(found))
    assert not switched, f"{switched} now ask access.py: remove them from NOT_YET_SWITCHED"
    assert set(ADMIN_DECIDED_ELSEWHERE) <= set(found), "an entry of ADMIN_DECIDED_ELSEWHERE no longer reads is_admin: drop it"
