"""What Slack shows: the review notice (Block Kit), its thread replies, the author's DMs, the reject modal.

Pure functions of a task (and a few facts read beside it); nothing here talks to Slack or the store.
The notice answers who, what, where, when and why, the risk with its reasons and the row estimate,
what approvals are missing, and, once decided, who decided and how the run went. The code is cut at
:data:`CODE_LIMIT` characters with a link to the whole task.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .. import tasks
from ..display import LEVEL_MARK, risk_lines
from ..models import Task
from ..views import shown_code
from ..templates.catalog import Template

#: characters of code (and of output) shown in Slack; the rest is behind the task's link
CODE_LIMIT = 1800
#: what an escaped code block may take of a section's 3,000 characters
ESCAPED_LIMIT = 2700
APPROVE = "cellgate_approve"
REJECT = "cellgate_reject"
REJECT_MODAL = "cellgate_reject"
REASON_BLOCK = "reason"
RAN = frozenset({tasks.APPROVED, tasks.DISPATCHED, tasks.RUNNING, tasks.SUCCEEDED, tasks.FAILED, tasks.KILLED, tasks.LOST})
FINISHED = frozenset({tasks.SUCCEEDED, tasks.FAILED, tasks.KILLED, tasks.LOST})
NOT_RUN = frozenset({tasks.REJECTED, tasks.CANCELLED, tasks.EXPIRED})


@dataclass
class Facts:
    """What the notice shows beyond the task row."""

    author_slack_id: str | None = None
    outputs: int = 0
    rows: int | None = None
    excerpt: str = ""


def esc(text: str) -> str:
    """Slack's mrkdwn escaping: only ``&``, ``<`` and ``>`` are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int = CODE_LIMIT) -> tuple[str, int]:
    """(the first ``limit`` characters, how many were left out)."""
    return (text, 0) if len(text) <= limit else (text[:limit], len(text) - limit)


