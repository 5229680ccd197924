"""Fixtures for the CLI tests: a fake gateway in a thread and the real `cellgate` script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .fake_gateway import FakeGateway

CELLGATE = Path(sys.executable).parent / "cellgate"


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def cli_env(gateway: FakeGateway, tmp_path: Path) -> dict[str, str]:
    """Environment for the `cellgate` subprocess: the fake gateway, alice's token, UTC."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    env.update(CELLGATE_URL=gateway.url, CELLGATE_TOKEN="good-token",
               CELLGATE_CONFIG_DIR=str(tmp_path / "config"), TZ="UTC", PYTHONUNBUFFERED="1")
    return env


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `cellgate ARGS...`; returns the completed process (text stdout/stderr)."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CELLGATE), *args], input=input, capture_output=True, text=True,
                              env=env if env is not None else cli_env, timeout=timeout)

    return run
