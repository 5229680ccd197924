"""`cellgate apply -f policy.toml` and `cellgate policy show TARGET`."""

from __future__ import annotations

import json
import sys
from typing import Any

from . import exitcodes
from .client import ApiError, command, connect, connection_options, error, json_option
from .policy_file import PolicyFileError, load, locate


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()
    p = subparsers.add_parser("apply", parents=[conn, js],
                              help="create or update groups, memberships and target policies from a file (admin)")
    p.add_argument("-f", "--file", required=True, help="policy file (TOML); see docs/policy.md")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.set_defaults(func=cmd_apply)

    p = subparsers.add_parser("policy", help="show a target's effective policy")
    sub = p.add_subparsers(dest="policy_command", required=True, metavar="{show}")
    p = sub.add_parser("show", parents=[conn, js], help="the effective policy of a target")
    p.add_argument("target")
    p.set_defaults(func=cmd_policy_show)


@command
def cmd_apply(args: Any) -> int:
    try:
        text, doc = load(args.file)
    except PolicyFileError as exc:
        error(str(exc))
        return exitcodes.USAGE
    with connect(args) as gw:
        try:
            result = gw.request("POST", "/api/v1/apply", json={"document": doc, "dry_run": args.dry_run})
        except ApiError as exc:
            if exc.status != 400:
                raise
            field, _, message = exc.message.partition(": ")
            line = locate(text, field) if message else None
            error(str(PolicyFileError(args.file, line, field if message else None, message or exc.message)) +
                  " (nothing was changed)")
            return exitcodes.USAGE
    if args.json:
        print(json.dumps(result, indent=2))
        return exitcodes.OK
    changes = result.get("changes", [])
    prefix = "would change" if args.dry_run else "changed"
    if not changes:
        print("nothing to change: the gateway already matches the file", file=sys.stderr)
    for change in changes:
        print(f"{prefix}: {change}")
    return exitcodes.OK


def render_policy(target: dict[str, Any]) -> str:
    policy = target.get("policy", {})
    review, deny, limits = policy.get("review", {}), policy.get("deny", {}), policy.get("limits", {})
    groups = ", ".join(review.get("groups", [])) or "nobody (runs without review)"
    mode = review.get("mode", "all")
    how = {"all": "an approval from each group", "any": "one approval from any group",
           "count": f"{review.get('approvals', 1)} approvals from their members"}.get(mode, mode)
    lines = [
        f"target {target['name']}" + (f" — {target['description']}" if target.get("description") else ""),
        f"  may submit:     {', '.join(policy.get('submit_groups', [])) or 'every user'}",
        f"  reviewers:      {groups}" + (f" ({how})" if review.get("groups") else ""),
        f"  auto-approve:   SQL {policy.get('auto_approve', 'never')}, Python {policy.get('python_auto_approve', 'never')}",
        f"  introspection:  {policy.get('introspection', 'refuse')} (inspect/complete requests on Python targets)",
        f"  denied:         statements {', '.join(deny.get('statements', [])) or '-'}; tables {', '.join(deny.get('tables', [])) or '-'}; "
        f"patterns {', '.join(deny.get('patterns', [])) or '-'}; risk at or above {deny.get('risk') or '-'}",
        f"  limits:         approval valid {limits.get('approval_window')} s, {limits.get('max_rows')} rows, "
        f"{limits.get('max_bytes')} bytes of output, {limits.get('timeout')} s per task",
    ]
    return "\n".join(lines)


@command
def cmd_policy_show(args: Any) -> int:
    with connect(args) as gw:
        target = gw.target(args.target)
    if args.json:
        print(json.dumps(target.get("policy", {}), indent=2))
    else:
        print(render_policy(target))
    return exitcodes.OK
