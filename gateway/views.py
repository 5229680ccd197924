"""JSON shapes of the REST API (docs/api.md): a task, a target, a user, a time, as the API sends them.

Who may see what is ``access.py``'s; the held cell's status display is ``display.py``'s.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from . import policy
from .models import Target, Task, User
from .notebooks import document


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_notebook(task: Task) -> bool:
    """A notebook task, or the review of a notebook schedule: its code is a notebook's JSON."""
    return task.kind == "notebook" or (task.kind == "schedule" and (task.template or {}).get("kind") == "notebook")


def shown_code(task: Task) -> str:
    """The code as reviewers read it: a notebook task's cells, each under a line naming it (its
    ``code`` is the notebook's JSON, which is what the approval's hash covers)."""
    if not is_notebook(task):
        return task.code
    try:
        return document.reviewable(task.code)
    except (ValueError, KeyError, AttributeError):  # not a notebook after all: show it as it is
        return task.code


def task_json(task: Task, url: str) -> dict[str, Any]:
    shown = {"review_text": shown_code(task)} if is_notebook(task) else {}
    return {
        "id": task.id,
        "kind": task.kind,
        "status": task.status,
        "target": task.target,
        "user": task.user.name,
        "code": task.code,
        "code_sha256": task.code_sha256,
        "why": task.why,
        "kernel_id": task.kernel_id,
        "notebook_path": task.notebook_path,
        "cell_id": task.cell_id,
        "agent_id": task.agent_id,
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "review_groups": list(task.review_groups),
        "reviews": [{"user": r.user.name, "decision": r.decision, "comment": r.comment, "created_at": iso(r.created_at)}
                    for r in task.reviews],
        "decided_by": task.decided_by,
        "decision_comment": task.decision_comment,
        "error": {"ename": task.error_ename, "evalue": task.error_evalue} if task.error_ename else None,
        "output_bytes": task.output_bytes,
        "risk": task.risk or {},
        "row_estimate": task.row_estimate,
        "review_rule": task.review_rule or {},
        "template": task.template,
        "missing_approvals": list(task.missing_approvals),
        "approved_at": iso(task.approved_at),
        "expires_at": iso(task.expires_at),
        "url": url,
        **shown,
    }


def target_json(target: Target, online: bool) -> dict[str, Any]:
    return {
        "name": target.name,
        "description": target.description,
        "kind": target.kind,
        "language": target.language,
        "dialect": target.dialect,
        "display_name": target.display_name,
        "submit_groups": list(target.submit_groups),
        "review_groups": list(target.review_groups),
        "requires_review": bool(target.review_groups),
        "online": online,
        "policy": policy.of(target).as_dict(),
    }


def user_json(user: User, groups: list[str]) -> dict[str, Any]:
    return {"name": user.name, "is_admin": user.is_admin, "active": user.active, "groups": groups,
            "created_at": iso(user.created_at)}
