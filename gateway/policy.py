"""Policy: who must approve, what is auto-approved or denied (who may submit at all: ``access.may_submit``).

A target's policy is a :class:`Policy`, stored on the target row (``submit_groups``,
``review_groups`` and the ``policy`` JSON for the rest) and managed as code
(``cellgate apply -f policy.toml``) or over the API. :func:`evaluate` is the one place that
turns (who, target, code, risk) into a decision; handlers never decide.

Order of evaluation: may this user submit at all → is the code denied outright (statement
types, tables, patterns, risk level) → is review configured → is it auto-approvable
(read-only SQL that parsed, nothing else: Python cells are always reviewed) → review.

A :class:`Decision` to approve read-only SQL carries ``read_only=True``: the task then runs on the
target's read-only credential (``review_rule["run_as"] = "read-only"``, set in ``flow.TaskFlow.submit``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from . import access
from .auth import Identity
from .models import Target
from .risk import LEVELS, Risk

APPROVE = "approve"
REVIEW = "review"
DENY = "deny"

REVIEW_MODES = ("all", "any", "count")
AUTO_APPROVE = ("never", "read-only")
PYTHON_AUTO_APPROVE = ("never",)
INTROSPECTION = ("refuse", "allow")

#: why ``python_auto_approve = "unflagged"`` is refused (it was removed)
PYTHON_AUTO_APPROVE_REMOVED = (
    "'unflagged' was removed: a per-cell scan of Python can be bypassed by simple spellings "
    "(posix.system, sys.modules lookups, getattr with a computed name, builtins lookups, "
    "keyword arguments to execute), so Python cells are always reviewed; use 'never' (the default) "
    "or drop the field")


class PolicyError(ValueError):
    """A policy field is invalid; ``field`` is its dotted path (``review.mode``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ReviewRule:
    groups: tuple[str, ...] = ()
    mode: str = "all"   # all: an approval from each group; any: one from any group; count: `approvals` from their members
    approvals: int = 1


@dataclass(frozen=True)
class DenyRule:
    statements: tuple[str, ...] = ()   # statement types, e.g. DROP, TRUNCATE
    tables: tuple[str, ...] = ()       # lower-case, as risk reports them
    patterns: tuple[str, ...] = ()     # regular expressions searched in the code
    risk: str | None = None            # deny at or above this risk level


@dataclass(frozen=True)
class Limits:
    approval_window: int = 3600        # seconds an approval stays valid before the task must start
    max_rows: int = 1000
    max_bytes: int = 10_000_000
    timeout: int = 300                 # seconds a task may run


def time_limit(review_rule: dict[str, Any] | None) -> float:
    """Seconds a task may run: what its review rule (``Task.review_rule``, the target's limits when
    it was decided) says, else the default."""
    return float((review_rule or {}).get("timeout", Limits().timeout))


def byte_limit(review_rule: dict[str, Any] | None) -> int:
    """Bytes of output a task may show: its review rule's, else the default."""
    return int((review_rule or {}).get("max_bytes", Limits().max_bytes))


@dataclass(frozen=True)
class Policy:
    submit_groups: tuple[str, ...] = ()
    review: ReviewRule = field(default_factory=ReviewRule)
    auto_approve: str = "never"
    python_auto_approve: str = "never"
    #: inspect_request / complete_request on Python targets (they evaluate code in ipykernel): refuse | allow
    introspection: str = "refuse"
    deny: DenyRule = field(default_factory=DenyRule)
    limits: Limits = field(default_factory=Limits)

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = _lists(asdict(self))  # a dict stays a dict, its tuples become lists
        return data

    def extra(self) -> dict[str, Any]:
        """What lives in the target's ``policy`` JSON (the groups have columns of their own)."""
        data = self.as_dict()
        data.pop("submit_groups")
        data["review"].pop("groups")
        return data


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(where, "must be a list of non-empty strings")
    return tuple(value)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise PolicyError(where, f"must be an integer ≥ {minimum}")
    return value


def _choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PolicyError(where, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
    return str(value)


def _table(value: Any, where: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(where, "must be a table")
    unknown = set(value) - known
    if unknown:
        name = sorted(unknown)[0]
        raise PolicyError(f"{where}.{name}" if where else name, f"unknown field (known: {', '.join(sorted(known))})")
    return value


def parse(data: dict[str, Any]) -> Policy:
    """Validate a policy document (the API's and the policy file's shape); raise :class:`PolicyError`."""
    _table(data, "", {"submit_groups", "review", "auto_approve", "python_auto_approve", "introspection",
                   "deny", "limits", "description"})
    review = _table(data.get("review", {}), "review", {"groups", "mode", "approvals"})
    deny = _table(data.get("deny", {}), "deny", {"statements", "tables", "patterns", "risk"})
    limits = _table(data.get("limits", {}), "limits", {"approval_window", "max_rows", "max_bytes", "timeout"})
    for i, pattern in enumerate(_strings(deny.get("patterns", []), "deny.patterns")):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"deny.patterns[{i}]", f"is not a valid regular expression: {exc}") from None
    rule = ReviewRule(
        groups=_strings(review.get("groups", []), "review.groups"),
        mode=_choice(review.get("mode", "all"), "review.mode", REVIEW_MODES),
        approvals=_int(review.get("approvals", 1), "review.approvals", 1),
    )
    if rule.mode == "count" and not rule.groups:
        raise PolicyError("review.mode", "'count' needs review.groups whose members may approve")
    risk = deny.get("risk")
    defaults = Limits()
    return Policy(
        submit_groups=_strings(data.get("submit_groups", []), "submit_groups"),
        review=rule,
        auto_approve=_choice(data.get("auto_approve", "never"), "auto_approve", AUTO_APPROVE),
        python_auto_approve=_python_auto_approve(data.get("python_auto_approve", "never")),
        introspection=_choice(data.get("introspection", "refuse"), "introspection", INTROSPECTION),
        deny=DenyRule(
            statements=tuple(s.upper() for s in _strings(deny.get("statements", []), "deny.statements")),
            tables=tuple(t.lower() for t in _strings(deny.get("tables", []), "deny.tables")),
            patterns=_strings(deny.get("patterns", []), "deny.patterns"),
            risk=None if risk is None else _choice(risk, "deny.risk", LEVELS),
        ),
        limits=Limits(
            approval_window=_int(limits.get("approval_window", defaults.approval_window), "limits.approval_window", 1),
            max_rows=_int(limits.get("max_rows", defaults.max_rows), "limits.max_rows", 1),
            max_bytes=_int(limits.get("max_bytes", defaults.max_bytes), "limits.max_bytes", 1),
            timeout=_int(limits.get("timeout", defaults.timeout), "limits.timeout", 1),
        ),
    )


def _python_auto_approve(value: Any) -> str:
    if value == "unflagged":
        raise PolicyError("python_auto_approve", PYTHON_AUTO_APPROVE_REMOVED)
    return _choice(value, "python_auto_approve", PYTHON_AUTO_APPROVE)


def of(target: Target) -> Policy:
    """The effective policy of a target row."""
    extra = dict(target.policy or {})
    review = dict(extra.get("review", {}))
    review["groups"] = list(target.review_groups or [])
    extra["review"] = review
    extra["submit_groups"] = list(target.submit_groups or [])
    return parse(extra)


def store(target: Target, policy: Policy) -> None:
    target.submit_groups = list(policy.submit_groups)
    target.review_groups = list(policy.review.groups)
    target.policy = policy.extra()


@dataclass(frozen=True)
class Decision:
    action: str  # approve | review | deny
    reason: str
    review_groups: tuple[str, ...] = ()
    #: approved because it is read-only SQL: it must run on the read-only credential
    read_only: bool = False

    @property
    def run_as(self) -> str:
        """``read-only`` or ``read-write``: how an approved task must run (``review_rule["run_as"]``)."""
        return "read-only" if self.action == APPROVE and self.read_only else "read-write"


def denial(policy: Policy, code: str, risk: Risk | None) -> str | None:
    """Why the code is denied outright, or None."""
    rule = policy.deny
    if risk is not None:
        for statement in risk.statements:
            if statement in rule.statements:
                return f"{statement} statements are denied on this target"
        hidden = sorted(set(rule.statements) & {"INSERT", "UPDATE", "DELETE", "MERGE"})
        if hidden and "write_in_cte" in risk.flags:  # WITH d AS (DELETE …) SELECT … reports SELECT
            return f"writes inside WITH are denied on this target (it denies {', '.join(hidden)})"
        for table in risk.tables:
            bare = table.rsplit(".", 1)[-1]
            if table in rule.tables or bare in rule.tables:
                return f"table {table} may not be touched on this target"
        if rule.risk is not None and LEVELS.index(risk.level) >= LEVELS.index(rule.risk):
            return f"risk {risk.level} ({'; '.join(risk.reasons[:2])}) is at or above this target's limit ({rule.risk})"
    spellings = _spellings(code, risk)
    for pattern in rule.patterns:
        if any(re.search(pattern, text) for text in spellings):
            return f"the code matches the denied pattern {pattern!r}"
    return None


def _spellings(code: str, risk: Risk | None) -> list[str]:
    """What deny patterns are searched in: the code as written, and as the analysis decoded it.

    Each statement without its comments (``DROP/**/TABLE`` → ``DROP TABLE``) and the decoded
    names of the functions and tables it uses (``U&"\\0064blink_exec"`` → ``dblink_exec``), so a
    pattern cannot be dodged by a spelling the server reads the same way.
    """
    if risk is None:
        return [code]
    return [code, *risk.normalized, *risk.functions, *risk.tables]


def auto_approvable(policy: Policy, kind: str, risk: Risk | None) -> str | None:
    """Why the code may run without review, or None."""
    if risk is None or not risk.parsed:
        return None
    if kind == "sql" and policy.auto_approve == "read-only" and risk.read_only:
        return "read-only SQL is auto-approved on this target"
    return None  # Python is never auto-approved (PYTHON_AUTO_APPROVE_REMOVED says why)


def evaluate(ident: Identity, target: Target, code: str, risk: Risk | None = None) -> Decision:
    if not access.may_submit(ident, target):
        return Decision(DENY, f"{ident.name} may not run code on {target.name} (not in {', '.join(target.submit_groups)})")
    policy = of(target)
    why_denied = denial(policy, code, risk)
    if why_denied:
        return Decision(DENY, why_denied)
    if not policy.review.groups:
        return Decision(APPROVE, f"{target.name} does not require review")
    why_auto = auto_approvable(policy, target.kind or "sql", risk)
    if why_auto:
        return Decision(APPROVE, why_auto, read_only=True)
    groups = policy.review.groups
    return Decision(REVIEW, f"{target.name} requires review by {', '.join(groups)}", groups)
