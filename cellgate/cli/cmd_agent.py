"""`cellgate agent`: run the agent next to the targets (docs/agent.md)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from cellgate.cli import exitcodes

if TYPE_CHECKING:
    from cellgate.agent.app import Agent


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "agent", help="run an agent: host kernels for targets, dial out to the gateway",
        description="Run an agent. It dials out to the gateway over a WebSocket, hosts the "
                    "kernels of the targets in its config file and keeps their secrets.")
    p.add_argument("--gateway", default=os.environ.get("CELLGATE_URL"),
                   help="gateway URL, e.g. https://cellgate.example.com (env CELLGATE_URL)")
    p.add_argument("--token", default=None,
                   help="agent token (prefer env CELLGATE_AGENT_TOKEN: arguments are visible "
                        "to other users of the host)")
    p.add_argument("--config", required=True, help="the agent's TOML config file")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellgate.agent.app import Agent
    from cellgate.agent.config import ConfigError, load_config

    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = args.token or os.environ.get("CELLGATE_AGENT_TOKEN")
    if not args.gateway:
        print("cellgate agent: no gateway URL: pass --gateway or set CELLGATE_URL", file=sys.stderr)
        return exitcodes.USAGE
    if not token:
        print("cellgate agent: no agent token: set CELLGATE_AGENT_TOKEN or pass --token",
              file=sys.stderr)
        return exitcodes.USAGE
    try:
        config = load_config(args.config)
        agent = Agent(config, args.gateway, token)
    except (ConfigError, ValueError) as exc:
        print(f"cellgate agent: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    asyncio.run(_serve(agent))
    return exitcodes.OK


async def _serve(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.run(stop)
