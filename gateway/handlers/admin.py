"""``/api/v1/me``, users, groups, tokens, agent tokens and agents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit, auth
from ..errors import BadRequest, Conflict, NotFound
from ..models import Group, User
from ..views import user_json
from .base import APIHandler
from ..names import NAME_RE


def _user(session: Session, name: str) -> User:
    user = auth.get_user(session, name)
    if user is None:
        raise NotFound(f"user {name!r} not found")
    return user


def _group(session: Session, name: str) -> Group:
    group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
    if group is None:
        raise NotFound(f"group {name!r} not found")
    return group


class MeHandler(APIHandler):
    access = {"GET": "user"}

    async def get(self) -> None:
        self.send({"name": self.user.name, "is_admin": self.user.is_admin, "groups": sorted(self.user.groups)})


class UsersHandler(APIHandler):
    access = {"GET": "admin", "POST": "admin"}

    async def get(self) -> None:
        def _list(session: Session) -> list[dict[str, Any]]:
            users = session.execute(select(User).order_by(User.name)).scalars()
            return [user_json(u, auth.user_groups(session, u.id)) for u in users]
        self.send({"users": await self.service.store.run(_list)})

    async def post(self) -> None:
        data = self.body()
        name = self.field(data, "name")
        is_admin = self.field(data, "is_admin", bool, required=False, default=False)
        if not NAME_RE.match(name):
            raise BadRequest("a user name is 1-100 letters, digits, '.', '_' or '-'")
        actor = self.user.actor

        def _create(session: Session) -> dict[str, Any]:
            if auth.get_user(session, name) is not None:
                raise Conflict(f"user {name!r} already exists")
            user = auth.ensure_user(session, name, is_admin=is_admin, actor=actor)
            return user_json(user, [])
        self.send(await self.service.store.run(_create), 201)


class UserHandler(APIHandler):
    access = {"DELETE": "admin"}

    async def delete(self, name: str) -> None:
        actor = self.user.actor

        def _deactivate(session: Session) -> tuple[int, dict[str, Any]]:
            user = _user(session, name)
            user.active = False
            audit.append(session, actor, "user.deactivated", detail={"user": name})
            return user.id, user_json(user, auth.user_groups(session, user.id))
        user_id, body = await self.service.store.run(_deactivate)
        self.service.sockets.close_user(user_id)  # their open WebSockets too, now
        self.send(body)


class GroupsHandler(APIHandler):
    access = {"GET": "admin", "POST": "admin"}

    async def get(self) -> None:
        def _list(session: Session) -> list[dict[str, Any]]:
            return [{"name": g.name, "members": sorted(m.user.name for m in g.memberships)}
                    for g in session.execute(select(Group).order_by(Group.name)).scalars()]
        self.send({"groups": await self.service.store.run(_list)})

    async def post(self) -> None:
        name = self.field(self.body(), "name")
        if not NAME_RE.match(name):
            raise BadRequest("a group name is 1-100 letters, digits, '.', '_' or '-'")
        actor = self.user.actor

        def _create(session: Session) -> dict[str, Any]:
            if session.execute(select(Group).where(Group.name == name)).scalar_one_or_none() is not None:
                raise Conflict(f"group {name!r} already exists")
            auth.ensure_group(session, name, actor=actor)
            return {"name": name, "members": []}
        self.send(await self.service.store.run(_create), 201)


class GroupMemberHandler(APIHandler):
    access = {"PUT": "admin", "DELETE": "admin"}

    async def _change(self, group: str, user: str, add: bool) -> None:
        actor = self.user.actor

        def _tx(session: Session) -> dict[str, Any]:
            g, u = _group(session, group), _user(session, user)
            changed = (auth.add_member if add else auth.remove_member)(session, g, u, actor=actor)
            return {"group": group, "user": user, "changed": changed}
        self.send(await self.service.store.run(_tx))

    async def put(self, group: str, user: str) -> None:
        await self._change(group, user, True)

    async def delete(self, group: str, user: str) -> None:
        await self._change(group, user, False)


class UserTokensHandler(APIHandler):
    access = {"POST": "admin"}

    async def post(self, name: str) -> None:
        data = self.body()
        note = self.field(data, "note", required=False, default="")
        days = data.get("expires_in_days")
        if days is not None and (not isinstance(days, (int, float)) or isinstance(days, bool) or days <= 0):
            raise BadRequest("expires_in_days must be a positive number")
        actor = self.user.actor

        def _create(session: Session) -> dict[str, Any]:
            raw, tok = auth.new_token(session, "user", user=_user(session, name), name=note,
                                      expires_in_days=days, actor=actor)
            return {"token": raw, "id": tok.id, "user": name}
        self.send(await self.service.store.run(_create), 201)


class AgentTokensHandler(APIHandler):
    access = {"POST": "admin"}

    async def post(self) -> None:
        name = self.field(self.body(), "name")
        actor = self.user.actor

        def _create(session: Session) -> dict[str, Any]:
            raw, tok = auth.new_token(session, "agent", name=name, actor=actor)
            return {"token": raw, "id": tok.id, "name": name}
        self.send(await self.service.store.run(_create), 201)


class AgentsHandler(APIHandler):
    access = {"GET": "admin"}

    async def get(self) -> None:
        self.send({"agents": [{"agent_id": a.agent_id, "token": a.token_name, "version": a.version, "tags": a.tags,
                               "targets": sorted(a.targets), "kernels": len(a.kernels)}
                              for a in self.service.agents.agents.values()]})


default_handlers = [
    (r"/api/v1/me/?", MeHandler),
    (r"/api/v1/users/?", UsersHandler),
    (r"/api/v1/users/(?P<name>[^/]+)/?", UserHandler),
    (r"/api/v1/users/(?P<name>[^/]+)/tokens/?", UserTokensHandler),
    (r"/api/v1/groups/?", GroupsHandler),
    (r"/api/v1/groups/(?P<group>[^/]+)/members/(?P<user>[^/]+)/?", GroupMemberHandler),
    (r"/api/v1/agent-tokens/?", AgentTokensHandler),
    (r"/api/v1/agents/?", AgentsHandler),
]
