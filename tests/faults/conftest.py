"""The fault tests' fixtures: one gateway per module, and per test an agent behind a TCP proxy (faults_harness.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from faults_harness import GRACE, TARGET_PG, World
from harness import Gateway, agent_config, bind_agent, create_pg_database, drop_pg_database, start_gateway
from tcp_proxy import TcpProxy


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway for a module's tests (each test has its own agent, proxy and table)."""
    db = create_pg_database()
    gw = start_gateway(tmp_path_factory.mktemp("faults-gw"), db, config=f"c.Gateway.agent_grace = {GRACE}\n")
    gw.set_target("py")
    try:
        yield gw
    finally:
        gw.proc.stop()
        drop_pg_database(db)


@pytest.fixture
def world(gateway: Gateway, tmp_path: Path) -> Iterator[World]:
    table = f"faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(TARGET_PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (tag text NOT NULL)")
    proxy = TcpProxy(int(gateway.url.rsplit(":", 1)[1]))
    target = f"py{uuid.uuid4().hex[:6]}"
    config = agent_config(tmp_path / "agent.toml", f"faults-{uuid.uuid4().hex[:6]}",
                          {target: {"kind": "python", "url": "sqlite:///:memory:"}})
    config.write_text(config.read_text().replace("[agent]\n", f"[agent]\nstate_dir = \"{tmp_path / 'agent-state'}\"\n", 1))
    settings = tmp_path / "agent_config.py"
    settings.write_text("c.Agent.reconnect_delay_min = 0.2\nc.Agent.reconnect_delay_max = 1.0\n")
    settings.chmod(0o600)
    gateway.set_target(target)
    token, _ = bind_agent(gateway, config)
    w = World(gw=gateway, proxy=proxy, workdir=tmp_path, config=config, agent_settings=settings, token=token,
              dev=gateway.user("dev"), table=table, target=target)
    try:
        yield w
    finally:
        if w.agent is not None:
            w.agent.stop()
        proxy.close()
        with psycopg.connect(TARGET_PG, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
