"""`cellgate templates [list]`, `templates show NAME`, `templates run NAME --target T -p k=v`, `templates refresh` (admin)."""

from __future__ import annotations

import argparse
import sys
from typing import Any
from urllib.parse import quote

from . import exitcodes, render, retry
from .client import command, connect, connection_options, json_option
from .cmd_tasks import follow_submitted, parameter_values, submit


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()
    p = subparsers.add_parser("templates", parents=[conn, js], help="the templates you may run (docs/templates.md)")
    p.set_defaults(func=cmd_list)
    sub = p.add_subparsers(dest="templates_command", metavar="{list,show,run,refresh}")
    q = sub.add_parser("list", parents=[conn, js], help="the templates you may run, at the commit last fetched")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("show", parents=[conn, js], help="one template: where it runs, its parameters and its code")
    q.add_argument("name", help="the template's path in the repository without its extension, e.g. fixes/refund")
    q.set_defaults(func=cmd_show)
    q = sub.add_parser("run", parents=[conn, js, retry.wait_options()],
                       help="run a template on a target as one task and follow it (exit codes of `cellgate run`)")
    q.add_argument("name", help="the template, e.g. fixes/refund")
    q.add_argument("-t", "--target", required=True, help="the target to run it on")
    q.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="a parameter's value (repeat for each); `cellgate templates show NAME` lists them")
    q.add_argument("--why", default="", help="why you run it (shown to reviewers, kept in the audit)")
    q.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="follow the task to its end, with the exit codes of `cellgate run` (the default); "
                        "--no-wait: submit it and exit 0")
    q.set_defaults(func=cmd_run)
    q = sub.add_parser("refresh", parents=[conn, js], help="fetch the template repository now (admin)")
    q.set_defaults(func=cmd_refresh)


def _where(t: dict[str, Any]) -> str:
    places = [*t.get("targets", []), *(f"any {k} target" for k in t.get("target_kinds", []))]
    return ", ".join(places) or "nowhere"


def _answer(args: Any, method: str, path: str) -> Any:
    """The gateway's answer, or None once it was printed as JSON (``--json``)."""
    with connect(args) as gw:
        found = gw.request(method, path)
    if args.json:
        render.print_json(found)
        return None
    return found


@command
def cmd_list(args: Any) -> int:
    found = _answer(args, "GET", "/api/v1/templates")
    if found is None:
        return exitcodes.OK
    source = found.get("source", {})
    if not source.get("configured", True):
        print(source.get("message", "templates are not configured"), file=sys.stderr)
        return exitcodes.OK
    rows = [(t["name"], t["kind"], _where(t), ", ".join(p["name"] for p in t["parameters"]) or "-", t["description"])
            for t in found.get("templates", [])]
    if rows:
        print(render.table(["NAME", "KIND", "RUNS ON", "PARAMETERS", "DESCRIPTION"], rows))
    else:
        print("no template you may run", file=sys.stderr)
    commit = source.get("commit")
    print(f"at commit {commit[:12]}" if commit else "the repository was not fetched yet", file=sys.stderr)
    for _, why in sorted(source.get("errors", {}).items()):
        print(f"not offered: {why}", file=sys.stderr)
    return exitcodes.OK


@command
def cmd_show(args: Any) -> int:
    t = _answer(args, "GET", f"/api/v1/templates/{quote(args.name, safe='/')}")
    if t is None:
        return exitcodes.OK
    lines = [f"template {t['name']} ({t['kind']}, {t['path']} at {str(t.get('commit'))[:12]})"]
    if t.get("description"):
        lines.append(f"  {t['description']}")
    lines.append(f"  runs on:  {_where(t)}")
    lines.append(f"  run by:   {', '.join(t.get('groups', [])) or 'admins only'}")
    for p in t.get("parameters", []):
        detail = [p["type"]]
        if p.get("options"):
            detail.append("one of " + "|".join(p["options"]))
        if p.get("pattern"):
            detail.append(f"matching {p['pattern']}")
        detail.append("required" if p["required"] else f"default {p['default']}" if "default" in p else "optional")
        lines.append(f"  -p {p['name']}=…  {', '.join(detail)}" + (f" — {p['help']}" if p.get("help") else ""))
    if t["kind"] != "notebook":
        lines += ["", t.get("code", "").rstrip("\n")]
    print("\n".join(lines))
    return exitcodes.OK


@command
def cmd_run(args: Any) -> int:
    values = parameter_values(args.parameter)
    if values is None:
        return exitcodes.USAGE
    with connect(args) as gw:
        task = submit(gw, {"template": args.name, "target": args.target, "parameters": values, "why": args.why},
                      retry.from_args(args), "/api/v1/template-runs")
        if not args.wait:  # submitted: say so, and how to follow it
            if args.json:
                render.print_json(task)
            else:
                print(f"{render.status_line(task)}\nfollow it with: cellgate task show {task['id']}")
            return exitcodes.OK
        return follow_submitted(gw, task, args)


@command
def cmd_refresh(args: Any) -> int:
    done = _answer(args, "POST", "/api/v1/template-repository")
    if done is None:
        return exitcodes.OK
    moved = "unchanged" if done["previous"] == done["commit"] else f"was {str(done['previous'])[:12]}"
    print(f"templates at commit {done['commit'][:12]} ({moved}): {done['templates']} offered")
    for why in done.get("errors", {}).values():
        print(f"not offered: {why}", file=sys.stderr)
    return exitcodes.OK
