"""Read-only mode through the real kernel: the database itself refuses every write.

Each attempt runs as the gateway would send an auto-approved cell (``mode: "read-only"``) on a
gated kernel with the ``cellgate_ro`` credential (tests/readonly_roles.py), and each test checks
afterwards, as a superuser, that nothing changed.
"""

from __future__ import annotations

import os
import sqlite3

import psycopg
import pymysql
import pytest
from databases import DATABASE, mariadb
from readonly_roles import ROLE, mariadb_readonly_url

from sql_kernel_harness import MARIADB_URL, PG_URL, TABLE, SQLKernelHandle, require_mariadb, require_postgres

# -- PostgreSQL -------------------------------------------------------------------------------------

PG_COPY_FILE = "/tmp/cellgate-ro-definer-copy.txt"

PG_SETUP = [
    "DROP TABLE IF EXISTS cg_ro_t CASCADE",
    "CREATE TABLE cg_ro_t (id int PRIMARY KEY, v text)",
    "INSERT INTO cg_ro_t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    f"GRANT SELECT ON cg_ro_t TO {ROLE}",
    "DROP SEQUENCE IF EXISTS cg_ro_seq",
    "CREATE SEQUENCE cg_ro_seq",
    "CREATE OR REPLACE FUNCTION cg_archive_all() RETURNS SETOF int LANGUAGE sql AS 'DELETE FROM cg_ro_t RETURNING 1'",
    "CREATE OR REPLACE FUNCTION cg_archive_definer() RETURNS SETOF int LANGUAGE sql SECURITY DEFINER "
    "AS 'DELETE FROM cg_ro_t RETURNING 1'",
    "CREATE EXTENSION IF NOT EXISTS dblink",
    "CREATE OR REPLACE FUNCTION cg_copy_definer() RETURNS int LANGUAGE plpgsql SECURITY DEFINER "
    f"AS $$BEGIN COPY (SELECT 1) TO '{PG_COPY_FILE}'; RETURN 1; END$$",
    "CREATE OR REPLACE VIEW cg_lock_view AS SELECT pg_advisory_lock(4242) IS NOT NULL AS locked",
]


@pytest.fixture(scope="module")
def pg_admin(pg_ro_kernel):
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        for statement in PG_SETUP:
            conn.execute(statement)
        yield conn
        conn.execute("DROP VIEW IF EXISTS cg_lock_view")
        conn.execute("DROP FUNCTION IF EXISTS cg_archive_all(), cg_archive_definer(), cg_copy_definer()")
        conn.execute("DROP SEQUENCE IF EXISTS cg_ro_seq")
        conn.execute("DROP TABLE IF EXISTS cg_ro_t, cg_ro_new")
        conn.execute("DROP EXTENSION IF EXISTS dblink")


def _pg_state(conn: psycopg.Connection) -> tuple:
    return (
        conn.execute("SELECT count(*), string_agg(v, ',' ORDER BY id) FROM cg_ro_t").fetchone(),
        conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()[0],
        conn.execute("SELECT last_value, is_called FROM cg_ro_seq").fetchone(),
        conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'cg_ro_new'").fetchone()[0],
    )


def test_postgres_reads_run_read_only(pg_ro_kernel, pg_admin):
    run = pg_ro_kernel.gated("SELECT id, v FROM cg_ro_t ORDER BY id; SHOW transaction_read_only")
    assert run.status == "ok", run.reply
    assert f"Connected to postgresql://{ROLE}@127.0.0.1:5432/{DATABASE} (read-only)" in run.stdout
    first, second = run.tables
    assert [r["v"] for r in first[TABLE]["data"]] == ["a", "b", "c"]
    assert second[TABLE]["data"] == [{"transaction_read_only": "on"}]
    assert "ro-Secret" not in run.everything()


PG_REFUSED = [
    "INSERT INTO cg_ro_t VALUES (4, 'd')",
    "UPDATE cg_ro_t SET v = 'x'",
    "DELETE FROM cg_ro_t",
    "SELECT cg_archive_all()",
    "SELECT cg_archive_definer()",  # runs as its superuser owner: the READ ONLY transaction stops it
    "SELECT lo_from_bytea(0, 'payload')",
    "SELECT lo_create(0)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT nextval('cg_ro_seq')",
    "SELECT set_config('default_transaction_read_only', 'off', false); INSERT INTO cg_ro_t VALUES (4, 'd')",
    "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; INSERT INTO cg_ro_t VALUES (4, 'd')",
    "SET default_transaction_read_only = off; COMMIT; INSERT INTO cg_ro_t VALUES (4, 'd')",
    "COMMIT; INSERT INTO cg_ro_t VALUES (4, 'd')",
    "SET TRANSACTION READ WRITE",
    "ROLLBACK; SET TRANSACTION READ WRITE; DELETE FROM cg_ro_t",
    "CREATE TABLE cg_ro_new (a int)",
    "CREATE TEMP TABLE cg_ro_tmp (a int)",
    "SELECT dblink_exec('host=127.0.0.1 dbname=%DB% user=postgres', 'DELETE FROM cg_ro_t')",  # %DB%: this worker's
    "DO $$BEGIN DELETE FROM cg_ro_t; END$$",
]