def code_block(text: str, url: str, limit: int = CODE_LIMIT) -> str:
    """``text`` as a code block, cut at ``limit`` characters (and so that, escaped, it fits a
    3,000-character section), with a link to the whole task when cut."""
    shown, _ = cut(text, limit)
    body = esc(shown.replace("```", "`\u200b``"))
    while len(body) > ESCAPED_LIMIT:
        shown = shown[: len(shown) * ESCAPED_LIMIT // len(body)]
        body = esc(shown.replace("```", "`\u200b``"))
    block = "```" + body + "```"
    left = len(text) - len(shown)
    if left:
        block += f"\n_…cut: {left:,} more characters. <{url}|See the whole task.>_"
    return block


def when(value: dt.datetime | None) -> str:
    """A date Slack shows in each reader's time zone (with the UTC time as fallback)."""
    if value is None:
        return "?"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    fallback = value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(value.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def duration(task: Task) -> str | None:
    start = task.started_at or task.approved_at
    if start is None or task.finished_at is None:
        return None
    seconds = max((task.finished_at - start).total_seconds(), 0.0)
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def summarize(outputs: list[dict[str, Any]]) -> tuple[int | None, str]:
    """(rows returned, if any output said; the outputs as plain text)."""
    rows: int | None = None
    parts = []
    for out in outputs:
        kind = out.get("output_type")
        meta = (out.get("metadata") or {}).get("cellgate") or {}
        if isinstance(meta.get("rows"), int):
            rows = (rows or 0) + meta["rows"]
        if kind == "stream":
            parts.append(str(out.get("text", "")))
        elif kind in ("execute_result", "display_data"):
            text = (out.get("data") or {}).get("text/plain")
            if text:
                parts.append(str(text) + "\n")
        elif kind == "error":
            parts.append(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}\n")
    return rows, "".join(parts)


def _counts(task: Task, facts: Facts) -> str:
    bits = [b for b in (duration(task) and f"in {duration(task)}",
                        facts.rows is not None and f"{facts.rows:,} row{'s' if facts.rows != 1 else ''}",
                        f"{facts.outputs} output{'s' if facts.outputs != 1 else ''}") if b]
    return " · ".join(bits)


def decision_line(task: Task) -> str | None:
    """Who decided, once someone did."""
    comment = f": {esc(task.decision_comment)}" if task.decision_comment else ""
    if task.status in RAN:
        approvers = [r.user.name for r in task.reviews if r.decision == "approve"] or [task.decided_by or "?"]
        return f"✅ Approved by {esc(', '.join(approvers))}"
    if task.status == tasks.REJECTED:
        return f"🚫 Rejected by {esc(task.decided_by or '?')}{comment}"
    if task.status == tasks.CANCELLED:
        return f"↩️ Cancelled by {esc(task.decided_by or 'its author')}{comment}"
    if task.status == tasks.EXPIRED:
        return "⌛ Expired: " + esc(task.decision_comment or "the approval window passed before it started")
    return None


def state_line(task: Task, facts: Facts) -> str | None:
    """Where the run is."""
    error = f"{task.error_ename}: {task.error_evalue}" if task.error_ename else ""
    if task.status == tasks.PENDING_REVIEW:
        line = f"⏳ Awaiting review by {esc(', '.join(task.review_groups))}"
        approvals = [r.user.name for r in task.reviews if r.decision == "approve"]
        return line + (f" (approved so far by {esc(', '.join(approvals))})" if approvals else "")
    if task.status == tasks.APPROVED:
        return "Waiting to start" + (f" (the approval is valid until {when(task.expires_at)})" if task.expires_at else "")
    if task.status == tasks.DISPATCHED:
        return f"🚀 Starting on agent {esc(task.agent_id or '?')}"
    if task.status == tasks.RUNNING:
        return f"▶️ Running on agent {esc(task.agent_id or '?')} since {when(task.started_at)}"
    if task.status == tasks.SUCCEEDED:
        return f"✔️ Succeeded {_counts(task, facts)}"
    if task.status == tasks.FAILED:
        return f"❌ Failed {_counts(task, facts)}" + (f"\n`{esc(error[:300])}`" if error else "")
    if task.status == tasks.KILLED:
        return f"🛑 Killed {_counts(task, facts)}" + (f": {esc(task.error_evalue or '')}" if task.error_evalue else "")
    if task.status == tasks.LOST:
        return (f"⚠️ Lost: {esc(task.error_evalue or 'the agent went away')}. It is not re-run; its code may have run, "
                "so check the target before you submit it again.")
    return None


def mrkdwn(markdown: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": markdown}


def plain(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


#: templates listed by ``/cellgate templates`` (a message holds at most 50 blocks)
MAX_TEMPLATES = 30


def template_line(t: Template) -> str:
    """One template as ``/cellgate templates`` lists it: where it runs, what it does, its command line."""
    where = ", ".join([*t.targets, *(f"any {k} target" for k in t.target_kinds)]) or "nowhere"
    params = " ".join(f"-p {p}=…" for p in t.params)
    about = f" — {esc(cut(t.description, 120)[0])}" if t.description else ""
    run = f"cellgate templates run {esc(t.name)} -t TARGET {esc(params)}".rstrip()
    return f"*{esc(t.name)}* ({esc(t.kind)}, on {esc(where)}){about}\n    `{run}`"


def templates_text(templates: list[Template]) -> str:
    """``/cellgate templates`` as text (the blocks add a Run… button to each: ``template_form.listing``)."""
    lines = [f"• {template_line(t)}" for t in templates[:MAX_TEMPLATES]]
    return templates_heading(templates) + "\n" + ("\n".join(lines) if lines else "_none_") + templates_more(templates)


def templates_heading(templates: list[Template]) -> str:
    return f"*Templates you may run* ({len(templates)})"


def templates_more(templates: list[Template]) -> str:
    left = len(templates) - MAX_TEMPLATES
    return f"\n_and {left} more: `cellgate templates`_" if left > 0 else ""


def template_text(template: dict[str, Any]) -> str:
    """A templated task's name, commit and values: in SQL the code shows markers, the values are here."""
    if template.get("name"):
        lines = [f"*Template* {esc(str(template.get('name')))} at `{esc(str(template.get('commit'))[:12])}`"]
    else:  # a notebook of the author's own (cellgate run -f x.ipynb)
        lines = [f"*Notebook* `{esc(str(template.get('path')))}` (the author's own file)"]
    for p in template.get("parameters", [])[:20]:
        lines.append(f"• {esc(str(p.get('name')))} = {esc(cut(repr(p.get('value')), 200)[0])}")
    return "\n".join(lines)


def notice(task: Task, url: str, facts: Facts) -> tuple[str, list[dict[str, Any]]]:
    """The review notice as (fallback text, blocks); the buttons only while the task waits for review."""
    who = esc(task.user.name) + (f" (<@{facts.author_slack_id}>)" if facts.author_slack_id else "")
    why = esc(cut(task.why, 500)[0]) if task.why.strip() else "_no reason given_"
    where = esc(task.target) + (f"\n`{esc(task.notebook_path)}`" if task.notebook_path else "")
    risk = (task.risk or {}).get("level", "")
    status = [line for line in (decision_line(task), state_line(task, facts)) if line]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": mrkdwn(f"*<{url}|cellgate task #{task.id}>* on *{esc(task.target)}* "
                                          f"({esc(task.kind)}) — {task.status.replace('_', ' ')}")},
        {"type": "section", "fields": [mrkdwn(f"*Who*\n{who}"), mrkdwn(f"*Where*\n{where}"),
                                       mrkdwn(f"*When*\n{when(task.created_at)}"), mrkdwn(f"*Why*\n{why}")]},
        {"type": "section", "text": mrkdwn(code_block(shown_code(task), url))},
    ]
    if task.template:
        blocks.append({"type": "section", "text": mrkdwn(template_text(task.template))})
    risk_text = "\n".join(esc(line) for line in risk_lines(task))
    if risk_text:
        blocks.append({"type": "section", "text": mrkdwn(f"{LEVEL_MARK.get(risk, '')} *Risk*\n{risk_text}".strip())})
    if task.status == tasks.PENDING_REVIEW and task.missing_approvals:
        blocks.append({"type": "section", "text": mrkdwn("*Still needed:* " + esc("; ".join(task.missing_approvals)))})
    if status:
        blocks.append({"type": "section", "text": mrkdwn("\n".join(status))})
    if task.status == tasks.PENDING_REVIEW:
        blocks.append({"type": "actions", "block_id": f"cellgate_review_{task.id}", "elements": [
            {"type": "button", "action_id": APPROVE, "value": str(task.id), "style": "primary", "text": plain("Approve"),
             "confirm": {"title": plain(f"Approve task #{task.id}?"), "confirm": plain("Approve"), "deny": plain("Back"),
                         "text": mrkdwn(f"It will run on *{esc(task.target)}* as shown.")}},
            {"type": "button", "action_id": REJECT, "value": str(task.id), "style": "danger", "text": plain("Reject")},
        ]})
    fallback = f"cellgate task #{task.id} on {task.target} by {task.user.name}: {task.status.replace('_', ' ')}"
    return fallback, blocks


def approvals_post(task: Task) -> str:
    """Thread reply for an approval that does not yet approve the task."""
    names = [r.user.name for r in task.reviews if r.decision == "approve"]
    missing = "; ".join(task.missing_approvals)
    return f"👍 Approved by {esc(', '.join(names))}" + (f"; still needed: {esc(missing)}" if missing else "")


def decision_post(task: Task) -> str | None:
    line = decision_line(task)
    if line and task.status in RAN and task.decision_comment:
        line += f": {esc(task.decision_comment)}"
    return line


def result_post(task: Task, url: str, facts: Facts, with_output: bool) -> str:
    text = state_line(task, facts) or task.status
    if with_output and facts.excerpt.strip():
        text += "\n" + code_block(facts.excerpt, url)
    return text


def author_dm(task: Task, url: str, facts: Facts, *, finished: bool) -> str:
    """The author's direct message: how the task finished, or how it was decided."""
    head = f"Your <{url}|cellgate task #{task.id}> on *{esc(task.target)}*"
    if finished:
        return f"{head}: {state_line(task, facts)}"
    if task.status in RAN:
        approvers = [r.user.name for r in task.reviews if r.decision == "approve"] or [task.decided_by or "?"]
        return f"{head} was approved by {esc(', '.join(approvers))}" + (
            "; it runs now." if task.status not in FINISHED else ".")
    return f"{head}: {decision_line(task) or task.status}"


def reject_modal(task: Task) -> dict[str, Any]:
    """The modal a Reject click opens; its submission carries the task id in ``private_metadata``."""
    shown, left = cut(shown_code(task), 300)
    preview = "```" + esc(shown.replace("```", "`\u200b``")) + "```" + ("\n_…_" if left else "")
    return {
        "type": "modal",
        "callback_id": REJECT_MODAL,
        "private_metadata": str(task.id),
        "title": plain(f"Reject task #{task.id}"[:24]),
        "submit": plain("Reject"),
        "close": plain("Cancel"),
        "blocks": [
            {"type": "section", "text": mrkdwn(f"*{esc(task.user.name)}* on *{esc(task.target)}*\n{preview}")},
            {"type": "input", "block_id": REASON_BLOCK, "label": plain("Why? The author sees this."),
             "element": {"type": "plain_text_input", "action_id": REASON_BLOCK, "multiline": True, "max_length": 2000}},
        ],
    }


def decided(status: str) -> bool:
    """Someone (or policy, after review was asked) has decided: it ran or will run, or it will not."""
    return status in RAN or status in NOT_RUN


def run_announced(task: Task, url: str) -> str:
    """The direct message a template run started from Slack is announced in; its thread gets the rest."""
    name = str((task.template or {}).get("name") or "?")
    status = task.status.replace("_", " ")
    state = state_line(task, Facts()) or status
    return (f"Your <{url}|cellgate task #{task.id}> (template *{esc(name)}* on *{esc(task.target)}*) was submitted "
            f"(status {status}).\n{state}\n_Its result will be posted in this thread._")


def run_posts(task: Task, before: str, url: str, facts: Facts, with_output: bool) -> list[str]:
    """What the thread of a run's announcement gets when its task moved on from ``before``: the
    decision, once someone decided, and the result with an excerpt of the outputs, once it ended."""
    posts = []
    if decided(task.status) and not decided(before):
        line = decision_post(task)
        if line:
            posts.append(line)
    if task.status in FINISHED and before not in FINISHED:
        text = result_post(task, url, facts, with_output)
        if task.kind == "notebook":
            text += f"\n_`cellgate task output {task.id} --ipynb` downloads the executed notebook._"
        posts.append(text)
    return posts


def dm_submitted(task: Task, url: str) -> str:
    """The first reply in the thread of a direct message whose code became ``task``: where it stands
    as submitted (waiting for review by whom, or approved by policy); the thread gets the rest."""
    lines = [f"<{url}|cellgate task #{task.id}> on *{esc(task.target)}*: {task.status.replace('_', ' ')}"]
    decision = decision_post(task) if decided(task.status) else None
    lines += [line for line in (decision, state_line(task, Facts())) if line]
    if task.status == tasks.PENDING_REVIEW and task.missing_approvals:
        lines.append("Still needed: " + esc("; ".join(task.missing_approvals)))
    lines.append("_Its result will be posted in this thread._")
    return "\n".join(lines)
