"""`cellgate run`, `tasks`, `task show|output|cancel`, `reviews`, `review approve|reject`, `targets`."""

from __future__ import annotations

import argparse
import functools
import io
import os
import sys
import uuid
from typing import Any

from cellgate.cli import exitcodes, render, retry
from cellgate.cli.client import (GatewayClient, GatewayError, GatewayUnreachable, command, connect, connection_options, error,
                                 json_option)

#: The exit code of `cellgate run` for each final task status.
STATUS_EXIT = {
    "succeeded": exitcodes.OK,
    "failed": exitcodes.FAILED,
    "rejected": exitcodes.REJECTED,
    "denied": exitcodes.DENIED,
    "cancelled": exitcodes.CANCELLED,
    "expired": exitcodes.CANCELLED,
    "killed": exitcodes.KILLED,
    "lost": exitcodes.KILLED,
}
FINAL = frozenset(STATUS_EXIT)
#: Seconds each output poll asks the gateway to hold the request (the API caps it at 30).
POLL_WAIT = 20


def exit_code_for_status(status: str) -> int:
    """The exit code for a final status; ERROR for anything else (the task did not end)."""
    return STATUS_EXIT.get(status, exitcodes.ERROR)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# -- run ------------------------------------------------------------------------------------


def parameter_values(items: list[str]) -> dict[str, str] | None:
    """``-p NAME=VALUE`` options as a mapping; None (after saying why) when one is malformed."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            error(f"-p {item!r}: give a parameter as NAME=VALUE, e.g. -p refund_id=42")
            return None
        if name.strip() in values:
            error(f"-p {name.strip()} is given twice")
            return None
        values[name.strip()] = value
    return values


def _read_code(args: argparse.Namespace) -> str | None:
    if args.code is not None:
        return args.code
    if args.file == "-":
        return sys.stdin.read()
    try:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        error(f"cannot read {args.file}: {exc.strerror}")
        return None


def _emit(output: dict[str, Any]) -> None:
    for stream, text in render.render_output(output):
        out = sys.stderr if stream == "stderr" else sys.stdout
        out.write(text)
        out.flush()


def follow(gw: GatewayClient, task: dict[str, Any], *, stream: bool = True,
           patience: retry.Patience | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Poll the task's outputs until it is done, announcing each new status on stderr.

    With ``stream``, outputs are written as they arrive; returns the final task and all outputs.
    A poll that fails while the gateway restarts (or answers 5xx) is retried with ``patience``,
    from the last output seen: none is shown twice, none is missed. Raises :class:`retry.GaveUp`.
    """
    patience = patience or retry.Patience()
    tid = task["id"]
    seen_status = task.get("status")
    after: int | None = None
    outputs: list[dict[str, Any]] = []
    while True:
        page = patience.call(functools.partial(gw.output, tid, after=after, wait=POLL_WAIT), f"following task {tid}")
        task = page.get("task") or task
        status = task.get("status")
        new = page.get("outputs") or []
        announce = status != seen_status
        if announce and status not in FINAL:
            _say(render.status_line(task))
        for item in new:
            seq = int(item.get("seq", 0))
            after = seq if after is None else max(after, seq)
            outputs.append(item.get("output") or {})
            if stream:
                _emit(item.get("output") or {})
        if announce and status in FINAL:
            _say(render.status_line(task))
        seen_status = status
        # `done` is the contract; a final status with nothing new also ends the loop, so a
        # gateway that never says done cannot keep the command polling forever.
        if page.get("done") or (status in FINAL and not new):
            return task, outputs


@command
def cmd_run(args: argparse.Namespace) -> int:
    notebook = bool(args.file and args.file.endswith(".ipynb"))
    if args.parameter and not notebook:
        error("-p gives a notebook's parameters: use it with -f NOTEBOOK.ipynb (a template's: cellgate templates run)")
        return exitcodes.USAGE
    values = parameter_values(args.parameter)
    code = _read_code(args)
    if code is None or values is None:
        return exitcodes.USAGE
    if not code.strip():
        error("the code to run is empty")
        return exitcodes.USAGE
    body: dict[str, Any] = {"target": args.target, "code": code, "why": args.why or ""}
    if notebook:  # one task: the notebook with its parameters injected, run cell by cell once approved
        body = {"target": args.target, "notebook": code, "parameters": values, "name": os.path.basename(args.file),
                "why": args.why or ""}
    with connect(args) as gw:
        return follow_submitted(gw, submit(gw, body, retry.from_args(args)), args)


def submit(gw: GatewayClient, body: dict[str, Any], patience: retry.Patience, path: str = "/api/v1/tasks") -> dict[str, Any]:
    """POST the task (to ``path``: a script or notebook, or a template run) with a key of its own,
    retried with the same key while the gateway restarts: one task however many attempts it takes.
    Raises :class:`GatewayUnreachable` after ``patience``."""
    key = str(uuid.uuid4())
    try:
        return patience.call(lambda: gw.submit(body, key, path), "submitting")
    except retry.GaveUp as exc:
        raise GatewayUnreachable(f"{exc.message}. No task was confirmed: if the gateway got the request, "
                                 "the task is listed by `cellgate tasks --limit 5` (check before running the "
                                 "command again)") from None


