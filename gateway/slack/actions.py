"""What a verified Slack request does: Approve and Reject clicks, the reject modal, ``/cellgate``
(a template's Run… button and its form: ``template_runs``).

Every decision goes through ``TaskFlow.review`` with the identity of the cellgate user the Slack
user is linked to (:func:`links.resolve`, groups read now): the same state machine and the same
checks as the CLI and the API (``access.py``), so only a current member of a review group of the
task decides, never its author. A refusal (403, 409…) is shown to the clicking user in Slack — as an ephemeral
message for buttons, as a field error for the modal — and changes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import reviews, tasks
from ..access import may_see_task, may_submit
from ..auth import Identity
from ..errors import CellgateError, Conflict, NotFound
from ..models import Target, Task, User
from ..templates.library import NOT_CONFIGURED
from . import messages, template_form, template_runs
from .callers import channel_of, identify, refusal, who
from .client import SlackCallFailed
from .integration import SlackIntegration

log = logging.getLogger("cellgate.gateway.slack")

HELP = """*/cellgate* — cellgate from Slack
• `/cellgate targets` — the targets you may run code on
• `/cellgate tasks` — your latest tasks
• `/cellgate task N` — one task you may see
• `/cellgate templates` — templates you may run (each with a Run… button)
Reviews: use the Approve and Reject buttons of a review notice.
Code: send it in a direct message to the app (`help` there says how)."""
MAX_TASKS = 10


# ---------------------------------------------------------------------------- interactions
async def interaction(slack: SlackIntegration, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Handle one interaction payload; the JSON body to answer with (None: an empty 200)."""
    kind = payload.get("type")
    if kind == "block_actions":  # answered at once (Slack waits 3 s at most); refusals come as ephemeral messages
        slack.background.spawn(_logged(block_action(slack, payload)))
        return None
    callback = (payload.get("view") or {}).get("callback_id")
    if kind == "view_submission" and callback == messages.REJECT_MODAL:
        return await reject_submission(slack, payload)
    if kind == "view_submission" and callback == template_form.MODAL:
        return await template_runs.submit(slack, payload)
    return None


