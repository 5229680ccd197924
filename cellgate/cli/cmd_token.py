"""`cellgate token list` and `cellgate token revoke ID`: your own API tokens (admins: anyone's).

A token is shown once, when it is made (`cellgate login`, `cellgate tokens create`); listings
show its id, note and first characters, never the token.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cellgate.cli import exitcodes, render
from cellgate.cli.client import command, connect, connection_options, iter_json_list, json_option


@command
def cmd_token_list(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.list_tokens(user=args.user, kind="agent" if args.agents else None)
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    rows = []
    for t in iter_json_list(body, "tokens"):
        rows.append([f"{t.get('id')}{' *' if t.get('current') else ''}", t.get("note") or "", f"{t.get('prefix')}…",
                     render.format_time(t.get("created_at")), render.format_time(t.get("expires_at")) or "never",
                     render.format_time(t.get("last_used_at")) or "never", render.format_time(t.get("revoked_at"))])
    print(render.table(["id", "note", "prefix", "created", "expires", "last used", "revoked"], rows))
    if any(t.get("current") for t in iter_json_list(body, "tokens")):
        print("* the token this command used", file=sys.stderr)
    return exitcodes.OK


@command
def cmd_token_revoke(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.revoke_token(args.id)
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    closed = body.get("closed_sockets") or 0
    print(f"token {body.get('id')} ({body.get('prefix')}…) revoked; it no longer works"
          + (f"; {closed} open connection(s) closed" if closed else ""))
    return exitcodes.OK


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()
    token = subparsers.add_parser("token", help="list or revoke your API tokens")
    sub = token.add_subparsers(dest="token_command", required=True, metavar="{list,revoke}")
    p = sub.add_parser("list", parents=[conn, js], help="your tokens (never the tokens themselves)")
    p.add_argument("--user", metavar="NAME", help="another user's tokens (admin)")
    p.add_argument("--agents", action="store_true", help="agent tokens (admin)")
    p.set_defaults(func=cmd_token_list)
    p = sub.add_parser("revoke", parents=[conn, js],
                       help="revoke a token: refused from the next request on, open connections closed")
    p.add_argument("id", type=int, help="the token's id (see `cellgate token list`)")
    p.set_defaults(func=cmd_token_revoke)
