"""What every gateway handler shares: who is calling, what they may do, the one error shape.

Authorization is declared, not coded: each handler class sets ``access``, a mapping from HTTP
method to a rule (``anonymous``, ``user``, ``admin``, ``agent``), checked in ``prepare`` before
the method runs. A method without a rule is refused (and ``tests/gateway/test_authz.py`` fails
on it). Object-level rules (a kernel's owner, a task's reviewers) live in ``gateway/access.py``.

Handlers get the parts of the gateway they use as typed properties (``self.store``,
``self.flow``, ``self.lifecycle``, …) from the application's settings, filled by
``app.make_app`` (as jupyter_server's handlers get ``self.kernel_manager``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from tornado import web

from ..agents import AgentRegistry
from ..auth import Identity, identify
from ..background import Background
from ..errors import CellgateError
from ..events import TaskEvents
from ..flow import TaskFlow
from ..kernels import KernelRegistry
from ..lifecycle import KernelLifecycle
from ..scripts import Scripts
from ..sessions import AgentSessions
from ..sockets import SocketRegistry
from ..store import Store
from ..tasks import TransitionConflict
from ..timeouts import Timeouts
from .inputs import ID_PARAMS, Operation, check_text, parse_json, path_id

log = logging.getLogger("cellgate.gateway.api")

RULES = ("anonymous", "user", "admin", "agent")


def token_from(request: Any) -> str | None:
    header: str = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("token", "bearer") and value.strip():
        return value.strip()
    return None


async def authenticate(store: Store, request: Any) -> Identity | None:
    raw = token_from(request)
    if raw is None:
        return None
    return await store.run(identify, raw)


def allowed(rule: str, ident: Identity | None) -> bool:
    if rule == "anonymous":
        return True
    if ident is None:
        return False
    if rule == "agent":
        return ident.kind == "agent"
    if ident.kind != "user":
        return False
    return rule == "user" or (rule == "admin" and ident.is_admin)


def check_access(handler: Any, ident: Identity | None) -> None:
    rule = type(handler).access.get(handler.request.method)
    if rule not in RULES:
        raise web.HTTPError(405, reason=f"{handler.request.method} is not allowed here")
    if allowed(rule, ident):
        return
    if ident is None:
        raise web.HTTPError(401, reason="a valid token is required: pass `Authorization: token ...` "
                                        "(see `cellgate login` / CELLGATE_TOKEN)")
    who = "an agent token" if ident.kind == "agent" else ident.name
    raise web.HTTPError(403, reason=f"{who} may not {handler.request.method} {handler.request.path}")


def require_upgrade(request: Any) -> None:
    """A WebSocket route asked without ``Upgrade: websocket`` gets the JSON error shape, not HTML."""
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise web.HTTPError(400, reason="this endpoint is a WebSocket: connect with Upgrade: websocket")


class Parts:
    """The gateway's parts, as typed properties of a handler (tornado's ``settings``, set by ``make_app``)."""

    settings: dict[str, Any]

    @property
    def store(self) -> Store:
        store: Store = self.settings["store"]
        return store

    @property
    def flow(self) -> TaskFlow:
        flow: TaskFlow = self.settings["flow"]
        return flow

    @property
    def scripts(self) -> Scripts:
        scripts: Scripts = self.settings["scripts"]
        return scripts

    @property
    def lifecycle(self) -> KernelLifecycle:
        lifecycle: KernelLifecycle = self.settings["lifecycle"]
        return lifecycle

    @property
    def sessions(self) -> AgentSessions:
        sessions: AgentSessions = self.settings["sessions"]
        return sessions

    @property
    def agents(self) -> AgentRegistry:
        agents: AgentRegistry = self.settings["agents"]
        return agents

    @property
    def kernels(self) -> KernelRegistry:
        kernels: KernelRegistry = self.settings["kernels"]
        return kernels

    @property
    def events(self) -> TaskEvents:
        events: TaskEvents = self.settings["events"]
        return events

    @property
    def sockets(self) -> SocketRegistry:
        sockets: SocketRegistry = self.settings["sockets"]
        return sockets

    @property
    def background(self) -> Background:
        background: Background = self.settings["background"]
        return background

    @property
    def timeouts(self) -> Timeouts:
        timeouts: Timeouts = self.settings["timeouts"]
        return timeouts

    @property
    def public_url(self) -> str:
        url: str = self.settings["public_url"]
        return url


class APIHandler(Parts, web.RequestHandler):
    """``access``: method → rule; ``api``: method → what it takes (query arguments, body; ``inputs.py``),
    read by :meth:`argument` and written into ``/api/v1/openapi.json``."""

    access: dict[str, str] = {}
    api: dict[str, Operation] = {}
    ident: Identity | None = None

    @property
    def user(self) -> Identity:
        assert self.ident is not None
        return self.ident

    async def prepare(self) -> None:
        self.ident = await authenticate(self.store, self.request)
        check_access(self, self.ident)
        for name in ID_PARAMS.intersection(self.path_kwargs):
            path_id(self.path_kwargs[name], name)  # 400 past the store's id column, before the store sees it

    def decode_argument(self, value: bytes, name: str | None = None) -> str:
        """Every path and query value: UTF-8 (tornado: else 400) without a NUL (``inputs.check_text``)."""
        text = super().decode_argument(value, name)
        return check_text(text, f"argument {name!r}" if name else "the path")

    def argument(self, name: str) -> Any:
        """Query argument ``name`` parsed as this method's ``api`` declares it (400 when it does not fit)."""
        method = self.request.method or "GET"
        declared = type(self).api.get(method, Operation()).argument(name)
        return declared.parse(self.get_query_argument(name, None))

    def check_xsrf_cookie(self) -> None:  # token auth only; no cookies
        return None

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")

    def body(self) -> dict[str, Any]:
        """The JSON object of the request body (``{}`` when empty); 400 for anything ``inputs.parse_json``
        refuses or for JSON that is not an object."""
        if not self.request.body:
            return {}
        data = parse_json(self.request.body)
        if not isinstance(data, dict):
            raise web.HTTPError(400, reason="the request body must be a JSON object")
        return data

    def field(self, data: dict[str, Any], name: str, kind: type = str, *, required: bool = True, default: Any = None) -> Any:
        if name not in data or data[name] is None:
            if required:
                raise web.HTTPError(400, reason=f"missing field {name!r}")
            return default
        value = data[name]
        if kind is list and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        if kind is not list and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise web.HTTPError(400, reason=f"field {name!r} must be {'a list of strings' if kind is list else kind.__name__}")

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (web.HTTPError, CellgateError, TransitionConflict)):
            log.info("%s %s → %s", self.request.method, self.request.path, value)
        else:
            log.error("unhandled error on %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one error shape: ``{"status": N, "message": "…"}``; never a traceback."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = "Unhandled error"
        if isinstance(exc, CellgateError):
            status_code, message = exc.status, exc.message
        elif isinstance(exc, TransitionConflict):
            status_code, message = 409, str(exc)
        elif isinstance(exc, web.HTTPError):
            message = exc.reason or exc.log_message or self._reason
        elif isinstance(exc, SQLAlchemyError):
            message = "Unhandled error (database)"
        elif exc is None:
            message = self._reason
        self.clear()
        self.set_status(status_code)
        self.set_default_headers()
        self.finish(json.dumps({"status": status_code, "message": message}))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, (CellgateError, TransitionConflict)):
            if self._finished:
                return
            self.send_error(getattr(e, "status", 409), exc_info=(type(e), e, e.__traceback__))
            self.log_exception(type(e), e, e.__traceback__)
            return
        super()._handle_request_exception(e)


class NotFoundHandler(APIHandler):
    access = {m: "anonymous" for m in ("GET", "POST", "PUT", "PATCH", "DELETE")}

    async def prepare(self) -> None:
        raise web.HTTPError(404, reason=f"no such endpoint: {self.request.method} {self.request.path}")