@pytest.mark.postgres
@pytest.mark.parametrize("code", PG_REFUSED)
def test_postgres_refuses_writes_in_read_only_mode(pg_ro_kernel, pg_admin, code):
    code = code.replace("%DB%", DATABASE)
    before = _pg_state(pg_admin)
    run = pg_ro_kernel.gated(code)
    assert run.status == "error", (code, run.reply)
    assert _pg_state(pg_admin) == before
    after = pg_ro_kernel.gated("INSERT INTO cg_ro_t VALUES (5, 'e')")  # and the next cell is read-only too
    assert after.status == "error"
    assert _pg_state(pg_admin) == before


@pytest.mark.postgres
def test_postgres_security_definer_functions_are_not_executable(pg_ro_kernel, pg_admin):
    run = pg_ro_kernel.gated("SELECT cg_copy_definer()")
    assert run.status == "error" and "permission denied for function" in run.reply["evalue"], run.reply
    assert not os.path.exists(PG_COPY_FILE)


@pytest.mark.postgres
def test_postgres_advisory_lock_through_a_view_is_refused(pg_ro_kernel, pg_admin):
    run = pg_ro_kernel.gated("SELECT locked FROM cg_lock_view")  # (a view hides the function from the analysis)
    assert run.status == "error" and "permission denied for function pg_advisory_lock" in run.reply["evalue"]
    held = pg_admin.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242").fetchone()
    assert held == (0,)


@pytest.mark.postgres
def test_postgres_session_state_does_not_outlive_the_cell(pg_ro_kernel, pg_admin):
    assert pg_ro_kernel.gated("PREPARE cg_kept AS SELECT 1").status == "ok"  # allowed in a read-only transaction
    run = pg_ro_kernel.gated("EXECUTE cg_kept")
    assert run.status == "error" and "does not exist" in run.reply["evalue"], run.reply  # DISCARD ALL ended it


@pytest.mark.postgres
def test_postgres_cannot_terminate_other_backends(pg_ro_kernel, pg_admin):
    pid = pg_admin.execute("SELECT pg_backend_pid()").fetchone()[0]
    for function in ("pg_terminate_backend", "pg_cancel_backend"):
        run = pg_ro_kernel.gated(f"SELECT {function}({pid})")
        assert run.status == "error" and "permission denied" in run.reply["evalue"], run.reply
    assert pg_admin.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.postgres
def test_postgres_sessions_are_independent(pg_ro_kernel, pg_admin):
    """A SET in a reviewed (read-write) cell does not change how auto-approved reads run."""
    pg_ro_kernel.ok("SET search_path = nowhere; SET standard_conforming_strings = off", metadata=_rw(pg_ro_kernel,
                    "SET search_path = nowhere; SET standard_conforming_strings = off"))
    run = pg_ro_kernel.gated("SELECT count(*) AS n, 'a\\b' AS s FROM cg_ro_t")
    assert run.status == "ok", run.reply
    assert run.tables[0][TABLE]["data"] == [{"n": 3, "s": "a\\b"}]
    pg_ro_kernel.ok("RESET search_path; RESET standard_conforming_strings",
                    metadata=_rw(pg_ro_kernel, "RESET search_path; RESET standard_conforming_strings"))


def _rw(kernel: SQLKernelHandle, code: str) -> dict:
    from cellgate.kernels.sql.split import split_statements

    return {"cellgate": {"task_id": 2, "statements": split_statements(code, kernel.dialect), "mode": "read-write"}}


@pytest.mark.postgres
def test_postgres_read_only_without_credential_is_refused(table_name):
    require_postgres()
    k = SQLKernelHandle(PG_URL, CELLGATE_GATED="1")
    try:
        run = k.gated(f"CREATE TABLE {table_name} (a int)")
        assert run.reply["ename"] == "CellgateRefused"
        assert "readonly_url_env" in run.reply["evalue"] and 'auto_approve = "never"' in run.reply["evalue"]
        assert "Connected" not in run.stdout
        with psycopg.connect(PG_URL) as admin:
            assert admin.execute("SELECT to_regclass(%s)", (table_name,)).fetchone()[0] is None
        assert k.ok("SELECT 1", metadata=_rw(k, "SELECT 1")).status == "ok"  # read-write cells still run
    finally:
        k.close()


