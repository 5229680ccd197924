"""``/cellgate/api/*``: what JupyterLab needs around the gate, fetched from the gateway.

Every route is behind Jupyter's own authentication (``@web.authenticated``); the gateway is
called with the user's cellgate token, which never leaves the server. A gateway error comes back
with the gateway's status and its ``{"status", "message"}`` body; an unreachable gateway is 502,
a server without cellgate configuration 503.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

#: seconds; the status page must answer quickly even when the gateway does not
TIMEOUT = 10.0


class GatewayError(Exception):
    """The gateway answered with an error, or could not be reached (``status`` 502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CellgateHandler(APIHandler):
    @property
    def cellgate(self) -> Any:
        """The linked ``CellgateExtension`` (ExtensionApp puts itself in the settings by name)."""
        return self.settings["cellgate"]

    async def gateway_get(self, path: str) -> Any:
        """GET ``{gateway}{path}`` with the user's token; the decoded JSON, or ``GatewayError``."""
        ext = self.cellgate
        problem = ext._problem()
        if problem:
            raise GatewayError(503, f"cellgate is not configured on this Jupyter server: {problem}")
        request = HTTPRequest(ext.normalized_url + path, method="GET",
                              headers={"Authorization": f"token {ext.token}", "Accept": "application/json"},
                              connect_timeout=TIMEOUT, request_timeout=TIMEOUT)
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.response is None:  # 599: timeout or connection closed
                raise GatewayError(502, f"the cellgate gateway at {ext.normalized_url} did not answer ({exc.message})") from None
            raise GatewayError(exc.code, _message(exc.response.body, exc.code)) from None
        except OSError as exc:
            raise GatewayError(502, f"cannot reach the cellgate gateway at {ext.normalized_url}: {exc.strerror or exc}") from None
        try:
            return json.loads(response.body)
        except ValueError:
            raise GatewayError(502, f"the cellgate gateway at {ext.normalized_url} sent a non-JSON answer") from None

    async def proxy(self, path: str) -> None:
        try:
            data = await self.gateway_get(path)
        except GatewayError as exc:
            self.set_status(exc.status)
            self.finish(json.dumps({"status": exc.status, "message": exc.message}))
            return
        self.finish(json.dumps(data))


def _message(body: bytes | None, status: int) -> str:
    try:
        data = json.loads(body or b"")
        if isinstance(data, dict) and data.get("message"):
            return str(data["message"])
    except ValueError:
        pass
    return f"the cellgate gateway answered HTTP {status}"


class StatusHandler(CellgateHandler):
    """``{"gateway_url", "user", "gateway_ok", "message"}``: always 200, so a panel can show why."""

    @web.authenticated
    async def get(self) -> None:
        ext = self.cellgate
        model: dict[str, Any] = {"gateway_url": ext.normalized_url or None, "user": None,
                                 "gateway_ok": False, "message": ""}
        try:
            model["user"] = await self.gateway_get("/api/v1/me")
            model["gateway_ok"] = True
        except GatewayError as exc:
            model["message"] = exc.message
        self.finish(json.dumps(model))


class TaskHandler(CellgateHandler):
    @web.authenticated
    async def get(self, task_id: str) -> None:
        await self.proxy(f"/api/v1/tasks/{quote(task_id)}")


class ReviewsHandler(CellgateHandler):
    @web.authenticated
    async def get(self) -> None:
        await self.proxy("/api/v1/reviews")


default_handlers = [
    (r"/cellgate/api/status", StatusHandler),
    (r"/cellgate/api/tasks/(\d+)", TaskHandler),
    (r"/cellgate/api/reviews", ReviewsHandler),
]
