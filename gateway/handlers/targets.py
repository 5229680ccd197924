"""``/api/v1/targets``: targets and their review policy."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..errors import BadRequest
from ..models import Target
from ..policy import may_submit
from ..views import target_json
from .base import APIHandler

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class TargetsHandler(APIHandler):
    access = {"GET": "user"}

    async def get(self) -> None:
        targets = await self.service.store.run(lambda s: list(s.execute(select(Target).order_by(Target.name)).scalars()))
        self.send({"targets": [target_json(t, bool(self.service.agents.serving(t.name)))
                               for t in targets if may_submit(self.user, t)]})


class TargetHandler(APIHandler):
    access = {"GET": "user", "PUT": "admin"}

    async def get(self, name: str) -> None:
        target = await self.service.check_target(self.user, name)
        self.send(target_json(target, bool(self.service.agents.serving(name))))

    async def put(self, name: str) -> None:
        if not NAME_RE.match(name):
            raise BadRequest("a target name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        data = self.body()
        description = self.field(data, "description", required=False)
        submit_groups = self.field(data, "submit_groups", list, required=False)
        review_groups = self.field(data, "review_groups", list, required=False)
        actor = self.user.actor

        def _put(session: Session) -> Target:
            target = session.get(Target, name)
            created = target is None
            if target is None:
                target = Target(name=name, description="", submit_groups=[], review_groups=[])
                session.add(target)
            if description is not None:
                target.description = description
            if submit_groups is not None:
                target.submit_groups = submit_groups
            if review_groups is not None:
                target.review_groups = review_groups
            session.flush()
            audit.append(session, actor, "target.created" if created else "target.updated", target=name,
                         detail={"description": target.description, "submit_groups": target.submit_groups,
                                 "review_groups": target.review_groups})
            return target

        target = await self.service.store.run(_put)
        self.send(target_json(target, bool(self.service.agents.serving(name))))


default_handlers = [
    (r"/api/v1/targets/?", TargetsHandler),
    (r"/api/v1/targets/(?P<name>[^/]+)/?", TargetHandler),
]
