"""Which cellgate user a Slack user is.

A Slack user is a cellgate user only through a :class:`~cellgate.gateway.models.SlackLink`:

- made by an admin (``cellgate slack link SLACK_USER_ID USER``, ``how="manual"``), for one
  workspace or, without ``--team``, for the Slack user ID in any workspace; or
- made on first use (``how="email"``) when the Slack profile's email (``users.info``, scope
  ``users:read.email``) equals the email of exactly one active cellgate user whose identity provider
  verified it (``email_verified``). An unverified email never links anyone.

The :class:`Identity` built for a linked user is read from the store at that moment (groups
included), so a member removed from a group, or a deactivated user, can no longer decide from
Slack on their next click. Every link made or removed is audited.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .. import audit, auth
from ..auth import Identity
from ..errors import Forbidden, NotFound
from ..models import SlackLink, User
from ..store import Store
from ..views import iso
from .client import SlackCallFailed, SlackClient

log = logging.getLogger("cellgate.gateway.slack")


def not_linked(slack_user_id: str) -> str:
    return ("your Slack account is not linked to a cellgate user; ask an admin to run "
            f"`cellgate slack link {slack_user_id} YOUR_CELLGATE_USER` (or sign in to cellgate once with "
            "the email address of your Slack profile)")


def identity_of(session: Session, user: User) -> Identity:
    """The user as an identity, groups read now."""
    return Identity(kind="user", name=user.name, user_id=user.id, is_admin=user.is_admin,
                    groups=frozenset(auth.user_groups(session, user.id)))


def linked_user(session: Session, slack_user_id: str, team_id: str) -> User | None:
    """The user linked to this Slack user in this workspace (or in any, for a link without a team)."""
    rows = session.execute(select(SlackLink).where(SlackLink.slack_user_id == slack_user_id,
                                                   SlackLink.team_id.in_({team_id, ""}))).scalars().all()
    best = sorted(rows, key=lambda r: r.team_id != team_id)  # this workspace's link first
    return session.get(User, best[0].user_id) if best else None


def linked_identity(session: Session, slack_user_id: str, team_id: str) -> Identity | None:
    user = linked_user(session, slack_user_id, team_id)
    if user is None:
        return None
    if not user.active:
        raise Forbidden(f"your Slack account is linked to cellgate user {user.name}, who is deactivated")
    return identity_of(session, user)


def link(session: Session, slack_user_id: str, user_name: str, *, team_id: str = "", how: str = "manual",
         actor: str = "system") -> dict[str, Any]:
    """Link (or re-link) a Slack user to ``user_name``; returns the link as JSON."""
    user = auth.get_user(session, user_name)
    if user is None:
        raise NotFound(f"user {user_name!r} not found")
    row = session.execute(select(SlackLink).where(SlackLink.slack_user_id == slack_user_id,
                                                  SlackLink.team_id == team_id)).scalar_one_or_none()
    before = None
    if row is None:
        row = SlackLink(slack_user_id=slack_user_id, team_id=team_id, user_id=user.id, how=how)
        session.add(row)
    else:
        before = session.get(User, row.user_id)
        row.user_id, row.how = user.id, how
    session.flush()
    audit.append(session, actor, "slack.linked", detail={"slack_user_id": slack_user_id, "team_id": team_id,
                                                         "user": user.name, "how": how,
                                                         "replaces": before.name if before else None})
    return link_json(row, user.name)


def unlink(session: Session, slack_user_id: str, *, team_id: str = "", actor: str = "system") -> None:
    row = session.execute(select(SlackLink).where(SlackLink.slack_user_id == slack_user_id,
                                                  SlackLink.team_id == team_id)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"Slack user {slack_user_id} is not linked" + (f" in workspace {team_id}" if team_id else ""))
    user = session.get(User, row.user_id)
    session.execute(delete(SlackLink).where(SlackLink.id == row.id))
    audit.append(session, actor, "slack.unlinked", detail={"slack_user_id": slack_user_id, "team_id": team_id,
                                                           "user": user.name if user else None})


def all_links(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(select(SlackLink, User.name).join(User, User.id == SlackLink.user_id)
                           .order_by(User.name, SlackLink.slack_user_id)).tuples().all()
    return [link_json(row, name) for row, name in rows]


def link_json(row: SlackLink, user_name: str) -> dict[str, Any]:
    return {"slack_user_id": row.slack_user_id, "team_id": row.team_id, "user": user_name, "how": row.how,
            "created_at": iso(row.created_at)}


def user_by_verified_email(session: Session, email: str) -> User | None:
    """The one active user whose verified email is ``email`` (case-insensitive); None if none or several."""
    found = session.execute(select(User).where(func.lower(User.email) == email.strip().lower(),
                                               User.email_verified.is_(True), User.active.is_(True))).scalars().all()
    if len(found) > 1:
        log.warning("%d cellgate users have the verified email of a Slack user: no link made", len(found))
    return found[0] if len(found) == 1 else None


def link_by_email(session: Session, slack_user_id: str, team_id: str, email: str) -> Identity | None:
    user = user_by_verified_email(session, email)
    if user is None:
        return None
    link(session, slack_user_id, user.name, team_id=team_id, how="email", actor="slack")
    return identity_of(session, user)


async def resolve(store: Store, client: SlackClient, slack_user_id: str, team_id: str) -> Identity | None:
    """The cellgate identity of a Slack user, linking by verified email on first use; None if unmapped.

    Raises :class:`Forbidden` when the linked user is deactivated.
    """
    ident = await store.run(linked_identity, slack_user_id, team_id)
    if ident is not None or not client.enabled:
        return ident
    try:
        info = await client.call("users.info", attempts=1, user=slack_user_id)
    except SlackCallFailed as exc:
        log.info("could not read Slack user %s to match their email: %s", slack_user_id, exc)
        return None
    profile_user = info.get("user") or {}
    email = str((profile_user.get("profile") or {}).get("email") or "")
    if not email or profile_user.get("deleted") or profile_user.get("is_bot") or profile_user.get("is_email_confirmed") is False:
        return None
    return await store.run(link_by_email, slack_user_id, team_id or str(profile_user.get("team_id") or ""), email)


def slack_id_of(session: Session, user_id: int) -> str | None:
    """A Slack user ID linked to this cellgate user (the latest link), for mentions and DMs."""
    return session.execute(select(SlackLink.slack_user_id).where(SlackLink.user_id == user_id)
                           .order_by(SlackLink.id.desc()).limit(1)).scalar_one_or_none()
