"""Users and group memberships from the identity provider's claims, at every sign-in.

- **Who**: the user is found by (issuer, ``sub``). The first time, by name: a user created
  before (``cellgate users add``) without a provider identity is linked to it; a name already
  linked to another identity is refused (an admin decides). The name is the
  ``OIDC.username_claim`` claim (default ``preferred_username``) or, when that is missing or not
  a valid cellgate name, the local part of the email if the provider verified it.
- **Profile**: ``email`` and ``email_verified`` are copied at each sign-in; ``last_login_at`` set.
- **Groups**: when the ID token carries ``OIDC.groups_claim`` (default ``groups``), the user's
  memberships become exactly the provider's groups that exist in cellgate (all of them, created
  as needed, with ``OIDC.create_groups``): joined when listed, left when no longer listed. One
  leading ``/`` is dropped (Keycloak's full group paths); names that are not valid cellgate
  names are ignored. Without the claim, memberships are not touched.
- **Admin**: never from claims, unless ``OIDC.admin_groups`` names groups: then the user is an
  admin exactly when the provider lists them in one of those.
- A deactivated user cannot sign in.

Every change is audited with the actor ``oidc``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit, auth
from .errors import Forbidden
from .models import Group, Membership, User, utcnow
from .names import NAME_RE
from .oidc import OIDC, SignInRefused

log = logging.getLogger("cellgate.gateway.provision")
ACTOR = "oidc"


@dataclass(frozen=True)
class SignedIn:
    user_id: int
    name: str
    is_admin: bool
    groups: list[str] = field(default_factory=list)
    ignored_groups: list[str] = field(default_factory=list)


def username(claims: dict[str, Any], rules: OIDC) -> str:
    value = claims.get(rules.username_claim)
    if isinstance(value, str) and NAME_RE.match(value):
        return value
    email = claims.get("email")
    if isinstance(email, str) and "@" in email and claims.get("email_verified") is True:
        local = email.rsplit("@", 1)[0]
        if NAME_RE.match(local):
            return local
    raise SignInRefused(f"the identity provider sent no usable user name: the {rules.username_claim!r} claim is "
                        f"{'missing' if value is None else 'not a valid cellgate name'} and there is no verified email "
                        "to fall back on (set OIDC.username_claim)")


def provider_groups(claims: dict[str, Any], claim: str) -> tuple[set[str], list[str]] | None:
    """(valid group names, ignored values) from the groups claim, or None when it is absent."""
    if not claim or claim not in claims:
        return None
    value = claims[claim]
    values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    names, ignored = set(), []
    for item in values:
        name = item[1:] if isinstance(item, str) and item.startswith("/") else item
        if isinstance(name, str) and NAME_RE.match(name):
            names.add(name)
        else:
            ignored.append(str(item)[:100])
    return names, ignored


def _find_user(session: Session, issuer: str, subject: str, name: str) -> User:
    user = session.execute(select(User).where(User.oidc_issuer == issuer, User.oidc_subject == subject)).scalar_one_or_none()
    if user is not None:
        return user
    user = auth.get_user(session, name)
    if user is None:
        user = auth.ensure_user(session, name, actor=ACTOR)
    elif user.oidc_subject is not None:
        raise Forbidden(f"the cellgate user {name!r} is already linked to another identity at the provider; "
                        "ask an admin")
    user.oidc_issuer, user.oidc_subject = issuer, subject
    session.flush()
    audit.append(session, ACTOR, "user.oidc_linked", detail={"user": name, "issuer": issuer, "subject": subject})
    return user


def _sync_groups(session: Session, user: User, wanted: set[str], create: bool) -> tuple[list[str], list[str]]:
    """Memberships := ``wanted`` ∩ existing groups (or all of ``wanted`` with ``create``)."""
    existing = {g.name: g for g in session.execute(select(Group).where(Group.name.in_(wanted))).scalars()} if wanted else {}
    skipped = sorted(wanted - set(existing)) if not create else []
    for name in sorted(wanted):
        group = existing.get(name) or (auth.ensure_group(session, name, actor=ACTOR) if create else None)
        if group is not None:
            auth.add_member(session, group, user, actor=ACTOR)
    current = session.execute(select(Group).join(Membership, Membership.group_id == Group.id)
                              .where(Membership.user_id == user.id)).scalars().all()
    for group in current:
        if group.name not in wanted:
            auth.remove_member(session, group, user, actor=ACTOR)
    return auth.user_groups(session, user.id), skipped


def sign_in(session: Session, rules: OIDC, issuer: str, claims: dict[str, Any], *, via: str) -> SignedIn:
    """Create or update the user behind verified ID-token ``claims``; raise Forbidden/SignInRefused."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise SignInRefused("the ID token has no subject ('sub')")
    user = _find_user(session, issuer, subject, username(claims, rules))
    if not user.active:
        raise Forbidden(f"the cellgate user {user.name!r} is deactivated; ask an admin")

    changed: dict[str, Any] = {}
    email = claims.get("email") if isinstance(claims.get("email"), str) else None
    verified = claims.get("email_verified") is True
    if email is not None and (email != user.email or verified != user.email_verified):
        user.email, user.email_verified = email, verified
        changed.update(email=email, email_verified=verified)
    if changed:
        audit.append(session, ACTOR, "user.updated", detail={"user": user.name, **changed})

    found = provider_groups(claims, rules.groups_claim)
    ignored: list[str] = []
    if found is not None:
        wanted, ignored = found
        _, skipped = _sync_groups(session, user, wanted, rules.create_groups)
        ignored += skipped
        if rules.admin_groups:
            admin = bool(wanted & set(rules.admin_groups))
            if admin != user.is_admin:
                user.is_admin = admin
                audit.append(session, ACTOR, "user.admin_granted" if admin else "user.admin_revoked",
                             detail={"user": user.name, "admin_groups": sorted(rules.admin_groups)})
    elif rules.groups_claim:
        log.info("the ID token for %s has no %r claim: group memberships unchanged", user.name, rules.groups_claim)

    user.last_login_at = utcnow()
    audit.append(session, ACTOR, "user.signed_in", detail={"user": user.name, "issuer": issuer, "via": via})
    return SignedIn(user_id=user.id, name=user.name, is_admin=user.is_admin,
                    groups=auth.user_groups(session, user.id), ignored_groups=ignored)
