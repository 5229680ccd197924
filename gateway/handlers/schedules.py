"""``/api/v1/schedules``: templates run on a cron schedule, reviewed once (``schedules/service.py``).

Any user may create one for a template they may run on a target they may submit to (the same
checks as a template run); it is active once its review task is approved. A schedule is seen by
its author, admins and whoever may see its review task; only its author or an admin resubmits or
deletes it (403 for a reviewer, 404 for anyone else).
"""

from __future__ import annotations

from typing import Any

from ..models import Schedule
from ..schedules.service import Schedules, schedule_json
from ..templates.runs import TemplateValueRefused
from ..views import task_json
from .base import APIHandler
from .inputs import OBJECT, STRING, Operation, obj


class ScheduleHandlerBase(APIHandler):
    @property
    def schedules(self) -> Schedules:
        found: Schedules = self.settings["schedules"]
        return found

    async def shown(self, schedule: Schedule, **extra: Any) -> dict[str, Any]:
        author = await self.store.run(lambda s: Schedules._author(s, schedule))
        return {**schedule_json(schedule, author), **extra}


class SchedulesHandler(ScheduleHandlerBase):
    access = {"GET": "user", "POST": "user"}
    api = {"POST": Operation(body=obj(("name", "template", "target", "cron"), name=STRING, template=STRING, target=STRING,
                                      parameters=OBJECT, cron=STRING,
                                      on_missed={"type": "string", "enum": ["skip", "run"]}, notify=STRING, why=STRING))}

    async def get(self) -> None:
        found = await self.schedules.visible(self.user)
        self.send({"schedules": [schedule_json(s, author) for s, author in found]})

    async def post(self) -> None:
        """``{"name", "template", "target", "parameters", "cron", "on_missed"?, "notify"?, "why"?}`` → 201."""
        data = self.body()
        try:
            schedule, review = await self.schedules.create(
                self.user, self.field(data, "name"), self.field(data, "template"), self.field(data, "target"),
                self.field(data, "parameters", dict, required=False, default={}), self.field(data, "cron"),
                self.field(data, "on_missed", required=False, default="skip"),
                self.field(data, "notify", required=False, default=""), self.field(data, "why", required=False, default=""))
        except TemplateValueRefused as exc:
            self.send({"status": 400, "message": exc.message, "field": exc.field}, 400)
            return
        self.send(await self.shown(schedule, review=task_json(review, self.flow.task_url(review.id))), 201)


class ScheduleHandler(ScheduleHandlerBase):
    access = {"GET": "user", "DELETE": "user"}

    async def get(self, name: str) -> None:
        schedule = await self.schedules.get(self.user, name)
        self.send(await self.shown(schedule, runs=await self.schedules.runs(schedule)))

    async def delete(self, name: str) -> None:
        self.send(await self.shown(await self.schedules.delete(self.user, name)))


class ScheduleResubmitHandler(ScheduleHandlerBase):
    access = {"POST": "user"}

    async def post(self, name: str) -> None:
        schedule, review = await self.schedules.resubmit(self.user, name)
        self.send(await self.shown(schedule, review=task_json(review, self.flow.task_url(review.id))))


default_handlers = [
    (r"/api/v1/schedules/?", SchedulesHandler),
    (r"/api/v1/schedules/(?P<name>[a-z0-9][a-z0-9._-]*)/?", ScheduleHandler),
    (r"/api/v1/schedules/(?P<name>[a-z0-9][a-z0-9._-]*)/resubmit", ScheduleResubmitHandler),
]
