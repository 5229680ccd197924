"""`cellgate agent`: run the agent next to the targets (docs/agent.md).

The flags are aliases of ``Agent`` traits (``agent.app``, ``Agent.aliases``); every setting can
also be set as ``c.Agent.<name>`` in ``cellgate_config.py`` (``--config-file``), flags first, and
the token and the gateway URL come from the environment when neither sets them. Secrets are read
once and then kept out of reach of the kernels (``Agent.prepare``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from cellgate.cli import exitcodes

#: flag → help; each flag is an alias of ``Agent.aliases``
AGENT_FLAGS = {
    "gateway": "gateway URL, e.g. https://cellgate.example.com (env CELLGATE_URL; c.Agent.gateway_url)",
    "token-file": "file holding the agent token, readable by its owner only (chmod 600; c.Agent.token_file)",
    "token": "agent token (prefer --token-file or env CELLGATE_AGENT_TOKEN: arguments are visible to other "
             "users of the host)",
    "config": "the agent's TOML file of targets (c.Agent.targets_file)",
    "config-file": "Python config file with c.Agent.* settings (default cellgate_config.py, if present)",
    "log-level": "default INFO",
}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "agent", help="run an agent: host kernels for targets, dial out to the gateway",
        description="Run an agent. It dials out to the gateway over a WebSocket, hosts the kernels of the targets "
                    "in its TOML file and keeps their secrets. Every option can also be set as Agent.<name> in "
                    "cellgate_config.py (docs/agent.md lists them all).")
    p.add_argument("--gateway", "--gateway-url", dest="gateway", metavar="URL", help=AGENT_FLAGS["gateway"])
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", metavar="FILE", help=AGENT_FLAGS["token-file"])
    token.add_argument("--token", help=AGENT_FLAGS["token"])
    p.add_argument("--config", metavar="FILE", help=AGENT_FLAGS["config"])
    p.add_argument("--config-file", metavar="FILE", help=AGENT_FLAGS["config-file"])
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help=AGENT_FLAGS["log-level"])
    p.set_defaults(func=run)


def flag_values(args: argparse.Namespace, aliases: dict[str, str]) -> dict[str, Any]:
    """The flags given, as ``Agent`` trait name → value."""
    values: dict[str, Any] = {}
    for flag in AGENT_FLAGS:
        value = getattr(args, flag.replace("-", "_"), None)
        if value is not None:
            values[aliases[flag].split(".", 1)[1]] = getattr(logging, value) if flag == "log-level" else value
    return values


def run(args: argparse.Namespace) -> int:
    from traitlets import TraitError

    from cellgate.agent.app import Agent, serve
    from cellgate.agent.config import ConfigError

    app = Agent()
    try:
        app.configure(flag_values(args, Agent.aliases))
        runtime = app.prepare()
        runtime.open_journal()
    except (ConfigError, TraitError, ValueError) as exc:
        print(f"cellgate agent: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    asyncio.run(serve(runtime))
    return exitcodes.OK
