"""The held cell's status display: what a cell waiting for (or past) review shows in the notebook.

``status_display`` gives the text/plain and text/html of the display the gate sends with a
``transient.display_id`` and updates in place (``gateway/gate.py``); ``risk_lines`` and
``LEVEL_MARK`` are shared with the Slack review notice (``slack/messages.py``).
"""

from __future__ import annotations

import html

from .models import Task


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
