"""Fixtures for the SQL kernel tests (the harness is in ``sql_kernel_harness``)."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
from databases import mariadb
from readonly_roles import mariadb_readonly_url, pg_readonly_url
from sql_kernel_harness import MARIADB_URL, PG_URL, SQLKernelHandle, require_mariadb, require_postgres


@pytest.fixture
def table_name() -> str:
    return f"cg_test_{uuid.uuid4().hex[:10]}"


def _kernel(url: str, **env: str):
    handle = SQLKernelHandle(url, CELLGATE_ROW_LIMIT="5", **env)
    try:
        yield handle
    finally:
        handle.close()


@pytest.fixture(scope="module")
def pg_kernel():
    require_postgres()
    yield from _kernel(PG_URL, CELLGATE_STATEMENT_TIMEOUT="30")


@pytest.fixture(scope="module")
def mariadb_kernel():
    require_mariadb()
    yield from _kernel(MARIADB_URL, CELLGATE_STATEMENT_TIMEOUT="30")


@pytest.fixture(scope="module")
def sqlite_kernel(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite") / "test.db"
    yield from _kernel(f"sqlite:///{path}", CELLGATE_STATEMENT_TIMEOUT="30")


@pytest.fixture(scope="module")
def pg_ro_kernel():
    """A kernel as the agent starts it: gated, with the read-only credential of ``cellgate_ro``."""
    require_postgres()
    yield from _kernel(PG_URL, CELLGATE_GATED="1", CELLGATE_TARGET_READONLY_URL=pg_readonly_url(),
                       CELLGATE_STATEMENT_TIMEOUT="30")


@pytest.fixture(scope="module")
def mariadb_ro_kernel():
    require_mariadb()
    # the read-only account is granted table by table, and one with no grant in a database cannot
    # connect to it (error 1044): as in production, the database holds a table it may read
    conn = mariadb()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS cg_ro_present (id INT)")
    finally:
        conn.close()
    yield from _kernel(MARIADB_URL, CELLGATE_GATED="1", CELLGATE_TARGET_READONLY_URL=mariadb_readonly_url(),
                       CELLGATE_STATEMENT_TIMEOUT="30")


@pytest.fixture(scope="module")
def sqlite_ro_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("sqlite-ro") / "ro.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    conn.close()
    return path


@pytest.fixture(scope="module")
def sqlite_ro_kernel(sqlite_ro_path):
    yield from _kernel(f"sqlite:///{sqlite_ro_path}", CELLGATE_GATED="1", CELLGATE_STATEMENT_TIMEOUT="30")
