"""Does one big cell stall the gateway? ``GET /api/v1/me`` latency with and without 1 MiB submissions.

    python -m benchmarks.analysis_stall [--seconds 20] [--clients 1] [--store postgresql|sqlite]

Starts a gateway (no agent needed) with a reviewed SQL target and a reviewed Python target. One
user polls ``GET /api/v1/me`` back to back, first alone (baseline), then while ``--clients``
other clients submit scripts in a loop, each about 1 MiB (the default ``Gateway.max_code_bytes``):
a 1 MiB SQL ``SELECT … IN (…)``, 1 MiB of Python, and one just over the cap (refused with 413).
Each accepted task waits for review and is cancelled at once. Prints p50/p99 of ``/me`` in both
phases and how many submissions went through. Target: p99 < 100 ms under load.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))

from harness import create_pg_database, drop_pg_database, start_gateway

MAX = 1 << 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def big_sql() -> str:
    head, items = "SELECT id, holder FROM accounts WHERE id IN (", []
    size = len(head) + 2
    i = 0
    while size < MAX - 16:
        item = str(100000 + i)
        items.append(item)
        size += len(item) + 2
        i += 1
    return head + ", ".join(items) + ")"


def big_python() -> str:
    lines, size, i = [], 0, 0
    while size < MAX - 64:
        line = f"value_{i} = compute({i}, key='k{i}') + other[{i}]"
        lines.append(line)
        size += len(line) + 1
        i += 1
    return "\n".join(lines)


def poll_me(url: str, token: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=30) as api:
        while not stop.is_set():
            t0 = time.perf_counter()
            r = api.get("/api/v1/me")
            out.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
            time.sleep(0.005)


def load(url: str, token: str, stop: threading.Event, counts: dict[str, int]) -> None:
    payloads = [("sql", big_sql()), ("py", big_python()), ("sql", "SELECT 1 -- " + "x" * MAX)]
    with httpx.Client(base_url=url, headers={"Authorization": f"token {token}"}, timeout=120) as api:
        i = 0
        while not stop.is_set():
            target, code = payloads[i % len(payloads)]
            i += 1
            r = api.post("/api/v1/tasks", json={"target": target, "code": code, "why": "stall benchmark"})
            counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
            if r.status_code == 201:
                api.post(f"/api/v1/tasks/{r.json()['id']}/cancel", json={"reason": "benchmark"})


def phase(url: str, me_token: str, load_token: str | None, seconds: float, clients: int) -> tuple[list[float], dict[str, int]]:
    stop = threading.Event()
    times: list[float] = []
    counts: dict[str, int] = {}
    threads = [threading.Thread(target=poll_me, args=(url, me_token, stop, times))]
    if load_token:
        threads += [threading.Thread(target=load, args=(url, load_token, stop, counts)) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(300)
    return times, counts


def report(name: str, times: list[float]) -> float:
    p50, p99 = percentile(times, 0.5) * 1000, percentile(times, 0.99) * 1000
    print(f"{name:<12} n={len(times):<6} /me p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   max {max(times) * 1000:7.2f} ms")
    return p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=1, help="clients submitting 1 MiB scripts at once")
    parser.add_argument("--store", choices=["postgresql", "sqlite"], default="postgresql")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cellgate-stall-"))
    db = create_pg_database() if args.store == "postgresql" else f"sqlite:///{work}/gateway.db"
    gw = start_gateway(work, db)
    try:
        me = gw.user("watcher")
        dev = gw.user("dev", ("developers",))
        gw.user("reviewer", ("dba",))
        with gw.admin() as api:
            for name, kind in (("sql", {"kind": "sql", "dialect": "postgresql"}), ("py", {"kind": "python"})):
                r = api.put(f"/api/v1/targets/{name}", json={"review_groups": ["dba"], **kind,
                                                             "policy": {"auto_approve": "read-only"}})
                assert r.status_code == 200, r.text
        phase(gw.url, me, None, 2, 0)  # warm-up
        base, _ = phase(gw.url, me, None, args.seconds, 0)
        loaded, counts = phase(gw.url, me, dev, args.seconds, args.clients)
        print(f"cellgate analysis stall: gateway store {args.store}, {args.seconds:g} s per phase, "
              f"{args.clients} client(s) submitting ~1 MiB scripts")
        report("alone", base)
        p99 = report("under load", loaded)
        print(f"submissions: {sum(counts.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})")
        print(f"target p99 < 100 ms: {'met' if p99 < 100 else 'NOT met'}")
    finally:
        gw.proc.stop()
        if args.store == "postgresql":
            drop_pg_database(db)


if __name__ == "__main__":
    main()