# -- MariaDB ----------------------------------------------------------------------------------------

MARIADB_SETUP = [
    "DROP TABLE IF EXISTS cg_ro_t",
    "CREATE TABLE cg_ro_t (id INT PRIMARY KEY, v VARCHAR(10))",
    "INSERT INTO cg_ro_t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    "DROP FUNCTION IF EXISTS cg_archive_all",
    "CREATE FUNCTION cg_archive_all() RETURNS INT MODIFIES SQL DATA BEGIN DELETE FROM cg_ro_t; RETURN 1; END",
    # an invoker's view (the read-only user is granted SQL SECURITY INVOKER views only: a DEFINER view runs as root)
    "CREATE OR REPLACE SQL SECURITY INVOKER VIEW cg_lock_view AS SELECT GET_LOCK('cg_ro_lock', 0) AS locked",
]
OUTFILE = "/tmp/cellgate-ro-outfile.txt"


def _maria() -> pymysql.connections.Connection:
    return mariadb()


@pytest.fixture(scope="module")
def maria_admin(mariadb_ro_kernel):
    conn = _maria()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_log_bin = 0")
        for statement in MARIADB_SETUP:
            cur.execute(statement)
    mariadb_readonly_url()  # the recipe grants table by table: re-run after the schema changed, as documented
    yield conn
    with conn.cursor() as cur:
        cur.execute("DROP FUNCTION IF EXISTS cg_archive_all")
        cur.execute("DROP VIEW IF EXISTS cg_lock_view")
        cur.execute("DROP TABLE IF EXISTS cg_ro_t, cg_ro_new")
    conn.close()


def _maria_state(conn) -> tuple:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*), group_concat(v ORDER BY id) FROM cg_ro_t")
        rows = cur.fetchone()
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'cg_ro_new'", (DATABASE,))
        return rows, cur.fetchone()[0]


@pytest.mark.mariadb
def test_mariadb_reads_run_read_only(mariadb_ro_kernel, maria_admin):
    run = mariadb_ro_kernel.gated("SELECT id, v FROM cg_ro_t ORDER BY id; SELECT @@session.tx_read_only AS ro")
    assert run.status == "ok", run.reply
    assert f"Connected to mysql://{ROLE}@127.0.0.1:3306/{DATABASE} (read-only)" in run.stdout
    first, second = run.tables
    assert [r["v"] for r in first[TABLE]["data"]] == ["a", "b", "c"] and second[TABLE]["data"] == [{"ro": 1}]


MARIADB_REFUSED = [
    "DROP TABLE cg_ro_t",
    "INSERT INTO cg_ro_t VALUES (4, 'd')",
    "DELETE FROM cg_ro_t",
    "SELECT cg_archive_all()",
    f"SELECT * FROM cg_ro_t INTO OUTFILE '{OUTFILE}'",
    "SET SESSION TRANSACTION READ WRITE; INSERT INTO cg_ro_t VALUES (4, 'd')",
    "START TRANSACTION READ WRITE; DROP TABLE cg_ro_t",
    "CREATE TABLE cg_ro_new (a INT)",
    "CREATE TEMPORARY TABLE cg_ro_tmp (a INT)",
]


@pytest.mark.mariadb
@pytest.mark.parametrize("code", MARIADB_REFUSED)
def test_mariadb_refuses_writes_in_read_only_mode(mariadb_ro_kernel, maria_admin, code):
    before = _maria_state(maria_admin)
    run = mariadb_ro_kernel.gated(code)
    assert run.status == "error", (code, run.reply)
    assert _maria_state(maria_admin) == before
    assert not os.path.exists(OUTFILE)


@pytest.mark.mariadb
def test_mariadb_named_lock_does_not_outlive_the_cell(mariadb_ro_kernel, maria_admin):
    run = mariadb_ro_kernel.gated("SELECT locked FROM cg_lock_view")
    assert run.status == "ok" and run.tables[0][TABLE]["data"] == [{"locked": 1}], run.reply
    with maria_admin.cursor() as cur:
        cur.execute("SELECT IS_FREE_LOCK('cg_ro_lock')")
        assert cur.fetchone() == (1,)
    again = mariadb_ro_kernel.gated("SELECT count(*) AS n FROM cg_ro_t")  # the next cell connects quietly
    assert again.status == "ok" and "Connected" not in again.stdout


