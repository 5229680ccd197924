"""A fake gateway: just enough of docs/api.md to drive the CLI, on 127.0.0.1 in a thread.

Tasks follow a script chosen by their target: each output poll advances the task one step, so
a `cellgate run` walks submitted → pending_review → approved → running → succeeded (or another
ending) deterministically, with no agent and no reviewer.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import datetime, UTC
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

FINAL = {"succeeded", "failed", "rejected", "denied", "cancelled", "expired", "killed", "lost"}
TOKENS = {"good-token": "alice", "carol-token": "carol"}

ANSI_TRACEBACK = [
    "\x1b[0;31m---------------------------------------------------------------------------\x1b[0m",
    "\x1b[0;31mZeroDivisionError\x1b[0m                         Traceback (most recent call last)",
    "Cell \x1b[0;32mIn[1], line 1\x1b[0m\n\x1b[0;32m----> 1\x1b[0m \x1b[38;5;241m1\x1b[39m\x1b[38;5;241m/\x1b[39m\x1b[38;5;241m0\x1b[39m",
    "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero",
]


def stream(name: str, text: str) -> dict[str, Any]:
    return {"output_type": "stream", "name": name, "text": text}


def result(text: str) -> dict[str, Any]:
    return {"output_type": "execute_result", "execution_count": 1, "metadata": {},
            "data": {"text/plain": text, "text/html": f"<b>{text}</b>"}}


# target → (status right after POST, extra fields, [(changes, outputs) per poll])
SCRIPTS: dict[str, tuple[str, dict[str, Any], list[tuple[dict[str, Any], list[dict[str, Any]]]]]] = {
    "db": ("pending_review", {"review_groups": ["dba"]}, [
        ({}, []),
        ({"status": "approved", "decided_by": "bob", "decision_comment": "ok"}, []),
        ({"status": "running"}, [stream("stdout", "hello\n"), stream("stderr", "careful\n")]),
        ({}, [{"output_type": "display_data", "metadata": {}, "data": {"image/png": "AAAA"}}]),
        ({"status": "succeeded"}, [result("42")]),
    ]),
    "rejecting": ("pending_review", {"review_groups": ["dba", "sre"]}, [
        ({"status": "rejected", "decided_by": "bob", "decision_comment": "use the replica"}, []),
    ]),
    "denying": ("denied", {"decided_by": "policy", "decision_comment": "DROP is not allowed on prod"}, []),
    "failing": ("approved", {}, [
        ({"status": "running"}, [stream("stdout", "before\n")]),
        ({"status": "failed", "error": {"ename": "ZeroDivisionError", "evalue": "division by zero"}},
         [{"output_type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
           "traceback": ANSI_TRACEBACK}]),
    ]),
    "losing": ("approved", {}, [
        ({"status": "running"}, []),
        ({"status": "lost", "error": {"ename": "AgentLost", "evalue": "agent a1 disconnected"}}, []),
    ]),
    "expiring": ("pending_review", {"review_groups": ["dba"]}, [({"status": "expired"}, [])]),
    "forever": ("pending_review", {"review_groups": ["dba"]}, []),
}


def now() -> str:
    return datetime(2024, 5, 1, 12, 30, 0, tzinfo=UTC).isoformat().replace("+00:00", "Z")


class FakeGateway:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.tasks: dict[int, dict[str, Any]] = {}
        self.outputs: dict[int, list[dict[str, Any]]] = {}
        self.steps: dict[int, list[Any]] = {}
        self.targets: dict[str, dict[str, Any]] = {
            name: self._target(name, "sql", script[0] == "pending_review")
            for name, script in SCRIPTS.items()
        }
        self.targets["db"]["description"] = "orders database"
        self.users: dict[str, dict[str, Any]] = {
            "alice": {"name": "alice", "is_admin": True, "active": True, "groups": ["dba"]},
        }
        self.groups: dict[str, list[str]] = {"dba": ["alice"]}
        self.audit_ok = True
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def _target(name: str, kind: str, review: bool) -> dict[str, Any]:
        return {"name": name, "description": "", "kind": kind, "language": "sql", "dialect": "postgres",
                "submit_groups": ["eng"], "review_groups": ["dba"] if review else [],
                "requires_review": review, "online": True}

    def add_task(self, target: str, code: str, user: str = "alice", why: str = "") -> dict[str, Any]:
        status, extra, steps = SCRIPTS.get(target, ("pending_review", {}, []))
        tid = len(self.tasks) + 1
        task = {
            "id": tid, "kind": "script", "status": status, "target": target, "user": user,
            "code": code, "code_sha256": "0" * 64, "why": why, "kernel_id": None,
            "notebook_path": None, "cell_id": None, "created_at": now(), "updated_at": now(),
            "review_groups": [], "reviews": [], "decided_by": None, "decision_comment": None,
            "error": None, "url": f"{self.url}/tasks/{tid}",
            "risk": {"level": "medium", "reasons": ["DELETE on orders changes the rows its WHERE clause matches"],
                     "flags": ["write"]},
            "row_estimate": 1, "missing_approvals": ["an approval from dba"],
        }
        task.update(extra)
        self.tasks[tid] = task
        self.outputs[tid] = []
        self.steps[tid] = list(steps)
        return task

    def poll(self, tid: int) -> None:
        """Advance the task one step of its script."""
        if self.steps[tid]:
            changes, outputs = self.steps[tid].pop(0)
            self.tasks[tid].update(changes)
            for out in outputs:
                self.outputs[tid].append({"seq": len(self.outputs[tid]) + 1, "output": out})

    # -- thread ---------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake gateway did not start")

    def stop(self) -> None:
        assert self._loop and self._stop and self._thread
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        finally:
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        app = Application([(r"/api/v1/(.*)", Handler, {"fake": self})])
        sockets = bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        server = HTTPServer(app)
        server.add_sockets(sockets)
        ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()


class ApiFail(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


class Handler(RequestHandler):
    def initialize(self, fake: FakeGateway) -> None:
        self.fake = fake

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish({"status": status_code, "message": "Unhandled error"})

    def fail(self, status: int, message: str) -> None:
        raise ApiFail(status, message)

    async def _handle(self, method: str, path: str) -> None:
        body = json.loads(self.request.body) if self.request.body else None
        query = {k: self.get_argument(k) for k in self.request.arguments}
        self.fake.requests.append({"method": method, "path": path, "query": query, "body": body})
        try:
            auth = self.request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() not in ("token", "bearer") or token not in TOKENS:
                self.fail(401, "invalid or expired token")
            self.user = TOKENS[token]
            result = await self.route(method, path, query, body)
        except ApiFail as exc:
            self.set_status(exc.status)
            self.finish({"status": exc.status, "message": exc.message})
            return
        if result is not None:
            if method == "POST" and path == "tasks":
                self.set_status(201)
            self.finish(json.dumps(result))

    async def get(self, path: str) -> None:
        await self._handle("GET", path)

    async def post(self, path: str) -> None:
        await self._handle("POST", path)

    async def put(self, path: str) -> None:
        await self._handle("PUT", path)

    async def delete(self, path: str) -> None:
        await self._handle("DELETE", path)

    def task(self, tid: str) -> dict[str, Any]:
        task = self.fake.tasks.get(int(tid))
        if task is None:
            self.fail(404, f"task {tid} not found")
        return task

    async def route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:  # noqa: C901
        fake = self.fake
        m = re.fullmatch
        if (method, path) == ("GET", "me"):
            return {"name": self.user, "is_admin": self.user == "alice", "groups": ["dba"]}
        if (method, path) == ("GET", "targets"):
            return {"targets": list(fake.targets.values())}
        if r := m(r"targets/([^/]+)", path):
            name = r.group(1)
            if method == "GET":
                if name not in fake.targets:
                    self.fail(404, f"target {name} not found")
                return fake.targets[name]
            if method == "PUT":
                t = fake.targets.setdefault(name, fake._target(name, None, False))
                t.update(body)
                t["requires_review"] = bool(t["review_groups"])
                return t
        if (method, path) == ("POST", "tasks"):
            if body["target"] not in fake.targets:
                self.fail(404, f"target {body['target']} not found")
            if "notebook" in body:  # a notebook of one's own: the gateway renders it; here it is kept as sent
                task = fake.add_task(body["target"], body["notebook"], self.user, body.get("why") or "")
                task.update(kind="notebook", template={"name": None, "path": body.get("name"), "commit": None,
                                                       "parameters": body.get("parameters")})
                return task
            return fake.add_task(body["target"], body["code"], self.user, body.get("why") or "")
        if (method, path) == ("GET", "tasks"):
            tasks = sorted(fake.tasks.values(), key=lambda t: -t["id"])
            for key in ("status", "target", "user"):
                if query.get(key):
                    tasks = [t for t in tasks if t[key] == query[key]]
            if query.get("limit"):
                tasks = tasks[: int(query["limit"])]
            return {"tasks": tasks}
        if r := m(r"tasks/(\d+)", path):
            return self.task(r.group(1))
        if r := m(r"tasks/(\d+)/output", path):
            task = self.task(r.group(1))
            tid = task["id"]
            if "wait" in query:
                if task["target"] == "forever":
                    await asyncio.sleep(min(float(query["wait"]), 0.2))
                fake.poll(tid)
            after = int(query["after"]) if "after" in query else -1
            outs = [o for o in fake.outputs[tid] if o["seq"] > after]
            done = task["status"] in FINAL and not fake.steps[tid]
            return {"task": task, "outputs": outs, "done": done}
        if r := m(r"tasks/(\d+)/cancel", path):
            task = self.task(r.group(1))
            if task["status"] not in ("submitted", "pending_review"):
                self.fail(409, f"task {task['id']} is {task['status']}; only a waiting task can be cancelled")
            task["status"] = "cancelled"
            return task
        if (method, path) == ("GET", "reviews"):
            return {"tasks": [t for t in fake.tasks.values()
                              if t["status"] == "pending_review" and t["user"] != self.user]}
        if r := m(r"tasks/(\d+)/review", path):
            task = self.task(r.group(1))
            if task["user"] == self.user:
                self.fail(403, "you cannot review your own task")
            if task["status"] != "pending_review":
                self.fail(409, f"task {task['id']} is no longer pending review (it is {task['status']})")
            task["status"] = "approved" if body["decision"] == "approve" else "rejected"
            task["decided_by"], task["decision_comment"] = self.user, body.get("comment")
            task["reviews"].append({"user": self.user, "decision": body["decision"],
                                    "comment": body.get("comment"), "created_at": now()})
            return task
        if self.user != "alice":
            self.fail(403, "administrators only")
        if path == "users":
            if method == "GET":
                return {"users": list(fake.users.values())}
            fake.users[body["name"]] = {"name": body["name"], "is_admin": body["is_admin"],
                                        "active": True, "groups": []}
            return fake.users[body["name"]]
        if (r := m(r"users/([^/]+)", path)) and method == "DELETE":
            fake.users[r.group(1)]["active"] = False
            return fake.users[r.group(1)]
        if path == "groups":
            if method == "GET":
                return {"groups": [{"name": g, "members": m_} for g, m_ in fake.groups.items()]}
            fake.groups[body["name"]] = []
            return {"name": body["name"], "members": []}
        if r := m(r"groups/([^/]+)/members/([^/]+)", path):
            group, user = r.groups()
            if group not in fake.groups:
                self.fail(404, f"group {group} not found")
            if method == "PUT":
                fake.groups[group].append(user)
            else:
                fake.groups[group].remove(user)
            return {"name": group, "members": fake.groups[group]}
        if r := m(r"users/([^/]+)/tokens", path):
            return {"token": f"cg_{r.group(1)}_secret", "id": 7}
        if path == "agent-tokens" and method == "GET":
            return {"agent_tokens": [{"id": 8, "name": "eu-1", "agent": "eu-1", "targets": ["db", "warehouse"], "bound": True,
                                      "prefix": "cg_abcde", "state": "active", "created_at": "2024-01-02T03:04:05.000000Z",
                                      "expires_at": None, "last_used_at": None, "revoked_at": None},
                                     {"id": 3, "name": "old", "agent": None, "targets": [], "bound": False,
                                      "prefix": "cg_fghij", "state": "active", "created_at": "2023-01-02T03:04:05.000000Z",
                                      "expires_at": None, "last_used_at": None, "revoked_at": None}]}
        if path == "agent-tokens":
            unknown = [t for t in body.get("targets") or [] if t not in fake.targets]
            if not body.get("targets") or unknown:
                self.fail(400, f"unknown target(s): {', '.join(unknown)}" if unknown else "field 'targets' must list a target")
            return {"token": f"cga_{body['name']}_secret", "id": 8, "agent": body["name"], "targets": sorted(body["targets"])}
        if (r := m(r"agent-tokens/(\d+)", path)) and method == "PUT":
            return {"id": int(r.group(1)), "agent": "eu-1", "targets": sorted(body["targets"])}
        if path == "agents":
            return {"agents": [{"agent_id": "a1", "version": "0.1.0", "tags": ["eu"],
                                "targets": [{"name": "db"}]}]}
        if path == "audit":
            fmt = query.get("format", "jsonl")
            self.set_header("Content-Type", "text/csv" if fmt == "csv" else "application/jsonl")
            if fmt == "csv":
                self.write("id,kind,user\n")
            for i in range(1, 4):
                self.write(f"{i},task.created,alice\n" if fmt == "csv"
                           else json.dumps({"id": i, "kind": "task.created", "user": "alice"}) + "\n")
                await self.flush()
            self.finish()
            return None
        if path == "audit/verify":
            if fake.audit_ok:
                return {"ok": True, "events": 3, "first_bad": None, "message": "audit chain intact"}
            return {"ok": False, "events": 3, "first_bad": 2,
                    "message": "event 2 does not match the hash chain"}
        self.fail(404, f"no route {method} /api/v1/{path}")
