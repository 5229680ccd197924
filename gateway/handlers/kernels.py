"""Kernel Gateway protocol: kernels (REST) and their channels (WebSocket).

A kernel belongs to the user who started it. Everyone else gets 404 for it, on every route,
the WebSocket included.

On the channels: ``execute_request`` goes through the gate (a task each); the requests in
``ALLOWED`` are passed to the kernel; ``history_request`` is answered by the gateway from its own
record of this user's cells on this kernel (never passed on: a kernel's history could hold what
it was told outside the gate); ``inspect_request``/``complete_request`` are passed on for SQL
targets, and on other (Python) targets only when the target's policy says
``introspection = "allow"`` — ipykernel evaluates code to answer them (property getters,
``__getattr__``), so by default they get an error reply naming the policy. Everything else gets a
visible error reply.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from tornado import web, websocket

from cellgate import protocol

from .. import jmsg, policy
from ..access import may_use_kernel
from ..auth import Identity
from ..errors import BadRequest, Unavailable
from ..kernels import LiveKernel
from ..models import Target, Task
from ..sockets import CLOSE_REVOKED
from .base import APIHandler, Parts, authenticate, check_access, require_upgrade
from .inputs import STRING, Operation, check_tree, obj

log = logging.getLogger("cellgate.gateway.channels")

#: requests passed to the kernel without a task: they read, they do not run code
#: (inspect/complete: on SQL targets; on Python targets only with ``introspection = "allow"``)
ALLOWED = {
    "shell": frozenset({"kernel_info_request", "complete_request", "inspect_request", "is_complete_request",
                        "comm_info_request"}),
    "control": frozenset({"kernel_info_request"}),
    "stdin": frozenset({"input_reply"}),
}
#: shell requests that can evaluate code in a Python kernel: the target's policy decides
INTROSPECTION = frozenset({"inspect_request", "complete_request"})
#: entries a history reply holds at most
HISTORY_MAX = 1000


class MainKernelHandler(APIHandler):
    access = {"GET": "user", "POST": "user"}
    api = {"POST": Operation(body=obj(("name",), name=STRING, env={"type": "object", "additionalProperties": STRING}))}

    async def get(self) -> None:
        self.send([k.model() for k in self.kernels.kernels.values() if may_use_kernel(self.user, k)])

    async def post(self) -> None:
        data = self.body()
        name = self.field(data, "name")
        env = data.get("env") or {}
        if not isinstance(env, dict):
            raise web.HTTPError(400, reason="field 'env' must be an object")
        kernel = await self.lifecycle.start(self.user, name, {str(k): str(v) for k, v in env.items()})
        self.set_header("Location", f"/api/kernels/{kernel.id}")
        self.send(kernel.model(), 201)


class KernelHandler(APIHandler):
    access = {"GET": "user", "DELETE": "user"}

    async def get(self, kernel_id: str) -> None:
        self.send(self.lifecycle.owned(self.user, kernel_id).model())

    async def delete(self, kernel_id: str) -> None:
        kernel = self.lifecycle.owned(self.user, kernel_id)
        await self.lifecycle.stop(kernel, self.user.actor)
        self.set_status(204)
        self.finish()


class KernelActionHandler(APIHandler):
    access = {"POST": "user"}

    async def post(self, kernel_id: str, action: str) -> None:
        kernel = self.lifecycle.owned(self.user, kernel_id)
        if action == "interrupt":
            await self.lifecycle.interrupt(kernel, self.user.actor)
            self.set_status(204)
            self.finish()
        else:
            await self.lifecycle.restart(kernel, self.user.actor)
            self.send(kernel.model())


class ChannelsHandler(Parts, websocket.WebSocketHandler):
    """``/api/kernels/{id}/channels``: the JSON websocket protocol, with the gate in the middle."""

    access = {"GET": "user"}
    ident: Identity | None = None
    kernel: LiveKernel | None = None
    revoked: str | None = None  # why the socket was closed under its user (sockets.py)


    async def get(self, kernel_id: str) -> None:
        try:
            self.ident = await authenticate(self.store, self.request)
            check_access(self, self.ident)
            self.kernel = self.lifecycle.owned(self.ident, kernel_id)  # type: ignore[arg-type]
            require_upgrade(self.request)
        except web.HTTPError as exc:
            self._refuse(exc.status_code, exc.reason or "refused")
            return
        except Exception as exc:  # CellgateError (404 for another user's kernel)
            self._refuse(getattr(exc, "status", 500), getattr(exc, "message", "Unhandled error"))
            return
        await super().get(kernel_id)

    def _refuse(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"status": status, "message": message}))

    def check_origin(self, origin: str) -> bool:
        return True  # token-authenticated; no cookies are honoured

    def open(self, kernel_id: str) -> None:
        assert self.kernel is not None
        self.kernel.clients.add(self)
        self.sockets.add(self)
        self.set_nodelay(True)

    def send_text(self, text: str) -> None:
        self.write_message(text)

    def revoke(self, reason: str) -> None:
        """The token was revoked or the user deactivated: refuse what follows, close (sockets.py)."""
        self.revoked = reason
        if self.kernel is not None:
            self.kernel.clients.discard(self)
        self.close(CLOSE_REVOKED, reason)

    def on_message(self, message: str | bytes) -> None:
        if self.revoked:
            return
        assert self.kernel is not None and self.ident is not None
        try:
            msg = json.loads(message)
            channel = msg["channel"]
            msg_type = msg["header"]["msg_type"]
        except (ValueError, KeyError, TypeError, RecursionError):
            log.info("dropping a malformed message on kernel %s", self.kernel.id)
            return
        try:
            check_tree(msg, f"the {msg_type} message")  # what the store cannot hold (NUL, lone surrogates, depth)
        except BadRequest as exc:
            self._answer(msg, "CellgateRefused", exc.message)
            return
        if channel == "shell" and msg_type == "execute_request":
            self.kernel.gate.submit(msg, self.ident)
        elif channel == "shell" and msg_type == "history_request":
            self.background.spawn(self._history(msg))
        elif channel == "shell" and msg_type in INTROSPECTION:
            self.background.spawn(self._introspect(msg))
        elif msg_type in ALLOWED.get(channel, frozenset()):
            self._forward(channel, msg)
        else:
            self._answer(msg, "CellgateRefused", f"{msg_type} on the {channel} channel is not allowed through cellgate")

    def _forward(self, channel: str, msg: dict[str, Any]) -> None:
        assert self.kernel is not None
        agent = self.agents.get(self.kernel.agent_id)
        if agent is None:
            self._answer(msg, "AgentUnavailable", "the agent hosting this kernel is not connected")
            return
        meta = msg.get("metadata")  # metadata.cellgate is the gateway's alone (it says what a kernel may run)
        msg["metadata"] = {k: v for k, v in meta.items() if k != "cellgate"} if isinstance(meta, dict) else {}
        try:
            agent.send(protocol.KernelMsg(kernel_id=self.kernel.id, channel=channel, msg=msg))
        except Unavailable as exc:  # its socket closed under us
            self._answer(msg, "AgentUnavailable", str(exc))

    async def _introspect(self, msg: dict[str, Any]) -> None:
        """inspect/complete: passed on for SQL targets and where the policy allows it; else an error reply."""
        assert self.kernel is not None
        msg_type = msg["header"]["msg_type"]
        try:
            kind, allowed = await self.store.run(_introspection_of, self.kernel.target)
        except Exception as exc:  # an unreadable policy: refuse, visibly
            log.warning("introspection policy of %s: %s", self.kernel.target, exc)
            kind, allowed = "python", False
        if kind == "sql" or allowed:
            self._forward("shell", msg)
            return
        evalue = (f"{msg_type} can evaluate code on Python targets; this target's policy refuses it "
                  f'(introspection = "refuse"; an admin can set introspection = "allow" on {self.kernel.target})')
        content = msg.get("content") or {}
        cursor = content.get("cursor_pos", 0) if isinstance(content.get("cursor_pos"), int) else 0
        extra: dict[str, Any] = ({"found": False, "data": {}, "metadata": {}} if msg_type == "inspect_request" else
                                 {"matches": [], "cursor_start": cursor, "cursor_end": cursor, "metadata": {}})
        self._reply(msg, {"status": "error", "ename": "CellgateRefused", "evalue": evalue,
                          "traceback": [f"CellgateRefused: {evalue}"], **extra})

    async def _history(self, msg: dict[str, Any]) -> None:
        """``history_request``, answered from the gateway's record of this user's cells on this kernel."""
        assert self.kernel is not None and self.ident is not None
        try:
            codes = await self.store.run(_cells_on, self.kernel.id, self.ident.user_id)
            self._reply(msg, {"status": "ok", "history": history(codes, msg.get("content") or {})})
        except Exception as exc:
            log.exception("history of kernel %s", self.kernel.id)
            self._reply(msg, {"status": "error", "ename": "CellgateError", "history": [],
                              "evalue": f"the gateway could not read this kernel's history: {exc}", "traceback": []})

    def _reply(self, msg: dict[str, Any], content: dict[str, Any]) -> None:
        """What ipykernel sends for a shell request: busy, the reply (parented to the request), idle."""
        for out in (jmsg.status("busy", msg), jmsg.make(jmsg.reply_type(msg["header"]["msg_type"]), content, msg, "shell"),
                    jmsg.status("idle", msg)):
            self._write(out)

    def _answer(self, msg: dict[str, Any], ename: str, evalue: str) -> None:
        for reply in jmsg.error_messages(msg, ename, evalue):
            self._write(reply)

    def _write(self, msg: dict[str, Any]) -> None:
        try:
            self.write_message(json.dumps(msg))
        except websocket.WebSocketClosedError:
            log.debug("the client of kernel %s left before its reply", self.kernel.id if self.kernel else "?")

    def on_close(self) -> None:
        self.sockets.discard(self)
        if self.kernel is not None:
            self.kernel.clients.discard(self)


def _introspection_of(session: Session, target_name: str) -> tuple[str, bool]:
    """(kind, introspection allowed) of a target, read now."""
    target = session.get(Target, target_name)
    if target is None:
        return "python", False
    return target.kind or "sql", policy.of(target).introspection == "allow"


def _cells_on(session: Session, kernel_id: str, user_id: int | None) -> list[str]:
    """The code of ``user_id``'s cells on ``kernel_id``, in the order they were sent."""
    stmt = (select(Task.code).where(Task.kernel_id == kernel_id, Task.user_id == user_id, Task.kind == "cell")
            .order_by(Task.id))
    return list(session.execute(stmt).scalars())


