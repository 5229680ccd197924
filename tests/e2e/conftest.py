"""One gateway, one agent and one jupyter_server (gateway mode, as ``dev``) for the e2e tests."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (MARIADB, PG_ADMIN, Gateway, Jupyter, Proc, agent_config, create_pg_database,
                     drop_pg_database, start_agent, start_gateway, start_jupyter, wait_online)
from readonly_roles import mariadb_readonly_url, pg_readonly_url

TARGETS = ["pg", "maria", "lite", "py"]


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def store_url(workdir: Path) -> Iterator[str]:
    if os.environ.get("CELLGATE_TEST_STORE") == "sqlite":
        yield f"sqlite:///{workdir}/gateway.db"
        return
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(scope="session")
def gateway(workdir: Path, store_url: str) -> Iterator[Gateway]:
    gw = start_gateway(workdir, store_url)
    for name in TARGETS:
        gw.set_target(name)
    yield gw
    gw.proc.stop()


@pytest.fixture(scope="session")
def lite_db(workdir: Path) -> Path:
    path = workdir / "lite.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, holder TEXT, balance INTEGER)")
        conn.executemany("INSERT INTO accounts VALUES (?, ?, ?)", [(i, f"holder {i}", i * 100) for i in range(1, 21)])
    return path


@pytest.fixture(scope="session")
def agent(gateway: Gateway, workdir: Path, lite_db: Path) -> Iterator[Proc]:
    pg_url = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")
    config = agent_config(workdir / "agent.toml", "e2e-agent", {
        "pg": {"kind": "sql", "url": pg_url, "readonly_url": pg_readonly_url(pg_url), "statement_timeout": 60},
        "maria": {"kind": "sql", "url": MARIADB, "readonly_url": mariadb_readonly_url(), "statement_timeout": 60},
        "lite": {"kind": "sql", "url": f"sqlite:///{lite_db}"},
        "py": {"kind": "python", "url": f"sqlite:///{lite_db}"},
    })
    proc = start_agent(gateway, workdir, config, "e2e-agent")
    wait_online(gateway, TARGETS, proc.log)
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def users(gateway: Gateway) -> dict[str, str]:
    return {
        "dev": gateway.user("dev", ("developers",)),
        "dev2": gateway.user("dev2", ("developers",)),
        "reviewer": gateway.user("reviewer", ("dba",)),
        "reviewer2": gateway.user("reviewer2", ("dba",)),
        "boss": gateway.user("boss", ("dba",), is_admin=True),
    }


@pytest.fixture(scope="session")
def jupyter(gateway: Gateway, agent: Proc, users: dict[str, str], workdir: Path) -> Iterator[Jupyter]:
    jp = start_jupyter(gateway, users["dev"], workdir, "jupyter-dev")
    yield jp
    jp.proc.stop()


@pytest.fixture(scope="session")
def jupyter2(gateway: Gateway, agent: Proc, users: dict[str, str], workdir: Path) -> Iterator[Jupyter]:
    jp = start_jupyter(gateway, users["dev2"], workdir, "jupyter-dev2")
    yield jp
    jp.proc.stop()
