"""`cellgate kernelspecs install`: a local Jupyter kernel spec ``cellgate-<target>`` per target you may use.

Each spec's command is ``python -m cellgate.kernel_bridge --target T -f {connection_file}``: any Jupyter
tool then runs cells on the target through the gate, unmodified (``jupyter execute
--kernel_name=cellgate-T``, ``papermill -k cellgate-T``). The specs hold no token: the bridge finds
the gateway and token when it starts, as the ``cellgate`` command does.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import exitcodes, render
from .client import command, connect, connection_options, error, json_option

PREFIX = "cellgate-"


def spec_for(name: str, spec: dict[str, Any], url: str) -> dict[str, Any]:
    return {"argv": [sys.executable, "-m", "cellgate.kernel_bridge", "--target", name, "-f", "{connection_file}"],
            "display_name": spec.get("display_name", name), "language": spec.get("language", ""),
            "interrupt_mode": "signal", "metadata": {"cellgate": {"target": name, "gateway": url}}}


@command
def cmd_install(args: Any) -> int:
    from jupyter_client.kernelspec import KernelSpecManager

    with connect(args) as gw:
        found = gw.request("GET", "/api/kernelspecs")["kernelspecs"]
        url = gw.url
    wanted = args.target or sorted(found)
    unknown = [t for t in wanted if t not in found]
    if unknown:
        error(f"no target {unknown[0]!r} you may use (yours: {', '.join(sorted(found)) or 'none'})")
        return exitcodes.USAGE
    manager = KernelSpecManager()
    installed = []
    for name in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "kernel.json").write_text(json.dumps(spec_for(name, found[name]["spec"], url), indent=1))
            where = manager.install_kernel_spec(tmp, PREFIX + name, user=args.prefix is None, prefix=args.prefix)
        installed.append({"kernel": PREFIX + name, "target": name, "path": where})
    if args.json:
        render.print_json({"installed": installed})
    else:
        for item in installed:
            print(f"{item['kernel']}  ({item['target']})  {item['path']}")
    return exitcodes.OK


def register(subparsers: Any) -> None:
    conn, js = connection_options(), json_option()
    p = subparsers.add_parser("kernelspecs", help="Jupyter kernel specs for your targets (any Jupyter tool, through the gate)")
    sub = p.add_subparsers(dest="kernelspecs_command", metavar="COMMAND", required=True)
    q = sub.add_parser("install", parents=[conn, js], help="write a kernel spec cellgate-<target> per target you may use")
    q.add_argument("target", nargs="*", help="only these targets (default: every one you may use)")
    q.add_argument("--prefix", help="install under this prefix (e.g. sys.prefix of a venv) instead of your user directory")
    q.set_defaults(func=cmd_install)