def history(codes: list[str], content: dict[str, Any]) -> list[list[Any]]:
    """A ``history_reply``'s entries ``[session, line, input]`` (session 0: this kernel's; lines from 1).

    ``tail`` (the last ``n``), ``range`` (``start`` ≤ line < ``stop`` of session 0, or of any
    negative session: the current one), ``search`` (``pattern`` as a glob, the last ``n``
    matches, ``unique``). With ``output`` the input is ``[input, None]``: the gateway keeps
    outputs per task, not per history line.
    """
    entries = [(0, line, code) for line, code in enumerate(codes, start=1)]
    access = content.get("hist_access_type", "tail")
    n = content.get("n")
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None
    if access == "range":
        session = content.get("session", 0)
        if isinstance(session, int) and session > 0:
            entries = []  # earlier sessions: not this kernel's
        start = content.get("start", 1) if isinstance(content.get("start"), int) else 1
        stop = content.get("stop") if isinstance(content.get("stop"), int) else None
        entries = [e for e in entries if e[1] >= start and (stop is None or e[1] < stop)]
    elif access == "search":
        pattern = content.get("pattern", "*") if isinstance(content.get("pattern"), str) else "*"
        entries = [e for e in entries if fnmatch.fnmatchcase(e[2], pattern)]
        if content.get("unique"):
            seen: dict[str, tuple[int, int, str]] = {}
            for e in entries:  # the last occurrence of each input
                seen.pop(e[2], None)
                seen[e[2]] = e
            entries = list(seen.values())
        entries = entries[-n:] if n else entries
    else:  # tail
        entries = entries[-(n or 10):]
    entries = entries[-HISTORY_MAX:]
    with_output = bool(content.get("output"))
    return [[s, line, [code, None] if with_output else code] for s, line, code in entries]


_kernel_id = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
default_handlers = [
    (r"/api/kernels/?", MainKernelHandler),
    (rf"/api/kernels/{_kernel_id}/?", KernelHandler),
    (rf"/api/kernels/{_kernel_id}/(?P<action>interrupt|restart)/?", KernelActionHandler),
    (rf"/api/kernels/{_kernel_id}/channels", ChannelsHandler),
]
