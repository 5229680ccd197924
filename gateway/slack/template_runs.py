"""Running a template from Slack: a Run… click opens the template's form, the form's submission runs it.

Nothing Slack sends is trusted to authorize anything: the button's value and the modal's
``private_metadata`` only name the template (and the commit the form was built from). On submission
the Slack user is identified again (groups read now); the library must still be at the form's
commit (else the user is asked to open the form again, since what they filled in may no longer be
what runs); and the run goes through :func:`~cellgate.gateway.templates.runs.run_template`, the
function ``POST /api/v1/template-runs`` calls, which checks that the user may run the template,
that it runs on the target, that they may submit there, and every value, before a task exists.

A refusal is a field error in the modal: under the parameter whose value was refused, else under
the target. On success the modal closes and the notifier announces the task in a direct message
to the user; its thread gets the decision and the result (:meth:`Notifier.announce_run`). Slack
waits 3 s for the answer: a run that takes longer (e.g. a slow EXPLAIN estimate) goes on, the form
closes, and its outcome, a task or a refusal, comes in the direct message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import tasks
from ..access import may_submit, template_allows_target
from ..auth import Identity
from ..errors import CellgateError, Conflict, Forbidden, Unavailable
from ..models import Target, Task
from ..scripts import Scripts
from ..templates.catalog import Template
from ..templates.library import NOT_CONFIGURED, TemplateLibrary
from ..templates.runs import TemplateValueRefused, run_template, target_kind
from . import template_form
from .callers import channel_of, identify, refusal, who
from .client import SlackCallFailed
from .integration import SlackIntegration
from .messages import esc
from .template_form import Submission

log = logging.getLogger("cellgate.gateway.slack")

#: the longest field error shown in a modal
MAX_ERROR = 1900
#: seconds a submission waits for its run before the form closes and the outcome follows in a
#: direct message (Slack waits 3 s for the answer, then shows the user an error)
ANSWER_WITHIN = 2.5


def _library(slack: SlackIntegration) -> TemplateLibrary:
    library = slack.templates
    if library is None or not library.configured:
        raise Conflict(NOT_CONFIGURED)
    return library


def _scripts(slack: SlackIntegration) -> Scripts:
    if slack.scripts is None:
        raise Unavailable("this gateway does not run templates from Slack: run it with `cellgate templates run`")
    return slack.scripts


def _targets(session: Session, ident: Identity, template: Template, kind: str) -> list[str]:
    """The targets the form offers: those the template runs on, of the kind it needs, that ``ident`` may submit to."""
    return [t.name for t in session.execute(select(Target).order_by(Target.name)).scalars()
            if template_allows_target(template.targets, template.target_kinds, t) and (t.kind or "") == kind
            and may_submit(ident, t)]


# ------------------------------------------------------------------ the Run… button
async def open_form(slack: SlackIntegration, payload: dict[str, Any], action: dict[str, Any]) -> None:
    """Open the form of the template the clicked button names (errors: an ephemeral message)."""
    slack_user_id, team_id = who(payload)
    tell = functools.partial(slack.tell, channel_of(payload), slack_user_id)
    name = str(action.get("value") or "")
    try:
        ident = await identify(slack, slack_user_id, team_id)
        library = _library(slack)
        template = library.get(ident, name)
        commit = library.catalog.commit if library.catalog else ""
        choices = await slack.store.run(_targets, ident, template, target_kind(template))
        if not choices:
            raise Forbidden(f"template {name} runs on no target you may submit to")
        view = template_form.modal(template, commit, choices)
    except CellgateError as exc:
        log.info("Slack user %s opening template %r: %s", slack_user_id, name[:200], exc.message)
        await tell(refusal(exc))
        return
    try:
        await slack.client.call("views.open", attempts=1, trigger_id=str(payload.get("trigger_id") or ""), view=view)
    except SlackCallFailed as exc:
        log.warning("could not open the form of template %s: %s", name, exc)
        await tell(f"Slack could not open the form ({exc.error}); run it from a terminal: "
                   f"`{template_form.CLI} {name} -t TARGET -p NAME=VALUE`")


# ------------------------------------------------------------------ the form's submission
def _error(block: str, text: str) -> dict[str, Any]:
    return {"response_action": "errors", "errors": {block: text[:MAX_ERROR]}}


def _refused(form: Submission, exc: BaseException) -> tuple[str, str]:
    """(the block to show it under, the text) of a run that raised ``exc``: never a traceback."""
    if isinstance(exc, TemplateValueRefused):
        return form.block_of(exc.field), exc.message
    if isinstance(exc, CellgateError):
        return template_form.TARGET_BLOCK, refusal(exc)
    log.error("a template run from Slack failed (template %r)", form.template[:200], exc_info=exc)
    return template_form.TARGET_BLOCK, ("cellgate could not run this template (an unexpected error, logged by the "
                                        f"gateway). Try again, or run it with `{template_form.CLI}`")


def _denied(task: Task) -> str | None:
    if task.status != tasks.DENIED:
        return None
    return f"cellgate refused (403): task #{task.id} was denied by policy: {task.decision_comment}"


async def submit(slack: SlackIntegration, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Run the template a submitted form names, as the submitting Slack user's cellgate identity;
    the answer that shows a refusal in the form, or None (the form closes)."""
    slack_user_id, team_id = who(payload)
    try:
        form = template_form.read(payload.get("view") or {})
    except CellgateError as exc:
        return _error(template_form.TARGET_BLOCK, exc.message)
    try:
        ident = await identify(slack, slack_user_id, team_id)
        library, scripts = _library(slack), _scripts(slack)
        current = library.catalog.commit if library.catalog else ""
        if form.commit != current:
            return _error(template_form.TARGET_BLOCK, "the template changed since this form was opened: close it and open "
                          "it again from `/cellgate templates` (nothing was run)")
        if not form.target:
            return _error(template_form.TARGET_BLOCK, "choose a target")
    except CellgateError as exc:
        log.info("Slack user %s running template %r: %s", slack_user_id, form.template[:200], exc.message)
        return _error(template_form.TARGET_BLOCK, refusal(exc))
    run = slack.background.spawn(run_template(library, scripts, slack.store, ident, form.template, form.target,
                                              form.values, form.why))
    try:
        task: Task = await asyncio.wait_for(asyncio.shield(run), ANSWER_WITHIN)
    except TimeoutError:  # Slack stops waiting at 3 s: close the form, tell the outcome in a direct message
        log.info("template %r run from Slack by %s takes long; its outcome follows in a direct message",
                 form.template[:200], ident.name)
        slack.background.spawn(_outcome_later(slack, run, form, slack_user_id))
        return None
    except Exception as exc:  # noqa: BLE001 - a refusal (or the unexpected, logged) shown in the form
        log.info("Slack user %s running template %r: %s", slack_user_id, form.template[:200], exc)
        return _error(*_refused(form, exc))
    denied = _denied(task)
    if denied:
        log.info("task %s: template %s run from Slack by %s was denied", task.id, form.template, ident.name)
        return _error(template_form.TARGET_BLOCK, denied)
    log.info("task %s: template %s run from Slack by %s (Slack user %s)", task.id, form.template, ident.name, slack_user_id)
    slack.background.spawn(slack.notifier.announce_run(task.id, slack_user_id))
    return None


async def _outcome_later(slack: SlackIntegration, run: asyncio.Task[Task], form: Submission, slack_user_id: str) -> None:
    """A run that outlived Slack's wait: announce its task, or say in a direct message why there is none."""
    about = f"template {form.template[:200]!r} run from Slack"
    try:
        task = await run
    except Exception as exc:  # noqa: BLE001 - said to the user, logged
        text = _refused(form, exc)[1]
    else:
        denied = _denied(task)
        if not denied:
            await slack.notifier.announce_run(task.id, slack_user_id)
            return
        text = denied
    await slack.notifier.direct_message(slack_user_id, f"Your run of template *{esc(form.template)}* on "
                                        f"*{esc(form.target)}* was refused: {esc(text)}", about)
