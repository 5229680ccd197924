"""The price of the gate: one auto-approved ``SELECT 1`` cell, gated and direct, in one run.

    python -m benchmarks.cell_latency [--runs 300] [--warmup 30] [--store postgresql|sqlite]
                                      [--path no-review|read-only]

Gated: a stock ``jupyter server`` in gateway mode → cellgate gateway → agent → SQL kernel →
PostgreSQL, over the same JSON WebSocket protocol JupyterLab speaks. Direct: the same SQL kernel
started with jupyter_client on this machine, same database. Each cell is timed from sending the
``execute_request`` until both its ``execute_reply`` and its ``status: idle`` arrived (what
JupyterLab waits for). Prints p50 and p99 of both and their difference.

``--path no-review`` (default): a target without reviewers, so every cell is approved by policy
and runs on the target's own credential. ``--path read-only``: a target with reviewers and
``auto_approve = "read-only"``, so each cell is auto-approved as read-only SQL and runs on the
read-only credential, inside a read-only transaction, with the session reset after the cell.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import (PG_ADMIN, agent_config, connect, create_pg_database, drop_pg_database,
                     start_agent, start_gateway, start_jupyter, start_kernel, wait_online)

CODE = "SELECT 1"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def gated(jp, runs: int, warmup: int) -> list[float]:  # type: ignore[no-untyped-def]
    kid = start_kernel(jp, "pg")
    times = []
    async with connect(jp, kid) as kc:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            ex = await kc.execute(CODE)
            elapsed = time.perf_counter() - t0
            assert ex.status == "ok", ex.msgs
            if i >= warmup:
                times.append(elapsed)
    return times


async def direct(runs: int, warmup: int) -> list[float]:
    from jupyter_client.manager import AsyncKernelManager

    from cellgate.kernels.specs import CellgateKernelSpecManager

    km = AsyncKernelManager(kernel_name="cellgate-sql", kernel_spec_manager=CellgateKernelSpecManager())
    await km.start_kernel(env={**os.environ, "CELLGATE_TARGET_URL": PG_ADMIN})
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    times = []
    try:
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            msg_id = kc.execute(CODE)
            reply = idle = False
            while not (reply and idle):
                if not reply:
                    got = await kc.get_shell_msg(timeout=30)
                    reply = got["parent_header"].get("msg_id") == msg_id
                while not idle:
                    m = await kc.get_iopub_msg(timeout=30)
                    idle = (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                            and m["content"]["execution_state"] == "idle")
            elapsed = time.perf_counter() - t0
            if i >= warmup:
                times.append(elapsed)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
    return times


def report(name: str, times: list[float]) -> tuple[float, float]:
    p50, p99 = percentile(times, 0.50) * 1000, percentile(times, 0.99) * 1000
    print(f"{name:<8} n={len(times):<4} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   mean {statistics.mean(times) * 1000:7.2f} ms")
    return p50, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql",
                        help="the gateway's store (default postgresql, as in production)")
    parser.add_argument("--path", choices=["no-review", "read-only"], default="no-review",
                        help="no-review: a target without reviewers; read-only: cells auto-approved as read-only SQL")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cellgate-bench-"))
    db = create_pg_database() if args.store == "postgresql" else f"sqlite:///{work}/gateway.db"
    gw = start_gateway(work, db)
    agent = jp = None
    try:
        target: dict[str, str] = {"kind": "sql", "url": PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")}
        if args.path == "no-review":
            gw.set_target("pg")  # no review groups: every cell is approved by policy
        else:
            from readonly_roles import pg_readonly_url

            gw.user("reviewer", groups=("dba",))
            with gw.admin() as api:
                r = api.put("/api/v1/targets/pg", json={"review_groups": ["dba"], "policy": {"auto_approve": "read-only"}})
                assert r.status_code == 200, r.text
            target["readonly_url"] = pg_readonly_url()
        dev = gw.user("dev")
        agent = start_agent(gw, work, agent_config(work / "agent.toml", "bench-agent", {"pg": target}))
        wait_online(gw, ["pg"], agent.log)
        jp = start_jupyter(gw, dev, work, "jupyter")
        g = asyncio.run(gated(jp, args.runs, args.warmup))
        d = asyncio.run(direct(args.runs, args.warmup))
        print(f"cellgate cell latency: {CODE!r} on PostgreSQL, gateway store {args.store}, path {args.path}, "
              f"{args.runs} runs after {args.warmup} warm-up")
        g50, g99 = report("gated", g)
        d50, d99 = report("direct", d)
        print(f"the gate costs p50 +{g50 - d50:.2f} ms, p99 +{g99 - d99:.2f} ms")
    finally:
        for proc in (jp.proc if jp else None, agent):
            if proc is not None:
                proc.stop()
        gw.proc.stop()
        if args.store == "postgresql":
            drop_pg_database(db)


if __name__ == "__main__":
    main()