def follow_submitted(gw: GatewayClient, task: dict[str, Any], args: argparse.Namespace) -> int:
    """After a submit (``cellgate run``, ``cellgate templates run``): say so, follow the task to its
    end, and return the exit code of its final status (130 on Ctrl-C, which never cancels it)."""
    tid = task["id"]
    _say(f"task {tid} submitted to {task.get('target', args.target)}"
         + (f" ({task['url']})" if task.get("url") else ""))
    if task.get("status") != "submitted":
        _say(render.status_line(task))
    try:
        task, outputs = follow(gw, task, stream=not args.json, patience=retry.from_args(args))
    except KeyboardInterrupt:
        _say(f"\ninterrupted: task {tid} was not cancelled. Follow it with: cellgate task show {tid}"
             f" (cancel it while it waits for review with: cellgate task cancel {tid})")
        return 130
    except GatewayError as exc:
        # The task exists and goes on without us: say how to find it again.
        error(f"{exc.message}\ntask {tid} was submitted; follow it with: cellgate task show {tid}")
        return exc.exit_code
    if args.json:
        render.print_json({**task, "outputs": outputs})
    return exit_code_for_status(task.get("status", ""))


# -- listing and showing --------------------------------------------------------------------


def _task_rows(tasks: list[dict[str, Any]]) -> list[list[Any]]:
    return [[t.get("id"), t.get("status"), t.get("target"), t.get("user"),
             render.format_time(t.get("created_at")), render.first_line(t.get("review_text") or t.get("code"))]
            for t in tasks]


