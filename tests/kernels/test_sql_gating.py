"""What runs is what the gateway analysed: the gated kernel's checks, one statement per protocol call."""

from __future__ import annotations

import sqlite3

import psycopg
import pymysql
import pytest
from databases import mariadb

from cellgate.kernels.sql import gating
from cellgate.kernels.sql.dialects import dialect_for
from cellgate.kernels.sql.target import ConfigError, Settings, parse_target_url
from sql_kernel_harness import MARIADB_URL, PG_URL, TABLE, SQLKernelHandle, require_mariadb, require_postgres


def _meta(statements, mode="read-write"):
    return {"cellgate": {"task_id": 7, "statements": statements, "mode": mode}}


def test_plan_ungated_splits_and_runs_read_write():
    plan = gating.plan("SELECT 1; SELECT 2", "postgresql", _meta(["nope"], "read-only"), gated=False)
    assert plan == gating.Plan(["SELECT 1", "SELECT 2"], "read-write")


@pytest.mark.parametrize("metadata,message", [
    ({}, "carries no metadata.cellgate"),
    ({"cellgate": "SELECT 1"}, "carries no metadata.cellgate"),
    (_meta("SELECT 1"), "must be a list"),
    (_meta(["SELECT 1"]), "gateway analysed 1 different"),
    (_meta(["SELECT 1; DROP TABLE t"]), "gateway analysed 1 different"),
    (_meta(["SELECT 1", "DROP TABLE t"], "admin"), "mode must be one of"),
])
def test_plan_gated_refusals(metadata, message):
    with pytest.raises(gating.Refused, match=message):
        gating.plan("SELECT 1; DROP TABLE t", "postgresql", metadata, gated=True)


def test_plan_gated_accepts_the_gateways_split():
    plan = gating.plan("SELECT 1;\n DROP TABLE t;", "mysql", _meta(["SELECT 1", "DROP TABLE t"], "read-only"), gated=True)
    assert (plan.statements, plan.mode) == (["SELECT 1", "DROP TABLE t"], "read-only")
    assert plan.calls() == [("SELECT 1", None), ("DROP TABLE t", None)]  # no template values: sent raw


def test_settings_read_the_gate_and_the_readonly_url():
    env = {"CELLGATE_TARGET_URL": "postgresql://app:rw-pw@h/db", "CELLGATE_GATED": "1",
           "CELLGATE_TARGET_READONLY_URL": "postgresql://ro:ro-pw@h/db"}
    s = Settings.from_env(env)
    assert s.gated and s.readonly_target.user == "ro" and not s.readonly
    assert set(s.secrets()) >= {"rw-pw", "ro-pw"} and "ro-pw" not in repr(s)
    ro = s.for_readonly()
    assert ro.readonly and ro.target.user == "ro"
    assert Settings.from_env({"CELLGATE_TARGET_URL": "postgresql://h/db"}).for_readonly() is None
    assert Settings.from_env({"CELLGATE_TARGET_URL": "sqlite:///x.db"}).for_readonly().target.database == "x.db"
    assert Settings.from_env({"CELLGATE_TARGET_URL": "sqlite://"}).for_readonly() is None
    with pytest.raises(ConfigError, match="CELLGATE_TARGET_READONLY_URL is a mysql URL"):
        Settings.from_env({**env, "CELLGATE_TARGET_READONLY_URL": "mysql://ro:pw@h/db"})


# -- the gated kernel -------------------------------------------------------------------------------


@pytest.fixture
def gated_sqlite(tmp_path):
    path = tmp_path / "g.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
    conn.close()
    k = SQLKernelHandle(f"sqlite:///{path}", CELLGATE_GATED="1")
    try:
        yield k, path
    finally:
        k.close()


