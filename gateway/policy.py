"""Policy: may this user submit to this target, and does this task need review?

Issue 2 keeps it to the target's ``submit_groups`` and ``review_groups``; risk analysis and
richer rules (issue 3) extend :func:`evaluate`, never a handler.
"""

from __future__ import annotations

from dataclasses import dataclass

from .auth import Identity
from .models import Target

APPROVE = "approve"
REVIEW = "review"
DENY = "deny"


@dataclass(frozen=True)
class Decision:
    action: str  # approve | review | deny
    reason: str
    review_groups: tuple[str, ...] = ()


def may_submit(ident: Identity, target: Target) -> bool:
    """Admins and members of one of ``submit_groups``; an empty list means every user."""
    if ident.kind != "user":
        return False
    if ident.is_admin or not target.submit_groups:
        return True
    return bool(ident.groups & set(target.submit_groups))


def evaluate(ident: Identity, target: Target, code: str) -> Decision:
    if not may_submit(ident, target):
        return Decision(DENY, f"{ident.name} may not run code on {target.name}")
    if target.review_groups:
        groups = tuple(target.review_groups)
        return Decision(REVIEW, f"{target.name} requires review by {', '.join(groups)}", groups)
    return Decision(APPROVE, f"{target.name} does not require review")
