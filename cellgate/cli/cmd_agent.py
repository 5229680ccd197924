"""`cellgate agent`: run the agent next to the targets (docs/agent.md).

Secrets are read once and then kept out of reach of the kernels: the token comes from
``--token-file`` (owner-only), ``$CELLGATE_AGENT_TOKEN`` or ``--token``; the variables holding the
token and the targets' URLs are removed from ``os.environ`` once read, and the agent overwrites
them in its own ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` memory and makes itself
non-dumpable (``agent.isolation.hide_secrets``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cellgate.cli import exitcodes

if TYPE_CHECKING:
    from cellgate.agent.app import Agent
    from cellgate.agent.config import AgentConfig


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "agent", help="run an agent: host kernels for targets, dial out to the gateway",
        description="Run an agent. It dials out to the gateway over a WebSocket, hosts the "
                    "kernels of the targets in its config file and keeps their secrets.")
    p.add_argument("--gateway", default=os.environ.get("CELLGATE_URL"),
                   help="gateway URL, e.g. https://cellgate.example.com (env CELLGATE_URL)")
    token = p.add_mutually_exclusive_group()
    token.add_argument("--token-file", default=None, metavar="FILE",
                       help="file holding the agent token, readable by its owner only (chmod 600)")
    token.add_argument("--token", default=None,
                       help="agent token (prefer --token-file or env CELLGATE_AGENT_TOKEN: "
                            "arguments are visible to other users of the host)")
    p.add_argument("--config", required=True, help="the agent's TOML config file")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellgate.agent.app import Agent
    from cellgate.agent.config import ConfigError, load_config
    from cellgate.agent.isolation import hide_secrets

    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env_token = os.environ.pop("CELLGATE_AGENT_TOKEN", None)  # no child inherits it
    if not args.gateway:
        print("cellgate agent: no gateway URL: pass --gateway or set CELLGATE_URL", file=sys.stderr)
        return exitcodes.USAGE
    try:
        token = _read_token_file(args.token_file) if args.token_file else args.token or env_token
    except ValueError as exc:
        print(f"cellgate agent: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if not token:
        print("cellgate agent: no agent token: pass --token-file FILE or set "
              "CELLGATE_AGENT_TOKEN", file=sys.stderr)
        return exitcodes.USAGE
    try:
        config = load_config(args.config)
        secrets = [token, *_pop_target_secrets(config)]
        hide_secrets(secrets)
        agent = Agent(config, args.gateway, token)
    except (ConfigError, ValueError) as exc:
        print(f"cellgate agent: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    asyncio.run(_serve(agent))
    return exitcodes.OK


def _read_token_file(name: str) -> str:
    path = Path(name)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"--token-file: cannot read {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(f"--token-file: {path} is readable by group or others (mode {mode:o}): "
                         f"run `chmod 600 {path}`")
    if not text:
        raise ValueError(f"--token-file: {path} is empty")
    return text


def _pop_target_secrets(config: AgentConfig) -> list[str]:
    """Drop the variables holding the targets' URLs from ``os.environ`` (``url_env``, and any
    other variable whose value is a target's URL or read-only URL, such as
    ``readonly_url_env``'s); return every URL, to scrub from the process memory."""
    secrets: list[str] = []
    for target in config.targets.values():
        if target.url_env:
            os.environ.pop(target.url_env, None)
        for attr in ("url", "readonly_url"):
            value = getattr(target, attr, None)
            if isinstance(value, str) and value:
                secrets.append(value)
    for name, value in list(os.environ.items()):
        if value.strip() in secrets:
            del os.environ[name]
    return secrets


async def _serve(agent: Agent) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await agent.run(stop)
