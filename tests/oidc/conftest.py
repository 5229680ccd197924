"""One OpenID provider and one gateway signing in with it, for the whole OIDC test session.

Ports are chosen first so that the provider's client is registered with the gateways'
redirect URIs: the main gateway's and the one configured with an aliased issuer.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))

from harness import Gateway, free_port
from oidc_harness import ALIAS_PATH, Provider, start_oidc_gateway, start_provider


@pytest.fixture(scope="session")
def oidc_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("oidc")


@pytest.fixture(scope="session")
def gateway_ports() -> dict[str, int]:
    return {"main": free_port(), "alias": free_port()}


@pytest.fixture(scope="session")
def provider(oidc_workdir: Path, gateway_ports: dict[str, int]) -> Iterator[Provider]:
    uris = [f"http://127.0.0.1:{port}/oauth/callback" for port in gateway_ports.values()]
    prov = start_provider(oidc_workdir, free_port(), uris)
    yield prov
    prov.proc.stop()


@pytest.fixture(scope="session")
def gateway(oidc_workdir: Path, provider: Provider, gateway_ports: dict[str, int]) -> Iterator[Gateway]:
    """Admins from the provider's ``cellgate-admins``; open sockets re-checked every second."""
    gw = start_oidc_gateway(oidc_workdir, gateway_ports["main"], provider.issuer, config=(
        "c.OIDC.admin_groups = ['cellgate-admins']\n"
        "c.OIDC.token_lifetime_hours = 1.5\n"
        "c.Gateway.socket_recheck_interval = 1.0\n"))
    yield gw
    gw.proc.stop()


@pytest.fixture(scope="session")
def alias_gateway(oidc_workdir: Path, provider: Provider, gateway_ports: dict[str, int]) -> Iterator[Gateway]:
    """Configured with the issuer ``PROVIDER/other``, whose discovery document the provider serves
    as its own, while its tokens (and its ``iss`` answers) carry the real issuer."""
    gw = start_oidc_gateway(oidc_workdir, gateway_ports["alias"], provider.issuer + ALIAS_PATH, name="alias")
    yield gw
    gw.proc.stop()