@pytest.mark.mariadb
def test_mariadb_load_file_reads_nothing(mariadb_ro_kernel, maria_admin):
    run = mariadb_ro_kernel.gated("SELECT LOAD_FILE('/etc/passwd') AS f")
    if run.status == "ok":
        assert run.tables[0][TABLE]["data"] == [{"f": None}]
    assert "root:" not in run.everything()


@pytest.mark.mariadb
def test_mariadb_read_only_without_credential_is_refused():
    require_mariadb()
    k = SQLKernelHandle(MARIADB_URL, CELLGATE_GATED="1")
    try:
        run = k.gated("DROP TABLE IF EXISTS cg_never")
        assert run.reply["ename"] == "CellgateRefused" and "readonly_url_env" in run.reply["evalue"]
        assert "Connected" not in run.stdout
    finally:
        k.close()


# -- SQLite -----------------------------------------------------------------------------------------


def _sqlite_state(path) -> tuple:
    conn = sqlite3.connect(path)
    try:
        return (conn.execute("SELECT count(*), group_concat(v) FROM t").fetchone(),
                conn.execute("SELECT group_concat(name) FROM sqlite_master").fetchone(),
                conn.execute("PRAGMA user_version").fetchone())
    finally:
        conn.close()


def test_sqlite_reads_run_read_only(sqlite_ro_kernel):
    run = sqlite_ro_kernel.gated("SELECT id, v FROM t ORDER BY id; PRAGMA table_info(t); PRAGMA user_version")
    assert run.status == "ok", run.reply
    assert "(read-only)" in run.stdout
    assert [r["v"] for r in run.tables[0][TABLE]["data"]] == ["a", "b", "c"]


@pytest.mark.parametrize("code", [
    "ATTACH DATABASE '{new}' AS x",
    "ATTACH DATABASE '{new}' AS x; CREATE TABLE x.t (a)",
    "VACUUM INTO '{new}'",
    "PRAGMA query_only = 0; INSERT INTO t VALUES (4, 'd')",
    "INSERT INTO t VALUES (4, 'd')",
    "UPDATE t SET v = 'x'",
    "DELETE FROM t",
    "CREATE TABLE u (a)",
    "CREATE TEMP TABLE u (a)",
    "DROP TABLE t",
    "ALTER TABLE t ADD COLUMN w",
    "BEGIN",
    "PRAGMA user_version = 7",
    "SELECT writefile('{new}', 'x')",
    "SELECT load_extension('mod_spatialite')",
])
def test_sqlite_refuses_writes_in_read_only_mode(sqlite_ro_kernel, sqlite_ro_path, tmp_path, code):
    new = tmp_path / "new.db"
    before = _sqlite_state(sqlite_ro_path)
    run = sqlite_ro_kernel.gated(code.format(new=new))
    assert run.status == "error", (code, run.reply)
    assert not new.exists()
    assert _sqlite_state(sqlite_ro_path) == before


def test_sqlite_in_memory_read_only_is_refused():
    k = SQLKernelHandle("sqlite://", CELLGATE_GATED="1")
    try:
        run = k.gated("SELECT 1")
        assert run.reply["ename"] == "CellgateRefused" and "in-memory" in run.reply["evalue"]
    finally:
        k.close()


# -- the kernel's behaviour is the same on the read-only connection ----------------------------------

READ_ONLY_KERNELS = [
    pytest.param("pg_ro_kernel", "SELECT g AS n FROM generate_series(1, 12) AS g", "SELECT pg_sleep(60)",
                 id="postgres", marks=pytest.mark.postgres),
    # (no seq_1_to_12: the read-only user reads only the tables it was granted one by one)
    pytest.param("mariadb_ro_kernel", "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 12) "
                 "SELECT n FROM s", "SELECT SLEEP(60)",
                 id="mariadb", marks=pytest.mark.mariadb),
]


@pytest.mark.parametrize("name,twelve,sleep", READ_ONLY_KERNELS)
def test_read_only_row_cap_interrupt_and_redaction(request, name, twelve, sleep):
    k = request.getfixturevalue(name)
    [data] = k.gated(twelve).tables
    assert [r["n"] for r in data[TABLE]["data"]] == [1, 2, 3, 4, 5]
    assert "7 more rows not shown" in data["text/plain"]
    run = k.gated(sleep, interrupt_after=1.0)
    assert run.reply["ename"] == "KeyboardInterrupt" and run.seconds < 2, run.reply
    failed = k.gated("SELECT 'ro-Secret-7q' AS s FROM cg_missing_table")
    assert failed.status == "error" and "ro-Secret-7q" not in failed.everything()
    assert k.gated("SELECT 1 AS one").tables[0][TABLE]["data"] == [{"one": 1}]
