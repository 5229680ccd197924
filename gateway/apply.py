"""Policy as code: apply a whole document of groups, memberships and target policies at once.

The document (``cellgate apply -f policy.toml`` parses TOML into it)::

    {"groups": {"dba": {"members": ["reviewer"]}},
     "targets": {"payments": {"description": "…", "kind": "sql", "dialect": "postgresql",
                              "submit_groups": [], "auto_approve": "read-only",
                              "review": {"groups": ["dba"], "mode": "any"},
                              "deny": {"statements": ["DROP"]}, "limits": {"approval_window": 3600}}}}

Everything is validated before anything changes; a bad document is refused whole with the
dotted path of the first bad field. Applying is idempotent: groups listed get exactly the
members listed (users are created when missing), targets listed get exactly the policy given
(omitted fields take their defaults); groups and targets not listed are left alone. A target's
``kind``, ``dialect`` and ``display_name`` (what it is, not its policy; agents must announce the
same kind and dialect to serve it, see binding.py) are changed only when given. The result lists
what changed, in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit, auth, binding, policy
from .models import Group, Target
from .names import NAME_RE


@dataclass
class ApplyError(Exception):
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApplyError(where, "must be a table")
    return value


#: target fields that say what the target is; changed only when given
META = ("kind", "dialect", "display_name")


def _meta(body: dict[str, Any], where: str) -> dict[str, str]:
    """Pop and check ``kind``/``dialect``/``display_name``; return those given (language follows kind)."""
    given = {key: body.pop(key) for key in META if key in body}
    meta: dict[str, str] = {}
    if "display_name" in given:
        if not isinstance(given["display_name"], str):
            raise ApplyError(f"{where}.display_name", "must be a string")
        meta["display_name"] = given["display_name"]
    if "kind" in given or "dialect" in given:
        if "kind" not in given:
            raise ApplyError(f"{where}.kind", "set kind together with dialect: kind = \"sql\" or \"python\"")
        try:
            meta["kind"], meta["language"], meta["dialect"] = binding.check_kind(given["kind"], given.get("dialect"))
        except binding.KindError as exc:
            raise ApplyError(f"{where}.{exc.field}", exc.message) from None
    return meta


def validate(doc: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, tuple[str, policy.Policy, dict[str, str]]]]:
    """Check the whole document; return (group → members, target → (description, policy, kind/dialect/display_name given))."""
    unknown = set(_mapping(doc, "document")) - {"groups", "targets"}
    if unknown:
        raise ApplyError(sorted(unknown)[0], "unknown section (known: groups, targets)")
    groups: dict[str, list[str]] = {}
    for name, body in _mapping(doc.get("groups", {}), "groups").items():
        where = f"groups.{name}"
        if not NAME_RE.match(name):
            raise ApplyError(where, "a group name is letters, digits, '.', '_' or '-'")
        body = _mapping(body, where)
        extra = set(body) - {"members"}
        if extra:
            raise ApplyError(f"{where}.{sorted(extra)[0]}", "unknown field (known: members)")
        members = body.get("members", [])
        if not isinstance(members, list) or not all(isinstance(m, str) and NAME_RE.match(m) for m in members):
            raise ApplyError(f"{where}.members", "must be a list of user names")
        groups[name] = sorted(set(members))
    targets: dict[str, tuple[str, policy.Policy, dict[str, str]]] = {}
    for name, body in _mapping(doc.get("targets", {}), "targets").items():
        where = f"targets.{name}"
        if not NAME_RE.match(name):
            raise ApplyError(where, "a target name is letters, digits, '.', '_' or '-'")
        body = dict(_mapping(body, where))
        description = body.pop("description", "")
        if not isinstance(description, str):
            raise ApplyError(f"{where}.description", "must be a string")
        meta = _meta(body, where)
        try:
            targets[name] = (description, policy.parse(body), meta)
        except policy.PolicyError as exc:
            raise ApplyError(f"{where}.{exc.field}", exc.message) from None
    return groups, targets


def _diff(prefix: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff(f"{prefix}{key}.", a, b)
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} → {b!r}")
    return changes


def apply(session: Session, doc: dict[str, Any], actor: str, *, dry_run: bool = False) -> list[str]:
    """Validate and apply ``doc`` in this transaction (the caller rolls back on ``dry_run``)."""
    groups, targets = validate(doc)
    changes: list[str] = []
    for name, members in groups.items():
        group = session.execute(select(Group).where(Group.name == name)).scalar_one_or_none()
        if group is None:
            group = auth.ensure_group(session, name, actor=actor)
            changes.append(f"group {name}: created")
        current = {m.user.name: m.user for m in group.memberships}
        for member in members:
            if member not in current:
                user = auth.get_user(session, member)
                if user is None:
                    user = auth.ensure_user(session, member, actor=actor)
                    changes.append(f"user {member}: created")
                auth.add_member(session, group, user, actor=actor)
                changes.append(f"group {name}: added {member}")
        for member, user in current.items():
            if member not in members:
                auth.remove_member(session, group, user, actor=actor)
                changes.append(f"group {name}: removed {member}")
    for name, (description, wanted, meta) in targets.items():
        target = session.get(Target, name)
        if target is None:
            target = Target(name=name, description="", submit_groups=[], review_groups=[], policy={})
            session.add(target)
            old: dict[str, Any] = {}
            changes.append(f"target {name}: created")
        else:
            old = {"description": target.description, **{k: getattr(target, k) for k in META if k in meta},
                   **policy.of(target).as_dict()}
        new = {"description": description, **{k: meta[k] for k in META if k in meta}, **wanted.as_dict()}
        diff = _diff(f"target {name}: ", old, new) if old else []
        if old and not diff:
            continue
        changes += diff
        target.description = description
        for key, value in meta.items():
            setattr(target, key, value)
        policy.store(target, wanted)
        session.flush()
        audit.append(session, actor, "target.policy_applied", target=name, detail={"policy": new, "changes": diff})
    if changes and not dry_run:
        audit.append(session, actor, "policy.applied", detail={"changes": changes})
    return changes
