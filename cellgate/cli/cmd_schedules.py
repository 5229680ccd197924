"""`cellgate schedules [list]`, `schedules create NAME --template T --target X -p k=v --cron "0 8 * * *"`,
`schedules show NAME`, `schedules resubmit NAME`, `schedules delete NAME` (docs/templates.md, "Schedules")."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from . import exitcodes, render
from .client import command, connect, connection_options, json_option
from .cmd_tasks import parameter_values


def _line(s: dict[str, Any]) -> list[Any]:
    return [s["name"], s["status"].replace("_", " "), s["cron"], s["template"], s["target"], s.get("user"),
            render.format_time(s.get("next_run_at")) if s.get("next_run_at") else ""]


@command
def cmd_list(args: Any) -> int:
    with connect(args) as gw:
        body = gw.request("GET", "/api/v1/schedules")
    if args.json:
        render.print_json(body)
    elif body["schedules"]:
        print(render.table(["name", "status", "cron (UTC)", "template", "target", "user", "next run"],
                           [_line(s) for s in body["schedules"]]))
    else:
        print("no schedules")
    return exitcodes.OK


def _show(s: dict[str, Any]) -> str:
    fields = [("schedule", s["name"]), ("status", s["status"].replace("_", " ")), ("why", s.get("status_reason")),
              ("template", f"{s['template']} at {str(s.get('commit') or '')[:12]}"), ("target", s["target"]),
              ("values", ", ".join(f"{k}={v!r}" for k, v in (s.get("parameters") or {}).items())),
              ("cron (UTC)", s["cron"]), ("missed runs", "run once on start" if s["on_missed"] == "run" else "skipped"),
              ("results to", s.get("notify") or "its author (Slack)"), ("user", s.get("user")),
              ("review task", s.get("review_task_id")), ("sha256", s.get("code_sha256")),
              ("next run", render.format_time(s.get("next_run_at")) if s.get("next_run_at") else None)]
    lines = [f"{k + ':':<13}{v}" for k, v in fields if v not in (None, "")]
    for run in s.get("runs") or []:
        lines.append(f"  {render.format_time(run['due_at'])}  {run['outcome']}"
                     + (f"  task {run['task_id']} {run.get('status') or ''}" if run.get("task_id") else ""))
    if s.get("review"):
        lines.append(render.status_line(s["review"]))
    return "\n".join(lines)


def _answer(args: Any, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """One request about a schedule; the answer as JSON with --json, else as ``schedules show`` prints it."""
    with connect(args) as gw:
        found = gw.request(method, path, json=body)
    if args.json:
        render.print_json(found)
    elif method == "DELETE":
        print(f"schedule {found['name']} deleted")
    else:
        print(_show(found))
    return exitcodes.OK


def _path(name: str, action: str = "") -> str:
    return f"/api/v1/schedules/{quote(name, safe='')}" + (f"/{action}" if action else "")


@command
def cmd_create(args: Any) -> int:
    values = parameter_values(args.parameter)
    if values is None:
        return exitcodes.USAGE
    return _answer(args, "POST", "/api/v1/schedules", {
        "name": args.name, "template": args.template, "target": args.target, "parameters": values, "cron": args.cron,
        "on_missed": args.on_missed, "notify": args.notify or "", "why": args.why})


@command
def cmd_show(args: Any) -> int:
    return _answer(args, "GET", _path(args.name))


@command
def cmd_resubmit(args: Any) -> int:
    return _answer(args, "POST", _path(args.name, "resubmit"))


@command
def cmd_delete(args: Any) -> int:
    return _answer(args, "DELETE", _path(args.name))


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()
    p = subparsers.add_parser("schedules", parents=[conn, js], help="templates run on a cron schedule, reviewed once")
    p.set_defaults(func=cmd_list)
    sub = p.add_subparsers(dest="schedules_command", metavar="COMMAND")
    q = sub.add_parser("list", parents=[conn, js], help="the schedules you may see")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("create", parents=[conn, js], help="schedule a template (reviewed once, then it runs on its own)")
    q.add_argument("name", help="its name: lower-case letters, digits, . _ -")
    q.add_argument("--template", required=True, help="the template to run (cellgate templates)")
    q.add_argument("-t", "--target", required=True, help="where it runs")
    q.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE", help="a value (repeat for each)")
    q.add_argument("--cron", required=True, help='when, in UTC: minute hour day month weekday, e.g. "0 8 * * *"')
    q.add_argument("--on-missed", choices=("skip", "run"), default="skip",
                   help="a run missed while the gateway was down: skip it (default) or run it once on start")
    q.add_argument("--notify", help="the Slack channel its results go to (default: you, in Slack)")
    q.add_argument("--why", default="", help="why it runs (shown to reviewers, kept in the audit)")
    q.set_defaults(func=cmd_create)
    for verb, text, func in (("show", "one schedule and its latest runs", cmd_show),
                             ("resubmit", "submit a suspended or rejected schedule for review again", cmd_resubmit),
                             ("delete", "delete a schedule (its approval is withdrawn)", cmd_delete)):
        q = sub.add_parser(verb, parents=[conn, js], help=text)
        q.add_argument("name")
        q.set_defaults(func=func)
