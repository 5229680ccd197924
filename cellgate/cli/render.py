"""Turning gateway JSON into text for a terminal: tables, times, task outputs, status lines."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, UTC
from typing import Any

# CSI sequences (colours, cursor moves) and OSC sequences (titles, hyperlinks).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def format_time(value: str | None) -> str:
    """An ISO 8601 time from the gateway as local time, ``YYYY-MM-DD HH:MM:SS``."""
    if not value:
        return ""
    try:
        dt = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return str(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the API's times are UTC
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def first_line(text: str | None, width: int = 50) -> str:
    """The first non-blank line of ``text``, cut to ``width`` characters (with an ellipsis)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    line = lines[0] if lines else ""
    if len(line) > width:
        return line[: width - 1] + "…"
    return line


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    cells = [[str(h).upper() for h in headers]]
    cells += [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for r in cells:
        padded = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1])] + [r[-1]]
        out.append("  ".join(padded).rstrip())
    return "\n".join(out)


def yes_no(value: Any) -> str:
    return "yes" if value else "no"


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def _text(value: Any) -> str:
    """nbformat multiline strings may be a list of lines."""
    if isinstance(value, list):
        return "".join(str(v) for v in value)
    return "" if value is None else str(value)


def _with_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def render_output(output: dict[str, Any]) -> list[tuple[str, str]]:
    """An nbformat v4 output as ``[(stream, text)]`` with stream ``"stdout"`` or ``"stderr"``.

    stream → its text on its own stream; execute_result / display_data → ``text/plain`` on
    stdout (a note on stderr when there is none); error → the traceback without colours and
    ``ename: evalue`` on stderr.
    """
    kind = output.get("output_type")
    if kind == "stream":
        name = "stderr" if output.get("name") == "stderr" else "stdout"
        return [(name, _text(output.get("text")))]
    if kind in ("execute_result", "display_data", "update_display_data"):
        data = output.get("data") or {}
        if "text/plain" in data:
            return [("stdout", _with_newline(_text(data["text/plain"])))]
        if data:
            return [("stderr", f"[{', '.join(sorted(data))} output not shown]\n")]
        return []
    if kind == "error":
        ename, evalue = output.get("ename", "Error"), output.get("evalue", "")
        summary = f"{ename}: {evalue}" if evalue else str(ename)
        lines = [strip_ansi(_text(line)).rstrip("\n") for line in output.get("traceback") or []]
        lines = [ln for ln in "\n".join(lines).splitlines()]
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines or lines[-1].strip() != summary:
            lines.append(summary)
        return [("stderr", "\n".join(lines) + "\n")]
    return []


def summarize_outputs(outputs: Iterable[dict[str, Any]]) -> str:
    """``"3 outputs: 2 stream, 1 execute_result"``."""
    kinds = Counter((o.get("output") or o).get("output_type", "?") for o in outputs)
    total = sum(kinds.values())
    if not total:
        return "no outputs"
    parts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return f"{total} output{'s' if total != 1 else ''}: {parts}"


def task_reason(task: dict[str, Any]) -> str:
    """Why a task ended where it did: its error once it ran (or was lost), else the decision comment."""
    err = task.get("error") or {}
    ran = task.get("status") in ("failed", "killed", "lost")
    if ran and (err.get("ename") or err.get("evalue")):
        return f"{err.get('ename', 'Error')}: {err.get('evalue', '')}".rstrip(": ")
    if task.get("decision_comment"):
        return str(task["decision_comment"])
    if err.get("ename") or err.get("evalue"):
        return f"{err.get('ename', 'Error')}: {err.get('evalue', '')}".rstrip(": ")
    return ""


def status_line(task: dict[str, Any]) -> str:
    """One line saying where the task is and, when waiting for people, what they can do."""
    tid, status = task.get("id"), task.get("status")
    reason = task_reason(task)
    by = task.get("decided_by")
    if status == "submitted":
        return f"task {tid} submitted to {task.get('target')}"
    if status == "pending_review":
        groups = ", ".join(task.get("review_groups") or []) or "a reviewer"
        return f"task {tid} awaiting review by {groups} — approve with: cellgate review approve {tid}"
    if status == "approved":
        return f"task {tid} approved" + (f" by {by}" if by else "")
    if status == "dispatched":
        return f"task {tid} dispatched to an agent"
    if status == "running":
        return f"task {tid} running on {task.get('target')}"
    if status == "rejected":
        line = f"task {tid} rejected" + (f" by {by}" if by else "")
        return line + (f": {task.get('decision_comment')}" if task.get("decision_comment") else "")
    if status in ("denied", "failed", "cancelled", "expired", "killed", "lost"):
        return f"task {tid} {status}" + (f": {reason}" if reason else "")
    return f"task {tid} {status}"


def risk_summary(task: dict[str, Any]) -> str | None:
    """``high: UPDATE on accounts has no WHERE clause; …`` for a task's risk, or None."""
    risk = task.get("risk") or {}
    if not risk.get("level"):
        return None
    reasons = "; ".join(risk.get("reasons") or [])
    return f"{risk['level']}{': ' + reasons if reasons else ''}"
