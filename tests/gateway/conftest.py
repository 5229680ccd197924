"""Fixtures for the gateway's unit tests: one store switch, and a seeder for users, targets, tasks.

``store`` runs each test on SQLite (a file in ``tmp_path``, copied from one migrated once) and
on PostgreSQL (a database created for the test module on 127.0.0.1:5432, migrated once, its rows
truncated before each test, dropped at the end). ``empty_url`` is the same switch for a store
with no schema at all. PostgreSQL is never skipped: if the server cannot be reached, the test
fails.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from databases import PG_MAINTENANCE
from gateway_harness import Seed, empty_pg

from cellgate.gateway.audit import GENESIS
from cellgate.gateway.models import Base
from cellgate.gateway.store import Store

PG_ADMIN = PG_MAINTENANCE
PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432"


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is required by the gateway tests and is unreachable: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module; its SQLAlchemy URL."""
    name = f"cellgate_unit_{uuid.uuid4().hex[:12]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_BASE}/{name}"
    finally:
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def empty_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The URL of an empty store (nothing migrated yet)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    url = request.getfixturevalue("pg_database")
    empty_pg(url)
    return url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated once; each test gets a copy of it."""
    path = tmp_path_factory.mktemp("template") / "migrated.db"
    Store(f"sqlite:///{path}").close()
    return path


@pytest.fixture(scope="module")
def pg_module_store(pg_database: str) -> Iterator[Store]:
    """The module's PostgreSQL database migrated by ``Store(url)``; one Store (one engine) per module."""
    empty_pg(pg_database)
    st = Store(pg_database)
    try:
        yield st
    finally:
        st.close()


def reset_pg(url: str) -> None:
    """Back to a freshly migrated store: no rows, sequences restarted, the chain at genesis.

    (DELETE, not TRUNCATE: for a handful of rows it is ten times faster.)
    """
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn, conn.transaction():
        for table in reversed(Base.metadata.sorted_tables):
            if table.name != "audit_head":
                conn.execute(f'DELETE FROM "{table.name}"')
        conn.execute("UPDATE audit_head SET last_id = 0, last_hash = %s", (GENESIS,))
        for (seq,) in conn.execute("SELECT relname FROM pg_class WHERE relkind = 'S'").fetchall():
            conn.execute(f'ALTER SEQUENCE "{seq}" RESTART')


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store with no rows, on SQLite and on PostgreSQL."""
    if request.param == "postgres":
        yield request.getfixturevalue("pg_store")
        return
    shutil.copy(request.getfixturevalue("sqlite_template"), tmp_path / "t.db")
    st = Store(f"sqlite:///{tmp_path}/t.db")
    try:
        yield st
    finally:
        st.close()


@pytest.fixture
def pg_store(pg_module_store: Store) -> Store:
    """PostgreSQL only (the races between threads): the module's store, emptied."""
    reset_pg(pg_module_store.url)
    return pg_module_store


@pytest.fixture
def seed(store: Store) -> Seed:
    return Seed(store)
