"""JSON shapes of the REST API (docs/api.md), the held cell's status display, and who may see a task."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from . import policy
from .auth import Identity
from .models import Target, Task, User


def iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def task_json(task: Task, url: str) -> dict[str, Any]:
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
        "missing_approvals": list(task.missing_approvals),
        "approved_at": iso(task.approved_at),
        "expires_at": iso(task.expires_at),
        "url": url,
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


def may_see(ident: Identity, task: Task) -> bool:
    """The author, members of its review groups, and admins."""
    return ident.is_admin or task.user_id == ident.user_id or bool(ident.groups & set(task.review_groups))


LEVEL_MARK = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}


def risk_lines(task: Task) -> list[str]:
    """Risk, reasons and row estimate, as reviewers read them."""
    risk = task.risk or {}
    lines = []
    if risk.get("level"):
        reasons = "; ".join(risk.get("reasons", [])[:3])
        lines.append(f"risk {risk['level']}{': ' + reasons if reasons else ''}")
    if task.row_estimate is not None:
        lines.append(f"estimated rows affected: {task.row_estimate:,}")
    return lines


def status_display(task: Task, url: str, status: str | None = None) -> tuple[str, str]:
    """The text/plain and text/html of a held cell's status display (``status`` overrides the task's)."""
    groups = ", ".join(task.review_groups)
    status = status or task.status
    if status in ("succeeded", "failed", "killed", "lost") and task.decided_by:
        head = f"cellgate task #{task.id} approved by {task.decided_by}; {status}"
        details: list[str] = []
    elif status == "pending_review":
        approvals = [r.user.name for r in task.reviews if r.decision == "approve"]
        head = f"⏳ cellgate task #{task.id} on {task.target} awaits review by {groups}"
        if approvals:
            head += f" (approved so far by {', '.join(approvals)})"
        details = risk_lines(task)
        if task.missing_approvals:
            details.append("still needed: " + "; ".join(task.missing_approvals))
    elif status == "approved":
        head = f"✅ cellgate task #{task.id} approved by {task.decided_by}; running on {task.target}"
        details = []
    else:
        head = f"cellgate task #{task.id} is {status}"
        details = []
    text = "\n".join([head, *details, url])
    mark = LEVEL_MARK.get((task.risk or {}).get("level", ""), "")
    items = "".join(f"<li>{html.escape(d)}</li>" for d in details)
    link = f'<a href="{html.escape(url)}" target="_blank">task #{task.id}</a>'
    body = html.escape(head).replace(html.escape(f"task #{task.id}"), link, 1)
    return text, (f'<div class="cellgate-status" data-task="{task.id}" data-status="{status}">'
                  f"{mark} {body}{'<ul>' + items + '</ul>' if items else ''}</div>")
