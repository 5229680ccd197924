"""Fixtures for the SQL kernel tests (the harness is in ``sql_kernel_harness``)."""

from __future__ import annotations

import uuid

import pytest
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
