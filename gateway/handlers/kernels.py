"""Kernel Gateway protocol: kernels (REST) and their channels (WebSocket).

A kernel belongs to the user who started it. Everyone else gets 404 for it, on every route,
the WebSocket included.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from tornado import web, websocket

from .. import jmsg
from ..auth import Identity
from ..kernels import LiveKernel
from ..service import Service
from ..sockets import CLOSE_REVOKED
from .base import APIHandler, authenticate, check_access, require_upgrade

log = logging.getLogger("cellgate.gateway.channels")

#: requests passed to the kernel without a task: they read, they do not run code
ALLOWED = {
    "shell": frozenset({"kernel_info_request", "complete_request", "inspect_request", "is_complete_request",
                        "history_request", "comm_info_request"}),
    "control": frozenset({"kernel_info_request"}),
    "stdin": frozenset({"input_reply"}),
}


class MainKernelHandler(APIHandler):
    access = {"GET": "user", "POST": "user"}

    async def get(self) -> None:
        self.send([k.model() for k in self.service.kernels.owned_by(self.user.user_id or -1)])

    async def post(self) -> None:
        data = self.body()
        name = self.field(data, "name")
        env = data.get("env") or {}
        if not isinstance(env, dict):
            raise web.HTTPError(400, reason="field 'env' must be an object")
        kernel = await self.service.start_kernel(self.user, name, {str(k): str(v) for k, v in env.items()})
        self.set_header("Location", f"/api/kernels/{kernel.id}")
        self.send(kernel.model(), 201)


class KernelHandler(APIHandler):
    access = {"GET": "user", "DELETE": "user"}

    async def get(self, kernel_id: str) -> None:
        self.send(self.service.owned_kernel(self.user, kernel_id).model())

    async def delete(self, kernel_id: str) -> None:
        kernel = self.service.owned_kernel(self.user, kernel_id)
        await self.service.stop_kernel(kernel, self.user.actor)
        self.set_status(204)
        self.finish()


class KernelActionHandler(APIHandler):
    access = {"POST": "user"}

    async def post(self, kernel_id: str, action: str) -> None:
        kernel = self.service.owned_kernel(self.user, kernel_id)
        if action == "interrupt":
            await self.service.interrupt_kernel(kernel, self.user.actor)
            self.set_status(204)
            self.finish()
        else:
            await self.service.restart_kernel(kernel, self.user.actor)
            self.send(kernel.model())


class ChannelsHandler(websocket.WebSocketHandler):
    """``/api/kernels/{id}/channels``: the JSON websocket protocol, with the gate in the middle."""

    access = {"GET": "user"}
    ident: Identity | None = None
    kernel: LiveKernel | None = None
    revoked: str | None = None  # why the socket was closed under its user (sockets.py)

    @property
    def service(self) -> Service:
        return self.settings["service"]

    async def get(self, kernel_id: str) -> None:  # type: ignore[override]
        try:
            self.ident = await authenticate(self.service, self.request)
            check_access(self, self.ident)
            self.kernel = self.service.owned_kernel(self.ident, kernel_id)  # type: ignore[arg-type]
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

    def open(self, kernel_id: str) -> None:  # type: ignore[override]
        assert self.kernel is not None
        self.kernel.clients.add(self)
        self.service.sockets.add(self)
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
        except (ValueError, KeyError, TypeError):
            log.info("dropping a malformed message on kernel %s", self.kernel.id)
            return
        if channel == "shell" and msg_type == "execute_request":
            self.kernel.gate.submit(msg, self.ident)
        elif msg_type in ALLOWED.get(channel, frozenset()):
            agent = self.service.agents.get(self.kernel.agent_id)
            if agent is None:
                self._answer(msg, "AgentUnavailable", "the agent hosting this kernel is not connected")
                return
            agent.send({"type": "kernel_msg", "kernel_id": self.kernel.id, "channel": channel, "msg": msg})
        else:
            self._answer(msg, "CellgateRefused", f"{msg_type} on the {channel} channel is not allowed through cellgate")

    def _answer(self, msg: dict[str, Any], ename: str, evalue: str) -> None:
        for reply in jmsg.error_messages(msg, ename, evalue):
            self.write_message(json.dumps(reply))

    def on_close(self) -> None:
        self.service.sockets.discard(self)
        if self.kernel is not None:
            self.kernel.clients.discard(self)


_kernel_id = r"(?P<kernel_id>\w+-\w+-\w+-\w+-\w+)"
default_handlers = [
    (r"/api/kernels/?", MainKernelHandler),
    (rf"/api/kernels/{_kernel_id}/?", KernelHandler),
    (rf"/api/kernels/{_kernel_id}/(?P<action>interrupt|restart)/?", KernelActionHandler),
    (rf"/api/kernels/{_kernel_id}/channels", ChannelsHandler),
]
