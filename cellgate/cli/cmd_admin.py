"""Administration: `users`, `groups`, `tokens`, `agent-tokens`, `agents`, `target set`, `audit`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from cellgate.cli import exitcodes, render
from cellgate.cli.client import (
    ApiError,
    command,
    connect,
    connection_options,
    error,
    iter_json_list,
    json_option,
)


def _done(args: argparse.Namespace, body: Any, line: str) -> int:
    if args.json:
        render.print_json(body)
    else:
        print(line)
    return exitcodes.OK


# -- users ----------------------------------------------------------------------------------


@command
def cmd_users_list(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.users()
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    rows = [[u.get("name"), render.yes_no(u.get("is_admin")), render.yes_no(u.get("active", True)),
             ", ".join(u.get("groups") or [])] for u in iter_json_list(body, "users")]
    print(render.table(["name", "admin", "active", "groups"], rows))
    return exitcodes.OK


@command
def cmd_users_add(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.add_user(args.name, args.admin)
    return _done(args, body, f"user {args.name} added" + (" (admin)" if args.admin else ""))


@command
def cmd_users_deactivate(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.deactivate_user(args.name)
    return _done(args, body, f"user {args.name} deactivated (their tokens no longer work)")


# -- groups ---------------------------------------------------------------------------------


@command
def cmd_groups_list(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.groups()
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    rows = [[g.get("name"), ", ".join(g.get("members") or g.get("users") or [])]
            for g in iter_json_list(body, "groups")]
    print(render.table(["name", "members"], rows))
    return exitcodes.OK


@command
def cmd_groups_add(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.add_group(args.name)
    return _done(args, body, f"group {args.name} added")


@command
def cmd_groups_add_member(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.add_member(args.group, args.user)
    return _done(args, body, f"{args.user} added to {args.group}")


@command
def cmd_groups_remove_member(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.remove_member(args.group, args.user)
    return _done(args, body, f"{args.user} removed from {args.group}")


# -- tokens ---------------------------------------------------------------------------------


def _print_token(args: argparse.Namespace, body: dict[str, Any], whose: str) -> int:
    """The token alone on stdout (``TOKEN=$(cellgate tokens create bob)``), the rest on stderr."""
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    print(body["token"], flush=True)
    print(f"token {body.get('id')} for {whose}; it is shown only this once — store it now",
          file=sys.stderr)
    return exitcodes.OK


@command
def cmd_tokens_create(args: argparse.Namespace) -> int:
    if args.expires_in_days is not None and args.expires_in_days <= 0:
        error("--expires-in-days must be a positive number of days")
        return exitcodes.USAGE
    with connect(args) as gw:
        body = gw.create_token(args.user, args.note, args.expires_in_days)
    return _print_token(args, body, f"user {args.user}")


def _target_list(value: str) -> list[str]:
    """``--targets a,b`` (repeatable): the names, in order, without blanks and repeats."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one target name, e.g. --targets payments,reports")
    return names


def _targets_of(args: argparse.Namespace) -> list[str]:
    return list(dict.fromkeys(name for group in args.targets for name in group))


@command
def cmd_agent_tokens_create(args: argparse.Namespace) -> int:
    targets = _targets_of(args)
    with connect(args) as gw:
        body = gw.create_agent_token(args.name, targets)
    return _print_token(args, body, f"agent {args.name} (targets: {', '.join(body.get('targets') or targets)})")


