"""What binds an agent to what it may serve: target kinds and dialects, and the hello checks.

A target's ``kind`` and ``dialect`` are set on the gateway by an admin (``PUT /api/v1/targets``,
``cellgate target set``, ``cellgate apply``); the risk analysis reads them. An agent token names
one agent and the targets it may serve (``tokens.agent_name``, ``tokens.agent_targets``). On
``hello`` the gateway accepts the agent only under the token's name, and each announced target
only when the token lists it, it exists, and its gateway kind/dialect are set and equal what the
agent announces (MySQL and MariaDB count as one family). Nothing the agent announces is written
to the target.
"""

from __future__ import annotations

import logging
from typing import Any

from cellgate.kernels.registry import DIALECTS, KINDS

from .models import Target, Token

#: kinds and dialects are kernels/registry.py's: a dialect's family is compared with what an agent
#: announces (an agent derives "mariadb" from a mariadb:// URL and "mysql" from mysql://; both
#: speak the same protocol)
log = logging.getLogger("cellgate.gateway.binding")
SET_KIND = "cellgate target set {name} --kind sql --dialect postgresql|mysql|mariadb|sqlite (or --kind python)"


class KindError(ValueError):
    """A bad kind/dialect pair; ``field`` is ``kind`` or ``dialect``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_kind(kind: Any, dialect: Any) -> tuple[str, str, str]:
    """Validate an admin's kind/dialect; return (kind, language, dialect) to store ("" for no dialect)."""
    if kind not in KINDS:
        raise KindError("kind", f"must be one of {', '.join(map(repr, sorted(KINDS)))}, got {kind!r}")
    if kind == "python":
        if dialect not in (None, ""):
            raise KindError("dialect", f"a python target has no dialect (got {dialect!r}); leave it out")
        return kind, KINDS[kind].language, ""
    if dialect in (None, ""):
        raise KindError("dialect", f"a sql target needs a dialect: one of {', '.join(map(repr, DIALECTS))}")
    if dialect not in DIALECTS:
        raise KindError("dialect", f"must be one of {', '.join(map(repr, DIALECTS))}, got {dialect!r}")
    return kind, KINDS[kind].language, str(dialect)


def merged_kind(target: Target, data: dict[str, Any]) -> tuple[str, str, str] | None:
    """The (kind, language, dialect) a PUT body asks for, starting from the target's; None: unchanged.

    Giving ``kind`` without ``dialect`` keeps the current dialect when the kind stays ``sql``."""
    if "kind" not in data and "dialect" not in data:
        return None
    kind = data.get("kind", target.kind or None)
    if kind is None:
        raise KindError("kind", "set the kind together with the dialect: \"kind\": \"sql\" or \"python\"")
    dialect = data.get("dialect", target.dialect if kind == "sql" and target.kind == "sql" else None)
    return check_kind(kind, dialect)


def token_refusal(token: Token | None, agent_id: str) -> str | None:
    """Why this token may not speak as ``agent_id`` (None: it may)."""
    if token is None or token.kind != "agent":
        return "the agent token is no longer valid"
    if not token.agent_name:
        return (f"agent token {token.id} is not bound to an agent name (created before cellgate bound agent tokens); "
                f"create a bound one with `cellgate agent-tokens create {agent_id} --targets T1,T2` and revoke this one "
                f"with `cellgate token revoke {token.id}`")
    if agent_id != token.agent_name:
        return (f"this agent token belongs to agent {token.agent_name!r}, not {agent_id!r}: set [agent] id = "
                f"{token.agent_name!r} in the agent's config or use that agent's own token")
    return None


def target_refusal(name: str, announced: dict[str, Any], allowed: list[str], target: Target | None) -> str | None:
    """Why an announced target is not accepted from this agent (None: accepted)."""
    if name not in allowed:
        return (f"the agent token does not list target {name!r} (it lists {', '.join(allowed) or 'none'}); "
                f"an admin adds it with `cellgate agent-tokens set-targets`")
    if target is None:
        return f"target {name!r} does not exist on the gateway; create it with `{SET_KIND.format(name=name)}`"
    if not target.kind or (target.kind == "sql" and not target.dialect):
        return f"target {name!r} has no kind/dialect set on the gateway; set them with `{SET_KIND.format(name=name)}`"
    kind, dialect = announced.get("kind"), announced.get("dialect") or ""
    if kind != target.kind:
        return f"the agent announces kind {kind!r} for target {name!r}, but the gateway has {target.kind!r}"
    if target.kind == "sql" and _family(str(dialect)) != _family(target.dialect):
        return f"the agent announces dialect {dialect!r} for target {name!r}, but the gateway has {target.dialect!r}"
    return None


def _family(dialect: str | None) -> str | None:
    """A dialect's driver family (``mariadb`` → ``mysql``); None for anything not a dialect name."""
    found = DIALECTS.get(dialect or "")
    return found.family if found is not None else None


def recheck(agents: Any, target: Target) -> list[str]:
    """After an admin changed ``target``: connected agents whose announcement no longer matches
    stop serving it (until they reconnect). Returns their ids."""
    dropped = []
    for conn in agents.serving(target.name):
        why = target_refusal(target.name, conn.targets[target.name], [target.name], target)
        if why is not None:
            del conn.targets[target.name]
            dropped.append(conn.agent_id)
            log.warning("agent %s no longer serves %r: %s", conn.agent_id, target.name, why)
    return dropped
