"""``/api/v1/tokens``: a user's own tokens (admins: anyone's), and revoking one.

A token is never shown again after it was issued: listings carry its id, note, first
characters, times and state. Revoking takes effect on the next request, and open WebSockets
authenticated by the token are closed at once (``sockets.py``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit, auth
from ..access import may_list_tokens, may_revoke_token, visible_tokens
from ..errors import Forbidden, NotFound
from ..models import Token, aware, utcnow
from ..sockets import REVOKED
from ..views import iso
from .base import APIHandler
from .inputs import Operation, Query


def token_state(tok: Token) -> str:
    if tok.revoked_at is not None:
        return "revoked"
    expires = tok.expires_at
    if expires is not None and aware(expires) <= utcnow():
        return "expired"
    return "active"


def token_json(tok: Token, current: int | None = None) -> dict[str, Any]:
    return {"id": tok.id, "kind": tok.kind, "user": tok.user.name if tok.user else None,
            "note": tok.name, "prefix": tok.prefix, "state": token_state(tok),
            "created_at": iso(tok.created_at), "expires_at": iso(tok.expires_at),
            "last_used_at": iso(tok.last_used_at), "revoked_at": iso(tok.revoked_at),
            "current": tok.id == current}


class TokensHandler(APIHandler):
    """``GET /api/v1/tokens``: the caller's tokens; admins: ``?user=NAME`` or ``?kind=agent``."""

    access = {"GET": "user"}
    api = {"GET": Operation(query=(Query("user", help="whose tokens (admins)"),
                                   Query("kind", choices=("user", "agent"), help="agent: agents' tokens (admins)")))}

    async def get(self) -> None:
        name, kind = self.argument("user"), self.argument("kind")
        if not may_list_tokens(self.user, name, kind):
            raise Forbidden("only admins list other users' or agents' tokens")
        ident = self.user
        current = ident.token_id

        def _list(session: Session) -> list[dict[str, Any]]:
            query = select(Token).where(visible_tokens(ident)).order_by(Token.id)
            if kind == "agent":
                query = query.where(Token.kind == "agent")
            else:
                user = auth.get_user(session, name or ident.name)
                if user is None:
                    raise NotFound(f"user {name!r} not found")
                query = query.where(Token.user_id == user.id, Token.kind == "user")
            return [token_json(t, current) for t in session.execute(query).scalars()]
        self.send({"tokens": await self.store.run(_list)})


class TokenHandler(APIHandler):
    """``DELETE /api/v1/tokens/{id}``: revoke one of your tokens (admins: any token, agents' too)."""

    access = {"DELETE": "user"}

    async def delete(self, token_id: str) -> None:
        ident = self.user

        def _revoke(session: Session) -> dict[str, Any]:
            tok = session.get(Token, int(token_id))
            if tok is None or not may_revoke_token(ident, tok):
                raise NotFound(f"token {token_id} not found")  # another user's token is not disclosed
            if tok.revoked_at is None:
                tok.revoked_at = utcnow()
                audit.append(session, ident.actor, "token.revoked",
                             detail={"token_id": tok.id, "kind": tok.kind, "prefix": tok.prefix,
                                     "user": tok.user.name if tok.user else None, "name": tok.name})
            return token_json(tok, ident.token_id)
        body = await self.store.run(_revoke)
        body["closed_sockets"] = self.sockets.close_token(int(token_id), REVOKED)
        self.send(body)


default_handlers = [
    (r"/api/v1/tokens/?", TokensHandler),
    (r"/api/v1/tokens/(?P<token_id>\d+)/?", TokenHandler),
]
