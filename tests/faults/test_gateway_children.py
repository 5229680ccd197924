"""A gateway killed with SIGKILL leaves no process behind: its analysis workers (gateway/analysis.py)
notice their parent is gone and exit (nothing else would stop them: no pool is closed)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from harness import start_gateway, wait_until


def test_the_analysis_workers_of_a_killed_gateway_exit(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, f"sqlite:///{tmp_path}/gw.db")
    try:
        gateway = psutil.Process(gw.proc.proc.pid)
        workers = wait_until(lambda: [c for c in gateway.children(recursive=True)
                                      if "multiprocessing.spawn" in " ".join(c.cmdline())], 30, "the analysis workers")
        left = gateway.children(recursive=True)
        gw.proc.proc.send_signal(signal.SIGKILL)
        gw.proc.proc.wait(10)
        gone, alive = psutil.wait_procs(left, timeout=10)
        assert not alive, [p.cmdline() for p in alive]
        assert workers and set(workers) <= set(gone)
    finally:
        gw.proc.stop()
