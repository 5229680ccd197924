from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nbext_harness import Gateway, JupyterServer


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gw = Gateway(tmp_path_factory.mktemp("gateway"))
    try:
        gw.start()
        gw.start_agent()
        yield gw
    finally:
        gw.close()


@pytest.fixture(scope="module")
def jupyter(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    """A Jupyter server in gateway mode, as user dev."""
    server = JupyterServer(tmp_path_factory.mktemp("jupyter"), {"CELLGATE_URL": gateway.url,
                                                                 "CELLGATE_TOKEN": gateway.dev_token})
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def make_jupyter(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], JupyterServer]]:
    started: list[JupyterServer] = []

    def _make(env: dict[str, str]) -> JupyterServer:
        server = JupyterServer(tmp_path, env)
        started.append(server)
        server.start()
        return server

    yield _make
    for server in started:
        server.close()
