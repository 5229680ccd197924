"""``/api/v1/targets``: targets and their policy; ``/api/v1/apply``: policy as code."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import apply as policy_apply
from .. import audit, binding, policy
from ..errors import BadRequest
from ..models import Target
from ..names import NAME_RE
from ..access import may_submit
from ..views import target_json
from .base import APIHandler
from .inputs import BOOLEAN, OBJECT, STRING, STRINGS, Operation, obj


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class TargetsHandler(APIHandler):
    access = {"GET": "user"}

    async def get(self) -> None:
        targets = await self.store.run(lambda s: list(s.execute(select(Target).order_by(Target.name)).scalars()))
        self.send({"targets": [target_json(t, bool(self.agents.serving(t.name)))
                               for t in targets if may_submit(self.user, t)]})


class TargetHandler(APIHandler):
    access = {"GET": "user", "PUT": "admin"}
    api = {"PUT": Operation(body=obj(description=STRING, display_name=STRING,
                                     kind={"type": "string", "enum": ["sql", "python"]},
                                     dialect={"type": ["string", "null"]}, submit_groups=STRINGS,
                                     review_groups=STRINGS, policy=OBJECT),
                            summary="create or update a target; fields left out keep their value")}

    async def get(self, name: str) -> None:
        target = await self.flow.check_target(self.user, name)
        self.send(target_json(target, bool(self.agents.serving(name))))

    async def put(self, name: str) -> None:
        """Create or update: fields given replace the current ones (``review``/``deny``/``limits`` merge per key).

        ``kind`` ("sql" | "python") and ``dialect`` (sql: "postgresql" | "mysql" | "mariadb" | "sqlite")
        are what agents must announce to serve the target (binding.py); ``language`` follows ``kind``."""
        if not NAME_RE.match(name):
            raise BadRequest("a target name is 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        data = self.body()
        description = self.field(data, "description", required=False)
        display_name = self.field(data, "display_name", required=False)
        for key in ("kind", "dialect"):
            if key in data and data[key] is not None and not isinstance(data[key], str):
                raise BadRequest(f"field {key!r} must be a string")
        shortcuts = {k: self.field(data, k, list, required=False) for k in ("submit_groups", "review_groups")}
        changes = data.get("policy") or {}
        if not isinstance(changes, dict):
            raise BadRequest("field 'policy' must be an object")
        actor = self.user.actor

        def _put(session: Session) -> Target:
            target = session.get(Target, name)
            created = target is None
            if target is None:
                target = Target(name=name, description="", submit_groups=[], review_groups=[], policy={})
                session.add(target)
            wanted = _merge(policy.of(target).as_dict(), changes)
            if shortcuts["submit_groups"] is not None:
                wanted["submit_groups"] = shortcuts["submit_groups"]
            if shortcuts["review_groups"] is not None:
                wanted["review"]["groups"] = shortcuts["review_groups"]
            try:
                rules = policy.parse(wanted)
            except policy.PolicyError as exc:
                raise BadRequest(f"policy.{exc.field}: {exc.message}") from None
            try:
                kind = binding.merged_kind(target, data)
            except binding.KindError as exc:
                raise BadRequest(f"{exc.field}: {exc.message}") from None
            if kind is not None:
                target.kind, target.language, target.dialect = kind
            if description is not None:
                target.description = description
            if display_name is not None:
                target.display_name = display_name
            policy.store(target, rules)
            session.flush()
            audit.append(session, actor, "target.created" if created else "target.updated", target=name,
                         detail={"description": target.description, "kind": target.kind, "dialect": target.dialect,
                                 "display_name": target.display_name, "policy": rules.as_dict()})
            return target

        target = await self.store.run(_put)
        binding.recheck(self.agents, target)
        self.send(target_json(target, bool(self.agents.serving(name))))


class ApplyHandler(APIHandler):
    access = {"POST": "admin"}
    api = {"POST": Operation(body=obj(("document",), document=obj(groups=OBJECT, targets=OBJECT), dry_run=BOOLEAN))}

    async def post(self) -> None:
        data = self.body()
        doc = data.get("document")
        dry_run = bool(data.get("dry_run", False))
        if not isinstance(doc, dict):
            raise BadRequest("field 'document' must be an object: {\"groups\": {...}, \"targets\": {...}}")
        actor = self.user.actor

        def _apply(session: Session) -> tuple[list[str], list[Target]]:
            changes = policy_apply.apply(session, doc, actor, dry_run=dry_run)
            if dry_run:
                session.rollback()
                return changes, []
            names = list(doc.get("targets") or {})
            return changes, [t for t in (session.get(Target, n) for n in names) if t is not None]

        try:
            changes, touched = await self.store.run(_apply)
        except policy_apply.ApplyError as exc:
            self.send({"status": 400, "message": str(exc), "field": exc.field}, 400)
            return
        for target in touched:
            binding.recheck(self.agents, target)
        self.send({"changes": changes, "dry_run": dry_run})


default_handlers = [
    (r"/api/v1/targets/?", TargetsHandler),
    (r"/api/v1/targets/(?P<name>[^/]+)/?", TargetHandler),
    (r"/api/v1/apply/?", ApplyHandler),
]
