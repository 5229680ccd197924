"""`cellgate demo`: gateway, agent, a demo database and JupyterLab on this machine (docs/demo.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellgate.cli import exitcodes


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "demo", help="run a complete demo on this machine: gateway, agent, a demo database, JupyterLab",
        description="Run the gateway, an agent serving a demo SQLite payments database and JupyterLab "
                    "(as user dev), with users dev and reviewer (group dba reviews every run). "
                    "Writes demo.json (URLs and tokens) in the current folder. Ctrl-C stops everything.")
    p.add_argument("--port", type=int, default=8765, help="gateway port (default 8765)")
    p.add_argument("--lab-port", type=int, default=None, help="JupyterLab port (default: gateway port + 1)")
    p.add_argument("--dir", default=".cellgate-demo",
                   help="folder for the demo's state and logs (default .cellgate-demo in the current folder)")
    p.add_argument("--no-browser", action="store_true", help="do not open JupyterLab in a browser")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellgate import demo

    for port in (args.port, args.lab_port):
        if port is not None and not 1 <= port <= 65535:
            print(f"cellgate demo: port {port} is out of range 1-65535", flush=True)
            return exitcodes.USAGE
    opts = demo.Options(state_dir=Path(args.dir).resolve(), port=args.port, lab_port=args.lab_port,
                        open_browser=not args.no_browser, cwd=Path.cwd())
    return demo.run(opts)
