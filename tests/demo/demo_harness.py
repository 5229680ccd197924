"""`cellgate demo` as a subprocess in a temporary working folder, on free ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

CELLGATE = str(Path(sys.executable).parent / "cellgate")


def free_port_pair() -> int:
    """A port P with P+1 free too (the demo's JupyterLab default)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65535:
            with socket.socket() as s2:
                try:
                    s2.bind(("127.0.0.1", port + 1))
                    return port
                except OSError:
                    continue
    raise RuntimeError("no free pair of ports")


def get(url: str, token: str | None = None, timeout: float = 10.0) -> tuple[int, Any]:
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def post(url: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"token {token}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class DemoRun:
    cwd: Path
    state_dir: Path
    port: int = field(default_factory=free_port_pair)
    proc: subprocess.Popen[bytes] | None = None
    out: Path | None = None

    def start(self, *extra: str) -> None:
        self.cwd.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
        env.update(JUPYTER_CONFIG_DIR=str(self.cwd / ".jupyter-config"), JUPYTER_RUNTIME_DIR=str(self.cwd / ".jupyter-runtime"),
                   CELLGATE_CONFIG_DIR=str(self.cwd / ".cellgate-config"))
        self.out = self.cwd / f"demo-{self.port}.out"
        (self.cwd / "demo.json").unlink(missing_ok=True)
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([CELLGATE, "demo", "--no-browser", "--port", str(self.port),
                                          "--dir", str(self.state_dir), *extra],
                                         cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def output(self) -> str:
        assert self.out is not None
        return self.out.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        assert self.proc is not None
        path = self.cwd / "demo.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"cellgate demo exited with {self.proc.returncode}:\n{self.output()}")
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except ValueError:
                    pass  # being written
            time.sleep(0.25)
        raise AssertionError(f"demo.json did not appear within {timeout} s:\n{self.output()}")

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        return psutil.Process(self.proc.pid).children(recursive=True)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def close(self) -> None:
        """Last resort for a failed test: no process may outlive it."""
        if self.proc is None:
            return
        leftovers = []
        if self.proc.poll() is None:
            leftovers = self.descendants()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for p in leftovers:
            try:
                p.kill()
            except psutil.Error:
                pass


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (a zombie counts as gone: it is only waiting for its parent)."""
    result = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                result.append(p)
        except psutil.NoSuchProcess:
            pass
    return result
