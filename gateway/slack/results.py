"""A scheduled run's result, as posted to the schedule's Slack channel or its author."""

from __future__ import annotations

from ..models import Schedule, Task
from .messages import cut, esc

MARK = {"succeeded": "✅", "failed": "❌", "killed": "🛑", "lost": "⚠️", "denied": "⛔"}


def schedule_result_text(schedule: Schedule, task: Task, url: str, outputs: list[str]) -> str:
    """``✅ schedule daily-report: task #12 succeeded`` and the start of what it printed."""
    head = (f"{MARK.get(task.status, '•')} schedule *{esc(schedule.name)}* ({esc(schedule.template)} on "
            f"{esc(schedule.target)}): <{url}|task #{task.id}> {task.status.replace('_', ' ')}")
    if task.error_ename:
        head += f" — {esc(task.error_ename)}: {esc(cut(task.error_evalue or '', 300)[0])}"
    text, left = cut("".join(outputs), 1500)
    if text.strip():
        head += "\n```" + esc(text.replace("```", "`\u200b``")) + "```" + ("\n_…_" if left else "")
    if task.kind == "notebook":
        head += f"\nThe executed notebook: `cellgate task output {task.id} --ipynb -o run.ipynb`"
    return head
