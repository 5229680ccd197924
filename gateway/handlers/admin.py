"""``/api/v1/me``, users, groups, tokens, agent tokens and agents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit, auth
from ..errors import BadRequest, Conflict, NotFound
from ..models import Group, Target, Token, User
from ..names import NAME_RE
from ..views import iso, user_json
from .base import APIHandler
from .inputs import BOOLEAN, STRING, STRINGS, Operation, obj
from .tokens import token_state


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
    api = {"POST": Operation(body=obj(("name",), name=STRING, is_admin=BOOLEAN))}

    async def get(self) -> None:
        def _list(session: Session) -> list[dict[str, Any]]:
            users = session.execute(select(User).order_by(User.name)).scalars()
            return [user_json(u, auth.user_groups(session, u.id)) for u in users]
        self.send({"users": await self.store.run(_list)})

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
        self.send(await self.store.run(_create), 201)


class UserHandler(APIHandler):
    access = {"DELETE": "admin"}

    async def delete(self, name: str) -> None:
        actor = self.user.actor

        def _deactivate(session: Session) -> tuple[int, dict[str, Any]]:
            user = _user(session, name)
            user.active = False
            audit.append(session, actor, "user.deactivated", detail={"user": name})
            return user.id, user_json(user, auth.user_groups(session, user.id))
        user_id, body = await self.store.run(_deactivate)
        self.sockets.close_user(user_id)  # their open WebSockets too, now
        self.send(body)


class GroupsHandler(APIHandler):
    access = {"GET": "admin", "POST": "admin"}
    api = {"POST": Operation(body=obj(("name",), name=STRING))}

    async def get(self) -> None:
        def _list(session: Session) -> list[dict[str, Any]]:
            return [{"name": g.name, "members": sorted(m.user.name for m in g.memberships)}
                    for g in session.execute(select(Group).order_by(Group.name)).scalars()]
        self.send({"groups": await self.store.run(_list)})

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
        self.send(await self.store.run(_create), 201)


class GroupMemberHandler(APIHandler):
    access = {"PUT": "admin", "DELETE": "admin"}

    async def _change(self, group: str, user: str, add: bool) -> None:
        actor = self.user.actor

        def _tx(session: Session) -> dict[str, Any]:
            g, u = _group(session, group), _user(session, user)
            changed = (auth.add_member if add else auth.remove_member)(session, g, u, actor=actor)
            return {"group": group, "user": user, "changed": changed}
        self.send(await self.store.run(_tx))

    async def put(self, group: str, user: str) -> None:
        await self._change(group, user, True)

    async def delete(self, group: str, user: str) -> None:
        await self._change(group, user, False)


class UserTokensHandler(APIHandler):
    access = {"POST": "admin"}
    api = {"POST": Operation(body=obj(note=STRING, expires_in_days={"type": "number", "minimum": 0, "exclusiveMinimum": True}))}

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
        self.send(await self.store.run(_create), 201)


def agent_token_json(tok: Token) -> dict[str, Any]:
    """An agent token as listed: never the token itself. ``bound`` is false for tokens made before
    agent tokens named their agent and targets: those are refused (create a bound one)."""
    return {"id": tok.id, "name": tok.name, "agent": tok.agent_name, "targets": list(tok.agent_targets or []),
            "bound": bool(tok.agent_name), "prefix": tok.prefix, "state": token_state(tok),
            "created_at": iso(tok.created_at), "expires_at": iso(tok.expires_at),
            "last_used_at": iso(tok.last_used_at), "revoked_at": iso(tok.revoked_at)}


def _agent_targets(session: Session, targets: list[str] | None) -> list[str]:
    """The targets an agent token may serve: at least one, each one known to the gateway."""
    if not targets:
        raise BadRequest("field 'targets' must list at least one target the agent may serve, e.g. [\"payments\"]")
    wanted = sorted(set(targets))
    known = set(session.execute(select(Target.name).where(Target.name.in_(wanted))).scalars())
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise BadRequest(f"unknown target(s): {', '.join(unknown)}; create them first with "
                         f"`cellgate target set NAME --kind sql --dialect postgresql` (or --kind python)")
    return wanted


class AgentTokensHandler(APIHandler):
    """``POST``: a token for one agent name and the targets it may serve; ``GET``: all agent tokens."""

    access = {"GET": "admin", "POST": "admin"}
    api = {"POST": Operation(body=obj(("name", "targets"), name=STRING, targets=STRINGS))}

    async def get(self) -> None:
        def _list(session: Session) -> list[dict[str, Any]]:
            return [agent_token_json(t) for t in
                    session.execute(select(Token).where(Token.kind == "agent").order_by(Token.id)).scalars()]
        self.send({"agent_tokens": await self.store.run(_list)})

    async def post(self) -> None:
        data = self.body()
        name = self.field(data, "name")
        targets = self.field(data, "targets", list, required=False)
        if not NAME_RE.match(name):
            raise BadRequest("an agent name is 1-100 letters, digits, '.', '_' or '-' (the agent's [agent] id)")
        actor = self.user.actor

        def _create(session: Session) -> dict[str, Any]:
            allowed = _agent_targets(session, targets)
            raw, tok = auth.new_token(session, "agent", name=name, agent_targets=allowed, actor=actor)
            return {"token": raw, **agent_token_json(tok)}
        self.send(await self.store.run(_create), 201)


class AgentTokenHandler(APIHandler):
    """``PUT /api/v1/agent-tokens/{id}`` ``{"targets": [...]}``: change what the agent may serve."""

    access = {"PUT": "admin"}
    api = {"PUT": Operation(body=obj(("targets",), targets=STRINGS))}

    async def put(self, token_id: str) -> None:
        targets = self.field(self.body(), "targets", list)
        actor = self.user.actor

        def _change(session: Session) -> dict[str, Any]:
            tok = session.get(Token, int(token_id))
            if tok is None or tok.kind != "agent":
                raise NotFound(f"agent token {token_id} not found; see `cellgate agent-tokens list`")
            if not tok.agent_name:
                raise Conflict(f"agent token {token_id} is not bound to an agent name; create a bound one with "
                               "`cellgate agent-tokens create NAME --targets T1,T2`")
            allowed = _agent_targets(session, targets)
            before = list(tok.agent_targets or [])
            if allowed != before:
                tok.agent_targets = allowed
                audit.append(session, actor, "agent_token.targets_changed",
                             detail={"token_id": tok.id, "agent": tok.agent_name, "before": before, "after": allowed})
            return agent_token_json(tok)
        body = await self.store.run(_change)
        # a connected agent stops serving what it lost at once; what it gained it serves after its next hello
        for conn in list(self.agents.agents.values()):
            if conn.token_id == body["id"]:
                for name in [t for t in conn.targets if t not in body["targets"]]:
                    del conn.targets[name]
        self.send(body)


class AgentsHandler(APIHandler):
    access = {"GET": "admin"}

    async def get(self) -> None:
        self.send({"agents": [{"agent_id": a.agent_id, "token": a.token_name, "token_id": a.token_id,
                               "version": a.version, "tags": a.tags,
                               "targets": sorted(a.targets), "kernels": len(a.kernels)}
                              for a in self.agents.agents.values()]})


default_handlers = [
    (r"/api/v1/me/?", MeHandler),
    (r"/api/v1/users/?", UsersHandler),
    (r"/api/v1/users/(?P<name>[^/]+)/?", UserHandler),
    (r"/api/v1/users/(?P<name>[^/]+)/tokens/?", UserTokensHandler),
    (r"/api/v1/groups/?", GroupsHandler),
    (r"/api/v1/groups/(?P<group>[^/]+)/members/(?P<user>[^/]+)/?", GroupMemberHandler),
    (r"/api/v1/agent-tokens/?", AgentTokensHandler),
    (r"/api/v1/agent-tokens/(?P<token_id>\d+)/?", AgentTokenHandler),
    (r"/api/v1/agents/?", AgentsHandler),
]
