"""Row estimates on the read-only credential: EXPLAIN only, nothing executed (real servers)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from databases import MARIADB_URL, mariadb
from readonly_roles import PG_ADMIN, mariadb_readonly_url, pg_readonly_url

from cellgate.agent import explain
from cellgate.agent.config import Target
from cellgate.agent.explain import MAX_STATEMENTS, ExplainError
from cellgate.agent.timeouts import Timeouts


def estimate(target: Target, statements: list[str]) -> list[int]:
    return explain.estimate(target, statements, statement_timeout=Timeouts().explain)


def _target(url: str, readonly_url: str | None, dialect: str) -> Target:
    return Target(name="t1", kind="sql", display_name="t1", dialect=dialect, url=url, readonly_url=readonly_url)


@pytest.fixture
def pg_table():
    name = f"cg_explain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, status text)")
        conn.execute(f"INSERT INTO {name} SELECT g, 'open' FROM generate_series(1, 200) g")
        conn.execute(f"ANALYZE {name}")
        yield conn, name
        conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def maria_table():
    name = f"cg_explain_{uuid.uuid4().hex[:8]}"
    conn = mariadb()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (id INT PRIMARY KEY, status VARCHAR(10))")
        cur.executemany(f"INSERT INTO {name} VALUES (%s, 'open')", [(i,) for i in range(1, 301)])
        cur.execute(f"ANALYZE TABLE {name}")
        cur.fetchall()
    yield conn, name
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {name}")
    conn.close()


@pytest.mark.postgres
def test_postgres_estimate_uses_the_read_only_credential(pg_table):
    conn, name = pg_table
    target = _target(PG_ADMIN, pg_readonly_url(), "postgresql")
    rows = estimate(target, [f"UPDATE {name} SET status = 'closed' WHERE id <= 20", f"DELETE FROM {name}"])
    assert 10 <= rows[0] <= 40 and rows[1] == 200
    assert conn.execute(f"SELECT count(*) FROM {name} WHERE status = 'open'").fetchone()[0] == 200


@pytest.mark.postgres
def test_postgres_never_executes(pg_table):
    conn, name = pg_table
    target = _target(PG_ADMIN, pg_readonly_url(), "postgresql")
    started = time.monotonic()
    estimate(target, [f"DELETE FROM {name} WHERE id = (SELECT 1 FROM pg_sleep(3))"])
    assert time.monotonic() - started < 2
    with pytest.raises(ExplainError, match="only single UPDATE or DELETE"):
        estimate(target, [f"DELETE FROM {name}; DROP TABLE {name}"])
    with pytest.raises(ExplainError, match="only single"):
        estimate(target, [f"WITH gone AS (DELETE FROM {name} RETURNING 1) DELETE FROM {name}"])
    assert estimate(target, [f"DELETE FROM {name} WHERE status = 'open' RETURNING id"]) == [200]
    assert conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 200


def test_no_estimate_without_a_read_only_credential():
    target = _target(PG_ADMIN, None, "postgresql")
    with pytest.raises(ExplainError, match=r"no read-only credential .*readonly_url_env"):
        estimate(target, ["DELETE FROM t"])
    with pytest.raises(ExplainError, match="no row estimate on sqlite"):
        estimate(_target("sqlite:///x.db", None, "sqlite"), ["DELETE FROM t"])


@pytest.mark.mariadb
def test_mariadb_estimate_in_a_read_only_session(maria_table):
    conn, name = maria_table
    target = _target(MARIADB_URL, mariadb_readonly_url(), "mariadb")
    rows = estimate(target, [f"DELETE FROM {name} WHERE id <= 50", f"UPDATE {name} SET status = 'x' WHERE id IN (1, 2, 3)"])
    assert 40 <= rows[0] <= 60 and 1 <= rows[1] <= 5
    with conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {name} WHERE status = 'open'")
        assert cur.fetchone()[0] == 300


@pytest.mark.mariadb
@pytest.mark.parametrize("where,message", [
    ("id = (SELECT SLEEP(5))", "subquery"),
    ("id = SLEEP(5)", "calls a function"),
    ("id = `sleep` (5)", "calls a function"),
    ("id IN (SELECT id FROM mysql.user)", "subquery"),
    ("id = 1 /*! OR SLEEP(5) */", "comment"),
])
def test_mariadb_skips_what_explain_would_evaluate(maria_table, where, message):
    _, name = maria_table
    target = _target(MARIADB_URL, mariadb_readonly_url(), "mariadb")
    started = time.monotonic()
    with pytest.raises(ExplainError, match=message):
        estimate(target, [f"DELETE FROM {name} WHERE {where}"])
    assert time.monotonic() - started < 1


@pytest.mark.mariadb
def test_the_statement_cap(maria_table):
    _, name = maria_table
    target = _target(MARIADB_URL, mariadb_readonly_url(), "mariadb")
    rows = estimate(target, [f"DELETE FROM {name} WHERE id = {i}" for i in range(1, 13)])
    assert len(rows) == MAX_STATEMENTS
