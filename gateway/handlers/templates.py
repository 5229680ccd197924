"""``/api/v1/templates`` (what the caller may run, one template with its parameters as JSON Schema),
``/api/v1/template-runs`` (run one: a task) and ``/api/v1/template-repository`` (where they come
from; refresh; the push webhook).

A template the caller may not run is answered as absent (404). Refreshing is for admins. The
webhook carries no cellgate token: it is open at the HTTP level and answers only a request signed
with ``Templates.webhook_secret`` (HMAC-SHA256 of the body in ``X-Hub-Signature-256:
sha256=<hex>``, as GitHub and Gitea send it); it starts a refresh and answers 202 at once.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from ..errors import CellgateError, Unauthorized
from ..templates.declare import json_schema
from ..templates.library import TemplateLibrary
from .. import idempotency
from ..templates.runs import TemplateValueRefused, run_template
from ..views import task_json
from .base import APIHandler
from .inputs import OBJECT, STRING, Operation, obj

log = logging.getLogger("cellgate.gateway.templates")

SIGNATURE_HEADER = "X-Hub-Signature-256"


class TemplateHandlerBase(APIHandler):
    @property
    def library(self) -> TemplateLibrary:
        library: TemplateLibrary = self.settings["templates"]
        return library


class TemplatesHandler(TemplateHandlerBase):
    access = {"GET": "user"}

    async def get(self) -> None:
        self.send({"source": self.library.status(self.user), "templates": [t.as_json() for t in self.library.visible(self.user)]})


class TemplateHandler(TemplateHandlerBase):
    access = {"GET": "user"}

    async def get(self, name: str) -> None:
        template = self.library.get(self.user, name)
        commit = self.library.catalog.commit if self.library.catalog else None
        self.send({**template.as_json(), "commit": commit, "schema": json_schema(template.params), "code": template.body})


class TemplateRunsHandler(TemplateHandlerBase):
    access = {"POST": "user"}
    api = {"POST": Operation(body=obj(("template", "target"), template=STRING, target=STRING, parameters=OBJECT,
                                      why=STRING))}

    async def post(self) -> None:
        """Run a template: ``{"template", "target", "parameters": {name: value}, "why"}`` → the task (201; with an
        ``Idempotency-Key`` used before for the same request, 200 with that task: ``idempotency.py``)."""
        data = self.body()
        name = self.field(data, "template")
        target = self.field(data, "target")
        values = self.field(data, "parameters", dict, required=False, default={})
        why = self.field(data, "why", required=False, default="")
        idem = idempotency.from_request(self.request.headers.get(idempotency.HEADER), "POST /api/v1/template-runs", data)
        try:
            task = await run_template(self.library, self.scripts, self.store, self.user, name, target, values, why, idem)
        except TemplateValueRefused as exc:
            self.send({"status": 400, "message": exc.message, "field": exc.field}, 400)
            return
        self.send(task_json(task, self.flow.task_url(task.id)), 200 if task.replayed else 201)


class RepositoryHandler(TemplateHandlerBase):
    access = {"GET": "admin", "POST": "admin"}

    async def get(self) -> None:
        self.send(self.library.status(self.user))

    async def post(self) -> None:
        """Refresh now; the answer says the commit before and after, and what could not be read."""
        done = await self.library.refresh(self.user.name)
        self.send(done.as_json())


class WebhookHandler(TemplateHandlerBase):
    access = {"POST": "anonymous"}  # signed by the repository host, checked here
    api = {"POST": Operation(body=OBJECT, summary="a repository host's push, signed (X-Hub-Signature-256)")}

    async def post(self) -> None:
        secret = self.library.config.webhook_secret
        if not secret:
            raise Unauthorized("the template webhook is off: set c.Templates.webhook_secret (docs/templates.md)")
        given = self.request.headers.get(SIGNATURE_HEADER, "")
        expected = "sha256=" + hmac.new(secret.encode(), self.request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized(f"the webhook call is not signed with Templates.webhook_secret ({SIGNATURE_HEADER})")
        self.background.spawn(self._refresh())
        self.send({"refreshing": True}, status=202)

    async def _refresh(self) -> None:
        try:
            await self.library.refresh("webhook")
        except CellgateError as exc:  # kept in the library's last_error, shown to admins
            log.warning("templates: webhook refresh: %s", exc.message)


default_handlers = [
    (r"/api/v1/templates/?", TemplatesHandler),
    (r"/api/v1/templates/(?P<name>[\w][\w./-]*)", TemplateHandler),
    (r"/api/v1/template-runs/?", TemplateRunsHandler),
    (r"/api/v1/template-repository/?", RepositoryHandler),
    (r"/api/v1/template-repository/webhook", WebhookHandler),
]
