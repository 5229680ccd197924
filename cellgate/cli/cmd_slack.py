"""`cellgate slack link|unlink|links`: which cellgate user a Slack user is (admin)."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from cellgate.cli import exitcodes, render
from cellgate.cli.client import command, connect, connection_options, iter_json_list, json_option


def _path(slack_user_id: str) -> str:
    return f"/api/v1/slack/links/{quote(slack_user_id, safe='')}"


@command
def cmd_slack_link(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.request("PUT", _path(args.slack_user_id), json={"user": args.user, "team_id": args.team or ""})
    if args.json:
        render.print_json(body)
    else:
        where = f" in workspace {args.team}" if args.team else ""
        print(f"Slack user {args.slack_user_id}{where} is now cellgate user {args.user}")
    return exitcodes.OK


@command
def cmd_slack_unlink(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.request("DELETE", _path(args.slack_user_id), params={"team_id": args.team or None})
    if args.json:
        render.print_json(body)
    else:
        print(f"Slack user {args.slack_user_id} is no longer linked")
    return exitcodes.OK


@command
def cmd_slack_links(args: argparse.Namespace) -> int:
    with connect(args) as gw:
        body = gw.request("GET", "/api/v1/slack/links")
    if args.json:
        render.print_json(body)
        return exitcodes.OK
    rows = [[link.get("slack_user_id"), link.get("team_id") or "any", link.get("user"), link.get("how")]
            for link in iter_json_list(body, "links")]
    print(render.table(["slack user", "workspace", "cellgate user", "how"], rows))
    return exitcodes.OK


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()
    p = subparsers.add_parser("slack", help="link Slack users to cellgate users (admin)")
    sub = p.add_subparsers(dest="slack_command", required=True, metavar="{link,unlink,links}")
    p = sub.add_parser("link", parents=[conn, js], help="link a Slack user to a cellgate user (their clicks in Slack act as that user)")
    p.add_argument("slack_user_id", metavar="SLACK_USER_ID", help="e.g. U024BE7LH (Slack: profile → ⋮ → Copy member ID)")
    p.add_argument("user", metavar="USER", help="the cellgate user")
    p.add_argument("--team", metavar="T", help="only in this Slack workspace (team ID); default: any")
    p.set_defaults(func=cmd_slack_link)
    p = sub.add_parser("unlink", parents=[conn, js], help="remove a Slack user's link")
    p.add_argument("slack_user_id", metavar="SLACK_USER_ID")
    p.add_argument("--team", metavar="T", help="the workspace of the link, if it has one")
    p.set_defaults(func=cmd_slack_unlink)
    p = sub.add_parser("links", parents=[conn, js], help="all Slack links")
    p.set_defaults(func=cmd_slack_links)