def _tables(path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    finally:
        conn.close()


def test_gated_kernel_refuses_a_request_without_metadata(gated_sqlite):
    k, path = gated_sqlite
    run = k.run("CREATE TABLE made (a INTEGER)")
    assert run.status == "error" and run.reply["ename"] == "CellgateRefused"
    assert "no metadata.cellgate" in run.reply["evalue"] and "nothing ran" in run.reply["evalue"]
    assert "Connected" not in run.stdout  # not even a connection was opened
    assert _tables(path) == ["t"]


def test_gated_kernel_refuses_statements_it_was_not_sent(gated_sqlite):
    k, path = gated_sqlite
    run = k.run("SELECT 1; DROP TABLE t", metadata=_meta(["SELECT 1"]))
    assert run.reply["ename"] == "CellgateRefused" and "nothing ran" in run.reply["evalue"]
    run = k.run("SELECT 1; DROP TABLE t", metadata=_meta(["SELECT 1; DROP TABLE t"]))
    assert run.reply["ename"] == "CellgateRefused"
    assert _tables(path) == ["t"]


def test_gated_kernel_runs_what_the_gateway_sent(gated_sqlite):
    k, _path = gated_sqlite
    run = k.ok("INSERT INTO t VALUES (1); SELECT count(*) AS n FROM t",
               metadata=_meta(["INSERT INTO t VALUES (1)", "SELECT count(*) AS n FROM t"]))
    assert run.tables[-1][TABLE]["data"] == [{"n": 1}]
    assert k.gated("SELECT a FROM t").tables[0][TABLE]["data"] == [{"a": 1}]  # read-only mode, same file


def test_ungated_kernel_ignores_metadata(tmp_path):
    k = SQLKernelHandle(f"sqlite:///{tmp_path / 'u.db'}")
    try:
        k.ok("CREATE TABLE u (a INTEGER); INSERT INTO u VALUES (1)", metadata=_meta(["something else"], "read-only"))
        assert k.ok("SELECT count(*) AS n FROM u").tables[0][TABLE]["data"] == [{"n": 1}]
    finally:
        k.close()


# -- one statement per protocol call, on each server path --------------------------------------------

TWO = "INSERT INTO {t} VALUES (1); INSERT INTO {t} VALUES (2)"


def _session_dialect(url: str, readonly: bool = False):
    settings = Settings(target=parse_target_url(url), row_limit=10, statement_timeout=30)
    if readonly:
        settings = Settings(target=settings.target, row_limit=10, statement_timeout=30, readonly=True)
    dialect = dialect_for(settings)
    return dialect, dialect.connect()


@pytest.mark.postgres
@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
def test_postgres_refuses_two_statements_in_one_call(table_name, readonly):
    require_postgres()
    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table_name} (a int)")
        try:
            dialect, conn = _session_dialect(PG_URL, readonly)
            try:
                with pytest.raises(psycopg.errors.SyntaxError, match="cannot insert multiple commands"):
                    dialect.execute(conn, TWO.format(t=table_name))
                with pytest.raises(psycopg.errors.SyntaxError, match="cannot insert multiple commands"):
                    dialect.execute(conn, f"SELECT 1; DROP TABLE {table_name}")
            finally:
                conn.close()
            assert admin.execute(f"SELECT count(*) FROM {table_name}").fetchone()[0] == 0
        finally:
            admin.execute(f"DROP TABLE IF EXISTS {table_name}")


@pytest.mark.mariadb
@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
def test_mariadb_refuses_two_statements_in_one_call(table_name, readonly):
    require_mariadb()
    admin = mariadb()
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE TABLE {table_name} (a INT)")
        dialect, conn = _session_dialect(MARIADB_URL, readonly)
        try:
            with pytest.raises(pymysql.err.ProgrammingError) as info:
                dialect.execute(conn, TWO.format(t=table_name))
            assert info.value.args[0] == 1064
        finally:
            conn.close()
        with admin.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table_name}")
            assert cur.fetchone()[0] == 0
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {table_name}")
        admin.close()


@pytest.mark.parametrize("readonly", [False, True], ids=["read-write", "read-only"])
def test_sqlite_refuses_two_statements_in_one_call(tmp_path, readonly):
    path = tmp_path / "two.db"
    with sqlite3.connect(path) as admin:
        admin.execute("CREATE TABLE t (a INTEGER)")
    admin.close()
    dialect, conn = _session_dialect(f"sqlite:///{path}", readonly)
    try:
        two = "SELECT 1; SELECT 2" if readonly else TWO.format(t="t")  # (read-only refuses INSERT anyway)
        with pytest.raises(sqlite3.ProgrammingError, match="one statement at a time"):
            dialect.execute(conn, two)
    finally:
        conn.close()
    with sqlite3.connect(path) as admin:
        assert admin.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    admin.close()


@pytest.mark.postgres
def test_postgres_extended_protocol_keeps_behaviour(pg_kernel, table_name):
    """DDL, transaction control, SET, LISTEN, VACUUM and types work as with the simple protocol."""
    try:
        run = pg_kernel.ok(
            f"CREATE TABLE {table_name} (a int, j jsonb, n numeric, d date, e text[]);"
            f"BEGIN; INSERT INTO {table_name} VALUES (1, '{{\"a\":1}}', 1.50, '2024-01-01', '{{x,y}}'); COMMIT;"
            "SET search_path = public; LISTEN cellgate_test; "
            f"VACUUM {table_name}; SELECT * FROM {table_name}"
        )
        assert "CREATE TABLE" in run.stdout and "COMMIT" in run.stdout and "VACUUM" in run.stdout
        assert run.tables[-1][TABLE]["data"] == [{"a": 1, "j": {"a": 1}, "n": "1.50", "d": "2024-01-01", "e": ["x", "y"]}]
        copy = pg_kernel.run(f"COPY {table_name} TO STDOUT")
        assert copy.reply["ename"] == "FeatureNotSupported" and "COPY" in copy.reply["evalue"]
        assert pg_kernel.ok("SELECT 5 AS five").tables[0][TABLE]["data"] == [{"five": 5}]
        with psycopg.connect(PG_URL) as admin:  # no named prepared statement left behind
            left = admin.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0]
        assert left == 0
    finally:
        pg_kernel.ok(f"DROP TABLE IF EXISTS {table_name}")


@pytest.mark.postgres
def test_postgres_gated_cell_with_a_begin_atomic_body():
    """A statement holding ``;`` inside its body is one command to the server's parser too."""
    require_postgres()
    k = SQLKernelHandle(PG_URL, CELLGATE_GATED="1")
    try:
        run = k.gated("CREATE OR REPLACE FUNCTION cg_atomic() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END;"
                      "SELECT cg_atomic() AS v; DROP FUNCTION cg_atomic()", mode="read-write")
        assert run.status == "ok", run.reply
        assert run.tables[0][TABLE]["data"] == [{"v": 2}] and "DROP FUNCTION" in run.stdout
    finally:
        k.close()
