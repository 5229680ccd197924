"""Tokens and identities: issuing, looking up and revoking tokens; users, groups and admins.

Tokens are random (``cg_`` + 32 url-safe bytes), shown once, stored as their SHA-256, with
expiry, last use and revocation. A user token acts as its user; an agent token can only be an
agent. Lookups happen on every request (and on every WebSocket open), so a revoked token or a
deactivated user is refused on the next one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit
from .models import Group, Membership, Token, User, aware, utcnow

TOKEN_PREFIX = "cg_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """Who is calling. ``kind`` is ``user`` or ``agent``."""

    kind: str
    name: str
    user_id: int | None = None
    is_admin: bool = False
    groups: frozenset[str] = field(default_factory=frozenset)
    token_id: int | None = None

    @property
    def actor(self) -> str:
        return self.name if self.kind == "user" else f"agent:{self.name}"


def new_token(session: Session, kind: str, *, user: User | None = None, name: str = "",
              expires_in_days: float | None = None, actor: str = "system",
              agent_targets: list[str] | None = None) -> tuple[str, Token]:
    """A new token. An agent token with ``agent_targets`` is bound to the agent named ``name`` (its
    hello ``agent_id``) and may serve only those targets; one without is refused on hello (binding.py)."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    expires = utcnow() + dt.timedelta(days=expires_in_days) if expires_in_days else None
    tok = Token(kind=kind, user_id=user.id if user else None, name=name, hash=hash_token(raw),
                prefix=raw[:8], expires_at=expires)
    if kind == "agent" and agent_targets is not None:
        tok.agent_name, tok.agent_targets = name, sorted(set(agent_targets))
    session.add(tok)
    session.flush()
    detail = {"token_id": tok.id, "kind": kind, "user": user.name if user else None, "name": name, "prefix": tok.prefix}
    if kind == "agent":
        detail.update(agent=tok.agent_name, targets=tok.agent_targets)
    audit.append(session, actor, "token.created", detail=detail)
    return raw, tok


def identify(session: Session, raw: str) -> Identity | None:
    """The identity behind a token, or None (unknown, revoked, expired, inactive user)."""
    tok = session.execute(select(Token).where(Token.hash == hash_token(raw))).scalar_one_or_none()
    now = utcnow()
    if tok is None or tok.revoked_at is not None or (tok.expires_at and aware(tok.expires_at) <= now):
        return None
    if tok.last_used_at is None or now - aware(tok.last_used_at) > dt.timedelta(seconds=60):
        tok.last_used_at = now  # coarse, so every request is not a write
    if tok.kind == "agent":
        return Identity(kind="agent", name=tok.name, token_id=tok.id)
    user = tok.user
    if user is None or not user.active:
        return None
    return Identity(kind="user", name=user.name, user_id=user.id, is_admin=user.is_admin,
                    groups=frozenset(user_groups(session, user.id)), token_id=tok.id)


def user_groups(session: Session, user_id: int) -> list[str]:
    return list(session.execute(
        select(Group.name).join(Membership, Membership.group_id == Group.id).where(Membership.user_id == user_id).order_by(Group.name)
    ).scalars())


def get_user(session: Session, name: str) -> User | None:
    return session.execute(select(User).where(User.name == name)).scalar_one_or_none()


def ensure_user(session: Session, name: str, *, is_admin: bool = False, actor: str = "system") -> User:
    user = get_user(session, name)
    if user is None:
        user = User(name=name, is_admin=is_admin)
        session.add(user)
        session.flush()
        audit.append(session, actor, "user.created", detail={"user": name, "is_admin": is_admin})
    return user


def ensure_group(session: Session, name: str, *, actor: str = "system") -> Group:
    group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
    if group is None:
        group = Group(name=name)
        session.add(group)
        session.flush()
        audit.append(session, actor, "group.created", detail={"group": name})
    return group


def add_member(session: Session, group: Group, user: User, *, actor: str = "system") -> bool:
    if session.get(Membership, (user.id, group.id)) is not None:
        return False
    session.add(Membership(user_id=user.id, group_id=group.id))
    session.flush()
    audit.append(session, actor, "group.member_added", detail={"group": group.name, "user": user.name})
    return True


def remove_member(session: Session, group: Group, user: User, *, actor: str = "system") -> bool:
    membership = session.get(Membership, (user.id, group.id))
    if membership is None:
        return False
    session.delete(membership)
    session.flush()
    audit.append(session, actor, "group.member_removed", detail={"group": group.name, "user": user.name})
    return True


def valid_tokens(session: Session, token_ids: set[int] | list[int]) -> set[int]:
    """Which of ``token_ids`` still work: not revoked, not expired, and (user tokens) their user active."""
    if not token_ids:
        return set()
    rows = session.execute(select(Token.id, Token.kind, Token.revoked_at, Token.expires_at, User.active)
                           .outerjoin(User, User.id == Token.user_id).where(Token.id.in_(list(token_ids))))
    now = utcnow()
    return {tid for tid, kind, revoked, expires, active in rows
            if revoked is None and (expires is None or aware(expires) > now) and (kind == "agent" or active)}


def still_valid(session: Session, ident: Identity) -> bool:
    """Whether ``ident`` would still be let in: its token works (or, without one, its user is active)."""
    if ident.token_id is not None:
        return ident.token_id in valid_tokens(session, [ident.token_id])
    if ident.user_id is not None:
        user = session.get(User, ident.user_id)
        return bool(user and user.active)
    return True