@command
def cmd_agent_tokens_list(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.agent_tokens()
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    rows = [[t.get("id"), t.get("agent") or f"{t.get('name')} (unbound: refused)", ", ".join(t.get("targets") or []),
             t.get("state"), render.format_time(t.get("created_at")), render.format_time(t.get("last_used_at")) or "never",
             render.format_time(t.get("revoked_at"))] for t in iter_json_list(body, "agent_tokens")]
    print(render.table(["id", "agent", "targets", "state", "created", "last used", "revoked"], rows))
    return exitcodes.OK


@command
def cmd_agent_tokens_set_targets(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.set_agent_token_targets(args.id, _targets_of(args))
    return _done(args, body, f"agent token {body.get('id')} ({body.get('agent')}) may serve: "
                             f"{', '.join(body.get('targets') or [])}")


@command
def cmd_agents(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.agents()
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    rows = []
    for a in iter_json_list(body, "agents"):
        targets = [t.get("name", "?") if isinstance(t, dict) else str(t) for t in a.get("targets") or []]
        rows.append([a.get("agent_id") or a.get("id") or a.get("name"), a.get("version"),
                     ", ".join(a.get("tags") or []), ", ".join(targets)])
    print(render.table(["agent", "version", "tags", "targets"], rows))
    return exitcodes.OK


# -- targets --------------------------------------------------------------------------------


@command
def cmd_target_set(args: argparse.Namespace) -> int:
    """PUT replaces the target's settings, so start from what is there and change what was given."""
    with connect(args) as gw:
        try:
            current = gw.target(args.name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            current = {}
        body = {
            "description": current.get("description") or "",
            "submit_groups": list(current.get("submit_groups") or []),
            "review_groups": list(current.get("review_groups") or []),
        }
        if args.description is not None:
            body["description"] = args.description
        if args.submit_groups is not None:
            body["submit_groups"] = [g for g in args.submit_groups if g]
        if args.review_groups is not None:
            body["review_groups"] = [g for g in args.review_groups if g]
        if args.kind is not None:
            body["kind"] = args.kind
        if args.dialect is not None:
            body["dialect"] = args.dialect
        if args.display_name is not None:
            body["display_name"] = args.display_name
        target = gw.put_target(args.name, body)
    verb = "updated" if current else "created"
    review = ", ".join(target.get("review_groups") or []) or "nobody"
    submit = ", ".join(target.get("submit_groups") or []) or "nobody"
    line = f"target {args.name} {verb}: submit {submit}; review {review}"
    if args.kind is not None or args.dialect is not None:
        line += f"; kind {target.get('kind')}" + (f" ({target['dialect']})" if target.get("dialect") else "")
    if not target.get("kind"):
        print(f"cellgate: warning: target {args.name} has no kind yet: agents are refused for it until you run "
              f"`cellgate target set {args.name} --kind sql --dialect postgresql|mysql|mariadb|sqlite` (or --kind python)",
              file=sys.stderr)
    return _done(args, target, line)


# -- audit ----------------------------------------------------------------------------------


@command
def cmd_audit_export(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        if not args.output or args.output == "-":
            gw.export_audit(sys.stdout.buffer, args.format, args.since, args.until)
            return exitcodes.OK
        # Write beside the destination and rename at the end: a failed export leaves no half file.
        dest = Path(args.output)
        part = dest.with_name(f".{dest.name}.part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                size = gw.export_audit(out, args.format, args.since, args.until)
            os.replace(part, dest)
        finally:
            part.unlink(missing_ok=True)
    print(f"wrote {size} bytes of audit events to {dest}", file=sys.stderr)
    return exitcodes.OK


@command
def cmd_audit_verify(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.verify_audit()
    ok = bool(body.get("ok"))
    if args.json:
        render.print_json(body)
    else:
        message = body.get("message") or ("audit chain intact" if ok else "audit chain broken")
        detail = f" ({body.get('events')} events)" if body.get("events") is not None else ""
        if not ok and body.get("first_bad") is not None:
            detail += f"; first bad event: {body['first_bad']}"
        print(message + detail, file=sys.stdout if ok else sys.stderr)
    return exitcodes.OK if ok else exitcodes.FAILED


# -- parsers --------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()

    def group(name: str, help_: str, commands: str) -> Any:
        p = subparsers.add_parser(name, help=help_)
        return p.add_subparsers(dest=f"{name.replace('-', '_')}_command", required=True,
                                metavar="{" + commands + "}")

    users = group("users", "list, add and deactivate users (admin)", "list,add,deactivate")
    p = users.add_parser("list", parents=[conn, js], help="all users")
    p.set_defaults(func=cmd_users_list)
    p = users.add_parser("add", parents=[conn, js], help="add a user")
    p.add_argument("name")
    p.add_argument("--admin", action="store_true", help="make the user an administrator")
    p.set_defaults(func=cmd_users_add)
    p = users.add_parser("deactivate", parents=[conn, js], help="deactivate a user and their tokens")
    p.add_argument("name")
    p.set_defaults(func=cmd_users_deactivate)

    groups = group("groups", "list groups and manage membership (admin)",
                   "list,add,add-member,remove-member")
    p = groups.add_parser("list", parents=[conn, js], help="all groups and their members")
    p.set_defaults(func=cmd_groups_list)
    p = groups.add_parser("add", parents=[conn, js], help="add a group")
    p.add_argument("name")
    p.set_defaults(func=cmd_groups_add)
    p = groups.add_parser("add-member", parents=[conn, js], help="add a user to a group")
    p.add_argument("group")
    p.add_argument("user")
    p.set_defaults(func=cmd_groups_add_member)
    p = groups.add_parser("remove-member", parents=[conn, js], help="remove a user from a group")
    p.add_argument("group")
    p.add_argument("user")
    p.set_defaults(func=cmd_groups_remove_member)

    tokens = group("tokens", "API tokens for users (admin)", "create")
    p = tokens.add_parser("create", parents=[conn, js],
                          help="create a token for a user; prints it once, alone on stdout")
    p.add_argument("user")
    p.add_argument("--note", help="what the token is for")
    p.add_argument("--expires-in-days", type=int, metavar="N", help="expire after N days")
    p.set_defaults(func=cmd_tokens_create)

    agent_tokens = group("agent-tokens", "tokens for agents, each bound to one agent name and its targets (admin)",
                         "create,list,set-targets")
    p = agent_tokens.add_parser("create", parents=[conn, js],
                                help="create a token for agent NAME serving --targets; prints it once, alone on stdout")
    p.add_argument("name", help="the agent's name: its [agent] id, which the token alone may speak as")
    p.add_argument("--targets", type=_target_list, action="append", required=True, metavar="T1,T2",
                   help="the targets this agent may serve (comma-separated, repeatable; each must exist)")
    p.set_defaults(func=cmd_agent_tokens_create)
    p = agent_tokens.add_parser("list", parents=[conn, js],
                                help="agent tokens: agent, targets, state, created, last used, revoked")
    p.set_defaults(func=cmd_agent_tokens_list)
    p = agent_tokens.add_parser("set-targets", parents=[conn, js],
                                help="replace the targets an agent token may serve")
    p.add_argument("id", type=int, help="the token's id (see `cellgate agent-tokens list`)")
    p.add_argument("--targets", type=_target_list, action="append", required=True, metavar="T1,T2",
                   help="the targets this agent may serve from now on (comma-separated, repeatable)")
    p.set_defaults(func=cmd_agent_tokens_set_targets)

    p = subparsers.add_parser("agents", parents=[conn, js], help="connected agents and their targets (admin)")
    p.set_defaults(func=cmd_agents)

    target = group("target", "create or change a target's kind, dialect and groups (admin)", "set")
    p = target.add_parser("set", parents=[conn, js],
                          help="create or update a target; options not given keep their value")
    p.add_argument("name")
    p.add_argument("--description", help="what the target is")
    p.add_argument("--submit-group", dest="submit_groups", action="extend", nargs="+", metavar="G",
                   help="group allowed to submit (repeatable; replaces the list; '' empties it)")
    p.add_argument("--review-group", dest="review_groups", action="extend", nargs="+", metavar="G",
                   help="group that reviews (repeatable; replaces the list; '' empties it)")
    p.add_argument("--kind", choices=["sql", "python"],
                   help="what the target runs; agents must announce the same to serve it")
    p.add_argument("--dialect", choices=["postgresql", "mysql", "mariadb", "sqlite"],
                   help="the SQL dialect (kind sql only); agents must announce the same (mysql = mariadb)")
    p.add_argument("--display-name", help="the name shown in Jupyter's kernel list")
    p.set_defaults(func=cmd_target_set)

    audit = group("audit", "export and verify the audit log (admin)", "export,verify")
    p = audit.add_parser("export", parents=[conn], help="stream audit events to stdout or a file")
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    p.add_argument("--since", metavar="ISO", help="events at or after this time (ISO 8601)")
    p.add_argument("--until", metavar="ISO", help="events before this time (ISO 8601)")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (mode 0600) instead of stdout")
    p.set_defaults(func=cmd_audit_export)
    p = audit.add_parser("verify", parents=[conn, js],
                         help="check the audit hash chain; exit 0 if intact, 1 if broken")
    p.set_defaults(func=cmd_audit_verify)