async def _logged(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception:
        log.exception("a Slack button click failed")


async def block_action(slack: SlackIntegration, payload: dict[str, Any]) -> None:
    action = (payload.get("actions") or [{}])[0]
    action_id = action.get("action_id")
    if action_id == template_form.RUN:
        await template_runs.open_form(slack, payload, action)
        return
    if action_id not in (messages.APPROVE, messages.REJECT):
        return
    slack_user_id, team_id = who(payload)
    tell = functools.partial(slack.tell, channel_of(payload), slack_user_id)

    try:
        task_id = int(str(action.get("value")))
    except ValueError:
        await tell("this button does not name a cellgate task")
        return
    try:
        ident = await identify(slack, slack_user_id, team_id)
        if action_id == messages.APPROVE:
            task = await slack.flow.review(ident, task_id, "approve", "approved in Slack", None)
            log.info("task %s approved from Slack by %s (Slack user %s)", task_id, ident.name, slack_user_id)
            if task.status == tasks.PENDING_REVIEW:
                await tell(f"Your approval of task #{task_id} is recorded; still needed: {'; '.join(task.missing_approvals)}")
            return
        task = await slack.store.run(_reviewable, task_id, ident)
    except (CellgateError, tasks.TransitionError) as exc:
        log.info("Slack user %s on task %s: %s", slack_user_id, task_id, exc)
        await tell(refusal(exc))
        return
    try:
        await slack.client.call("views.open", attempts=1, trigger_id=str(payload.get("trigger_id") or ""),
                                view=messages.reject_modal(task))
    except SlackCallFailed as exc:
        log.warning("could not open the reject form for task %s: %s", task_id, exc)
        await tell(f"Slack could not open the reject form ({exc.error}); reject from a terminal: "
                   f"`cellgate review reject {task_id} --comment \"why\"`")


def _reviewable(session: Session, task_id: int, ident: Identity) -> Task:
    """The task, if ``ident`` may decide on it now (the same checks as ``reviews.decide``: ``access.review_refusal``); else raise."""
    task = session.get(Task, task_id)
    reviewer = session.get(User, ident.user_id)
    if task is None or reviewer is None:
        raise NotFound(f"task {task_id} not found")
    reviews.check_reviewer(session, task, reviewer)
    if task.status != tasks.PENDING_REVIEW:
        raise Conflict(f"task {task_id} is {task.status}, not pending_review: it cannot be rejected")
    _ = task.user
    return task


async def reject_submission(slack: SlackIntegration, payload: dict[str, Any]) -> dict[str, Any] | None:
    view = payload.get("view") or {}
    slack_user_id, team_id = who(payload)
    state = ((view.get("state") or {}).get("values") or {}).get(messages.REASON_BLOCK) or {}
    reason = str((state.get(messages.REASON_BLOCK) or {}).get("value") or "").strip()

    def error(text: str) -> dict[str, Any]:
        return {"response_action": "errors", "errors": {messages.REASON_BLOCK: text[:1900]}}

    try:
        task_id = int(str(view.get("private_metadata")))
    except ValueError:
        return error("this form does not name a cellgate task")
    if not reason:
        return error("a rejection needs a reason: the author sees it")
    try:
        ident = await identify(slack, slack_user_id, team_id)
        await slack.flow.review(ident, task_id, "reject", reason, None)
    except (CellgateError, tasks.TransitionError) as exc:
        log.info("Slack user %s rejecting task %s: %s", slack_user_id, task_id, exc)
        return error(refusal(exc))
    log.info("task %s rejected from Slack by %s (Slack user %s)", task_id, ident.name, slack_user_id)
    return None


# ------------------------------------------------------------------------- /cellgate
def reply(text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"response_type": "ephemeral", "text": text}
    if blocks:
        body["blocks"] = blocks
    return body


async def command(slack: SlackIntegration, form: dict[str, str]) -> dict[str, Any]:
    """``/cellgate …``: an ephemeral answer holding only what this user may see."""
    words = form.get("text", "").split()
    verb = words[0].lower() if words else "help"
    if verb == "help":
        return reply(HELP)
    try:
        ident = await identify(slack, form.get("user_id", ""), form.get("team_id", ""))
    except CellgateError as exc:
        return reply(exc.message)
    if verb == "targets":
        return reply(await slack.store.run(targets_text, ident, slack))
    if verb == "tasks":
        return reply(await slack.store.run(_tasks, ident))
    if verb == "task" and len(words) == 2 and words[1].lstrip("#").isdigit():
        return await _task(slack, ident, int(words[1].lstrip("#")))
    if verb == "templates":
        library = slack.templates
        if library is None or not library.configured:
            return reply(NOT_CONFIGURED)
        return reply(*template_form.listing(library.visible(ident)))
    return reply(f"unknown command `{messages.esc(' '.join(words))}`\n{HELP}")


def targets_text(session: Session, ident: Identity, slack: SlackIntegration) -> str:
    """The targets ``ident`` may submit to, online or not, who reviews (``/cellgate targets``, ``targets`` in a DM)."""
    lines = []
    for target in session.execute(select(Target).order_by(Target.name)).scalars():
        if not may_submit(ident, target):
            continue
        online = "online" if slack.agents.serving(target.name) else "offline"
        review = f"reviewed by {', '.join(target.review_groups)}" if target.review_groups else "no review"
        desc = f" — {messages.esc(target.description)}" if target.description else ""
        lines.append(f"• *{messages.esc(target.name)}*{desc} ({online}; {review})")
    return "*Targets you may use*\n" + ("\n".join(lines) if lines else "_none_")


def _tasks(session: Session, ident: Identity) -> str:
    found = session.execute(select(Task).where(Task.user_id == ident.user_id).order_by(Task.id.desc())
                            .limit(MAX_TASKS)).unique().scalars().all()
    lines = [f"• #{t.id} *{messages.esc(t.target)}* {t.status.replace('_', ' ')} — {messages.when(t.created_at)}"
             + (f" — {messages.esc(messages.cut(t.why, 80)[0])}" if t.why else "") for t in found]
    return "*Your latest tasks*\n" + ("\n".join(lines) if lines else "_none_")


async def _task(slack: SlackIntegration, ident: Identity, task_id: int) -> dict[str, Any]:
    try:
        task = await slack.flow.get_task(task_id)
    except NotFound:
        task = None
    if task is None or not may_see_task(ident, task):  # "absent" and "not yours" answer alike
        return reply(f"task {task_id} not found")
    text, blocks = messages.notice(task, slack.flow.task_url(task.id), messages.Facts())
    return reply(text, [b for b in blocks if b.get("type") != "actions"])
