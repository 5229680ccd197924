"""``/api/v1/tasks`` (list, submit a script or a notebook, show, outputs, the executed notebook,
review, cancel) and ``/api/v1/reviews`` (waiting for me)."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import idempotency, reviews, tasks
from ..access import may_see_task, visible_tasks
from ..errors import BadRequest, NotFound
from ..models import Task, TaskNotebook, TaskOutput, User
from ..templates.runs import TemplateValueRefused, run_notebook_file
from ..views import task_json
from .base import APIHandler
from .inputs import COLUMN_MAX, COLUMN_MIN, STRING, Operation, Query, obj, parse_json


class TasksHandler(APIHandler):
    access = {"GET": "user", "POST": "user"}
    api = {
        "GET": Operation(query=(Query("status", choices=tuple(sorted(tasks.ALL)), help="only tasks in this status"),
                                Query("target", help="only tasks on this target"),
                                Query("user", help="only tasks of this user"),
                                Query("limit", int, "most tasks returned (at most 1000)", default=100, minimum=0))),
        "POST": Operation(body=obj(("target",), target=STRING, code=STRING, why=STRING,
                                   notebook={"type": ["string", "object"]}, name=STRING,
                                   parameters={"type": "object"}),
                          summary="submit a script (code) or a notebook of one's own (notebook, name, parameters)"),
    }

    async def get(self) -> None:
        status, target, user = self.argument("status"), self.argument("target"), self.argument("user")
        limit = min(self.argument("limit"), 1000)
        ident = self.user

        def _list(session: Session) -> list[Task]:
            stmt = select(Task).order_by(Task.id.desc())
            if status:
                stmt = stmt.where(Task.status == status)
            if target:
                stmt = stmt.where(Task.target == target)
            if user:
                stmt = stmt.join(User, User.id == Task.user_id).where(User.name == user)
            stmt = stmt.where(visible_tasks(ident)).limit(limit)
            return [reviews.annotate(session, t) for t in session.execute(stmt).unique().scalars()]

        found = await self.store.run(_list)
        self.send({"tasks": [task_json(t, self.flow.task_url(t.id)) for t in found]})

    async def post(self) -> None:
        """A script ``{"target", "code", "why"}``, or a notebook of the caller's own ``{"target",
        "notebook": its JSON text, "name": its file name, "parameters": {name: value}, "why"}``.

        201 with the new task; with an ``Idempotency-Key`` its author used before for the same
        request, 200 with that task (``idempotency.py``)."""
        data = self.body()
        target = self.field(data, "target")
        why = self.field(data, "why", required=False, default="")
        idem = idempotency.from_request(self.request.headers.get(idempotency.HEADER), "POST /api/v1/tasks", data)
        if "notebook" in data:
            await self._notebook(data, target, why, idem)
            return
        code = self.field(data, "code")
        if not code.strip():
            raise BadRequest("code is empty: pass the script with -f FILE or -e CODE")
        self.flow.check_size(code, "script")  # 413 over Gateway.max_code_bytes
        task = await self.scripts.submit(self.user, target, code, why, idem=idem)
        self._created(task)

    def _created(self, task: Task) -> None:
        self.send(task_json(task, self.flow.task_url(task.id)), 200 if task.replayed else 201)

    async def _notebook(self, data: dict[str, Any], target: str, why: str, idem: idempotency.Idempotency | None) -> None:
        raw = data.get("notebook")
        if not isinstance(raw, (str, dict)):
            raise BadRequest("notebook must be the notebook's JSON, as text or as an object")
        if isinstance(raw, str):  # JSON inside JSON: held to the same limits as the body (inputs.parse_json)
            parse_json(raw, "the notebook")
        text = raw if isinstance(raw, str) else json.dumps(raw)
        name = self.field(data, "name", required=False, default="notebook.ipynb")
        values = self.field(data, "parameters", dict, required=False, default={})
        self.flow.check_size(text, "script")  # 413 over Gateway.max_code_bytes
        try:
            task = await run_notebook_file(self.scripts, self.store, self.user, name, text, target, values, why, idem)
        except TemplateValueRefused as exc:
            self.send({"status": 400, "message": exc.message, "field": exc.field}, 400)
            return
        self._created(task)


class TaskHandler(APIHandler):
    access = {"GET": "user"}

    async def visible_task(self, task_id: int) -> Task:
        task = await self.flow.get_task(task_id)
        if not may_see_task(self.user, task):
            raise NotFound(f"task {task_id} not found")  # the same answer as an absent task
        return task

    async def get(self, task_id: str) -> None:
        task = await self.visible_task(int(task_id))
        self.send(task_json(task, self.flow.task_url(task.id)))


class TaskOutputHandler(TaskHandler):
    access = {"GET": "user"}
    api = {"GET": Operation(query=(
        Query("after", int, "outputs with a greater seq", default=0, minimum=COLUMN_MIN, maximum=COLUMN_MAX),
        Query("wait", float, "seconds to wait for something new (at most Gateway.long_poll_max)", default=0.0,
              minimum=0.0)))}

    async def get(self, task_id: str) -> None:
        tid = int(task_id)
        after = self.argument("after")
        wait = min(self.argument("wait"), self.timeouts.long_poll_max)
        deadline = time.monotonic() + wait
        while True:
            task = await self.visible_task(tid)
            outputs = await self.store.run(_outputs_after, tid, after)
            final = task.status in tasks.FINAL
            remaining = deadline - time.monotonic()
            if outputs or final or remaining <= 0:
                break
            await self.events.wait(tid, min(remaining, self.timeouts.task_poll))
        if final:  # outputs may have landed between the two reads
            outputs = await self.store.run(_outputs_after, tid, after)
        self.send({"task": task_json(task, self.flow.task_url(tid)), "outputs": outputs, "done": final})


def _outputs_after(session: Session, task_id: int, after: int) -> list[dict[str, Any]]:
    rows = session.execute(select(TaskOutput).where(TaskOutput.task_id == task_id, TaskOutput.seq > after)
                           .order_by(TaskOutput.seq)).scalars()
    return [{"seq": r.seq, "output": r.output} for r in rows]


class TaskNotebookHandler(TaskHandler):
    access = {"GET": "user"}

    async def get(self, task_id: str) -> None:
        """The executed notebook of a notebook task that ended (``.ipynb`` JSON), for whoever may see the task."""
        task = await self.visible_task(int(task_id))
        if task.kind != "notebook":
            raise NotFound(f"task {task.id} is a {task.kind}, not a notebook: its outputs are at /api/v1/tasks/{task.id}/output")
        found = await self.store.run(lambda s: s.get(TaskNotebook, task.id))
        if found is None:
            raise NotFound(f"task {task.id} has no executed notebook ({task.status.replace('_', ' ')}): "
                           "a notebook task has one once it ran")
        self.set_header("Content-Type", "application/x-ipynb+json")
        self.set_header("Content-Disposition", f'attachment; filename="task-{task.id}.ipynb"')
        self.finish(found.notebook)


class TaskReviewHandler(TaskHandler):
    access = {"POST": "user"}
    api = {"POST": Operation(body=obj(("decision",), decision={"type": "string", "enum": ["approve", "reject"]},
                                      comment=STRING, code_sha256=STRING))}

    async def post(self, task_id: str) -> None:
        data = self.body()
        decision = self.field(data, "decision")
        comment = self.field(data, "comment", required=False, default="")
        code_sha256 = self.field(data, "code_sha256", required=False)
        task = await self.flow.review(self.user, int(task_id), decision, comment, code_sha256)
        self.send(task_json(task, self.flow.task_url(task.id)))


class TaskCancelHandler(TaskHandler):
    access = {"POST": "user"}
    api = {"POST": Operation(body=obj(reason=STRING))}

    async def post(self, task_id: str) -> None:
        await self.visible_task(int(task_id))
        reason = self.field(self.body(), "reason", required=False, default="cancelled by its author")
        task = await self.flow.cancel(int(task_id), self.user, reason)
        self.send(task_json(task, self.flow.task_url(task.id)))


class ReviewsHandler(APIHandler):
    access = {"GET": "user"}

    async def get(self) -> None:
        found = await self.store.run(reviews.inbox, self.user.user_id)
        self.send({"tasks": [task_json(t, self.flow.task_url(t.id)) for t in found]})


default_handlers = [
    (r"/api/v1/tasks/?", TasksHandler),
    (r"/api/v1/tasks/(?P<task_id>\d+)/?", TaskHandler),
    (r"/api/v1/tasks/(?P<task_id>\d+)/output", TaskOutputHandler),
    (r"/api/v1/tasks/(?P<task_id>\d+)/notebook", TaskNotebookHandler),
    (r"/api/v1/tasks/(?P<task_id>\d+)/review", TaskReviewHandler),
    (r"/api/v1/tasks/(?P<task_id>\d+)/cancel", TaskCancelHandler),
    (r"/api/v1/reviews/?", ReviewsHandler),
]
