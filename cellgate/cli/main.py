"""The `cellgate` command: one sub-command per module in this package.

Each module listed in COMMAND_MODULES exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``func`` on the parser to a callable taking the parsed args and
returning the process exit code (see ``cellgate.cli.exitcodes``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = [
    "cellgate.cli.cmd_gateway",   # gateway, upgrade-db, init-admin
    "cellgate.cli.cmd_agent",     # agent
    "cellgate.cli.cmd_tasks",     # run, tasks, task show, reviews, review, targets
    "cellgate.cli.cmd_admin",     # users, groups, tokens, agent tokens, audit export
    "cellgate.cli.cmd_policy",    # apply, policy show
    "cellgate.cli.cmd_demo",      # demo
    "cellgate.cli.cmd_login",     # login (browser sign-in, saves a token)
    "cellgate.cli.cmd_token",     # token list, token revoke (your own tokens)
    "cellgate.cli.cmd_slack",     # slack link, unlink, links
    "cellgate.cli.cmd_templates", # templates list, show, refresh
    "cellgate.cli.cmd_kernelspecs",  # kernelspecs install (a local kernel per target, through the gate)
    "cellgate.cli.cmd_schedules",    # schedules list, create, show, resubmit, delete
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellgate",
        description="Reviewed, audited access to production from Jupyter notebooks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # not written yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        sys.exit(2)
    sys.exit(args.func(args) or 0)