@command
def cmd_tasks(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.tasks(status=args.status, target=args.target, user=args.user, limit=args.limit)
    if args.json:
        render.print_json(body)
    elif body.get("tasks"):
        print(render.table(["id", "status", "target", "user", "created", "code"], _task_rows(body["tasks"])))
    else:
        _say("no tasks")
    return exitcodes.OK


def _template_line(template: dict[str, Any] | None) -> str | None:
    """``fixes/refund at 1a2b3c4d5e6f: refund_id=42, reason='fraud'`` for a task run from a template."""
    if not template:
        return None
    values = ", ".join(f"{p['name']}={p['value']!r}" for p in template.get("parameters", []))
    where = (f"{template.get('name')} at {str(template.get('commit'))[:12]}" if template.get("name")
             else f"{template.get('path')} (a notebook of the author's own)")
    return where + (f": {values}" if values else "")


def _show_task(task: dict[str, Any], outputs: list[dict[str, Any]]) -> str:
    fields: list[tuple[str, Any]] = [
        ("task", f"{task.get('id')} ({task.get('kind')})"),
        ("status", task.get("status")),
        ("target", task.get("target")),
        ("user", task.get("user")),
        ("why", task.get("why")),
        ("template", _template_line(task.get("template"))),
        ("created", render.format_time(task.get("created_at"))),
        ("updated", render.format_time(task.get("updated_at"))),
        ("review groups", ", ".join(task.get("review_groups") or []) or "none"),
        ("risk", render.risk_summary(task)),
        ("rows (est.)", task.get("row_estimate")),
        ("still needed", "; ".join(task.get("missing_approvals") or [])),
        ("expires", render.format_time(task.get("expires_at")) if task.get("status") == "approved" else None),
        ("decided by", task.get("decided_by")),
        ("comment", task.get("decision_comment")),
        ("error", render.task_reason({"error": task.get("error")})),
        ("kernel", task.get("kernel_id")),
        ("notebook", task.get("notebook_path")),
        ("cell", task.get("cell_id")),
        ("sha256", task.get("code_sha256")),
        ("url", task.get("url")),
        ("outputs", render.summarize_outputs(outputs)),
    ]
    lines = [f"{k + ':':<15}{v}" for k, v in fields if v not in (None, "")]
    reviews = task.get("reviews") or []
    if reviews:
        lines.append("reviews:")
        for r in reviews:
            comment = f" — {r['comment']}" if r.get("comment") else ""
            lines.append(f"  {render.format_time(r.get('created_at'))}  {r.get('user')} "
                         f"{r.get('decision')}{comment}")
    lines.append("code:")
    lines += ["    " + ln for ln in (task.get("review_text") or task.get("code") or "").splitlines()]
    return "\n".join(lines)


@command
def cmd_task_show(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        task, outputs = gw.all_outputs(args.id)
    if args.json:
        render.print_json({**task, "outputs": outputs})
    else:
        print(_show_task(task, outputs))
    return exitcodes.OK


@command
def cmd_task_output(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        if args.ipynb:
            body = io.BytesIO()  # (a refusal leaves no half-written file)
            gw.stream_to(f"/api/v1/tasks/{args.id}/notebook", body)
            if args.output:
                with open(args.output, "wb") as out:
                    out.write(body.getvalue())
                _say(f"task {args.id}'s executed notebook written to {args.output}")
            else:
                sys.stdout.buffer.write(body.getvalue())
                sys.stdout.flush()
            return exitcodes.OK
        task, pages = gw.all_outputs(args.id)
    outputs = [item.get("output") or {} for item in pages]
    if args.json:
        render.print_json({**task, "outputs": outputs})
        return exitcodes.OK
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for output in outputs:
                f.writelines(text for _, text in render.render_output(output))
    else:
        for output in outputs:
            _emit(output)
    return exitcodes.OK


@command
def cmd_task_cancel(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        task = gw.cancel(args.id)
    if args.json:
        render.print_json(task)
    else:
        print(render.status_line(task))
    return exitcodes.OK


@command
def cmd_reviews(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.reviews()
    if args.json:
        render.print_json(body)
    elif body.get("tasks"):
        rows = [[t.get("id"), (t.get("risk") or {}).get("level", "?"), t.get("row_estimate") if t.get("row_estimate") is not None else "",
                 t.get("target"), t.get("user"), render.format_time(t.get("created_at")),
                 render.first_line(t.get("why"), 30), render.first_line(t.get("code")),
                 "; ".join(t.get("missing_approvals") or [])]
                for t in body["tasks"]]
        print(render.table(["id", "risk", "rows", "target", "user", "created", "why", "code", "needs"], rows))
    else:
        _say("nothing to review")
    return exitcodes.OK


@command
def cmd_review(args: argparse.Namespace) -> int:
    if args.decision == "reject" and not (args.comment or "").strip():
        error("a reject needs a reason: pass --comment TEXT (the author sees it)")
        return exitcodes.USAGE
    with connect(args) as gw:
        task = gw.review(args.id, args.decision, args.comment)
    if args.json:
        render.print_json(task)
    else:
        print(render.status_line(task))
    return exitcodes.OK


@command
def cmd_targets(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.targets()
    if args.json:
        render.print_json(body)
    elif body.get("targets"):
        rows = [[t.get("name"), t.get("kind"), t.get("language"), render.yes_no(t.get("online")),
                 (", ".join(t.get("review_groups") or []) or "yes") if t.get("requires_review") else "no",
                 t.get("description")]
                for t in body["targets"]]
        print(render.table(["name", "kind", "language", "online", "review", "description"], rows))
    else:
        _say("no targets you may submit to")
    return exitcodes.OK


# -- parsers --------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()

    p = subparsers.add_parser(
        "run", parents=[conn, js, retry.wait_options()], help="run code on a target (after review) and stream its output",
        description="Submit code to a target, wait for review, and stream its outputs. "
                    "The exit code says how it ended (see docs/cli.md).")
    p.add_argument("--target", "-t", required=True, help="target name (see `cellgate targets`)")
    p.add_argument("--why", help="justification shown to reviewers and kept in the audit log")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("-f", "--file", help="file with the code; - reads stdin")
    src.add_argument("-e", "--code", help="the code itself")
    p.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="with -f NOTEBOOK.ipynb: a value for its parameters cell (repeat for each)")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("tasks", parents=[conn, js], help="list tasks (newest first)")
    p.add_argument("--status", help="only tasks in this status")
    p.add_argument("--target", help="only tasks on this target")
    p.add_argument("--user", help="only tasks by this user")
    p.add_argument("--limit", type=int, help="at most this many tasks")
    p.set_defaults(func=cmd_tasks)

    task = subparsers.add_parser("task", help="show or cancel one task")
    task_sub = task.add_subparsers(dest="task_command", metavar="{show,cancel}", required=True)
    p = task_sub.add_parser("show", parents=[conn, js], help="all about one task")
    p.add_argument("id", type=int, metavar="N")
    p.set_defaults(func=cmd_task_show)
    p = task_sub.add_parser("output", parents=[conn, js], help="a task's outputs, or with --ipynb its executed notebook")
    p.add_argument("id", type=int, metavar="N")
    p.add_argument("--ipynb", action="store_true", help="the executed notebook of a notebook task (.ipynb JSON)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    p.set_defaults(func=cmd_task_output)
    p = task_sub.add_parser("cancel", parents=[conn, js], help="cancel a task still waiting for review")
    p.add_argument("id", type=int, metavar="N")
    p.set_defaults(func=cmd_task_cancel)

    p = subparsers.add_parser("reviews", parents=[conn, js], help="tasks waiting for your review")
    p.set_defaults(func=cmd_reviews)

    review = subparsers.add_parser("review", help="approve or reject a task")
    review_sub = review.add_subparsers(dest="decision", metavar="{approve,reject}", required=True)
    for decision, help_ in (("approve", "approve a task"), ("reject", "reject a task (needs --comment)")):
        p = review_sub.add_parser(decision, parents=[conn, js], help=help_)
        p.add_argument("id", type=int, metavar="N")
        p.add_argument("--comment", "-m", help="shown to the author and kept in the audit log")
        p.set_defaults(func=cmd_review)

    p = subparsers.add_parser("targets", parents=[conn, js], help="targets you may submit to")
    p.set_defaults(func=cmd_targets)
