"""Template values in the SQL kernel (kernels/sql/params.py): markers, and values bound as data.

Through real gated kernels on PostgreSQL, MariaDB and SQLite: hostile values (quotes, comments,
``;``, ``$(…)``, newlines, ``%`` and placeholder syntax, Unicode, backslashes, also under MariaDB's
NO_BACKSLASH_ESCAPES) are written by a rendered template and read back verbatim by the test's own
connection; a marker where a value cannot be bound, or a value the task does not carry, runs nothing.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from databases import PG_URL, mariadb
from readonly_roles import mariadb_readonly_url

from cellgate.kernels.sql.params import MarkerError, for_driver, marker_spans

HOSTILE = [
    "'; DROP TABLE victims; --", "\\'; DROP TABLE victims; --", "x' OR '1'='1", "$(id) `id` ${HOME}",
    "line one\nline two\r\nthree;", "/* open comment", "-- comment\n# hash comment", "%s %(v)s %% :v ? $1",
    "üñïçødé ☃ 𝔘𝔫𝔦 \u202e", '"double" `back` $$dollar$$ $q$tag$q$', "\\", "\\\\' \\n", "", " ", "__cg_param_v__",
    "a" * 5000,
]


def params(**values: Any) -> list[dict[str, Any]]:
    kinds = {str: "text", bool: "boolean", int: "integer", float: "number", dt.date: "date"}
    return [{"name": k, "type": kinds[type(v)], "value": v.isoformat() if isinstance(v, dt.date) else v}
            for k, v in values.items()]


def send(kernel: Any, code: str, parameters: list[dict[str, Any]], mode: str = "read-write") -> Any:
    from cellgate.kernels.sql.split import split_statements

    meta = {"task_id": 1, "statements": split_statements(code, kernel.dialect), "mode": mode, "parameters": parameters}
    return kernel.run(code, metadata={"cellgate": meta})


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("mariadb", marks=pytest.mark.mariadb),
                        "sqlite"])
def target(request: pytest.FixtureRequest, table_name: str) -> Iterator[tuple[Any, Callable[[str], list[tuple[Any, ...]]]]]:
    """A gated kernel of the dialect, a fresh table ``(id, v)`` and a reader that sees its rows."""
    dialect = request.param
    if dialect == "postgresql":
        kernel = request.getfixturevalue("pg_ro_kernel")
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE TABLE {table_name} (id int, v text)")

        def read(sql: str) -> list[tuple[Any, ...]]:
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                return [tuple(r) for r in conn.execute(sql).fetchall()]
    elif dialect == "mariadb":
        kernel = request.getfixturevalue("mariadb_ro_kernel")
        conn = mariadb()
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {table_name} (id INT, v LONGTEXT) CHARACTER SET utf8mb4")
        conn.close()
        mariadb_readonly_url()  # the read-only account is granted table by table

        def read(sql: str) -> list[tuple[Any, ...]]:
            conn = mariadb(charset="utf8mb4")
            try:
                with conn.cursor() as cur:
                    cur.execute(sql)
                    return [tuple(r) for r in cur.fetchall()]
            finally:
                conn.close()
    else:
        kernel = request.getfixturevalue("sqlite_ro_kernel")
        path = request.getfixturevalue("sqlite_ro_path")
        with sqlite3.connect(path) as c:
            c.execute(f"CREATE TABLE {table_name} (id INTEGER, v TEXT)")
        c.close()

        def read(sql: str) -> list[tuple[Any, ...]]:
            with sqlite3.connect(path) as c:
                rows = [tuple(r) for r in c.execute(sql).fetchall()]
            c.close()
            return rows
    yield kernel, read


def test_hostile_values_arrive_verbatim_as_data(target: Any, table_name: str) -> None:
    kernel, read = target
    code = f"INSERT INTO {table_name} (id, v) VALUES (__cg_param_id__, __cg_param_v__)"
    for i, value in enumerate(HOSTILE):
        run = send(kernel, code, params(id=i, v=value))
        assert run.status == "ok", (value, run.reply)
    rows = read(f"SELECT id, v FROM {table_name} ORDER BY id")
    assert rows == list(enumerate(HOSTILE))
    # and as a condition: only the row whose value equals it, never more
    for i, value in enumerate(HOSTILE[:8]):
        run = send(kernel, f"SELECT id FROM {table_name} WHERE v = __cg_param_v__", params(v=value), mode="read-only")
        assert run.status == "ok", (value, run.reply)
        assert [r["id"] for r in run.tables[0]["application/vnd.dataresource+json"]["data"]] == [i]


def test_typed_values_and_percent_signs_in_the_statement(target: Any, table_name: str) -> None:
    kernel, read = target
    code = (f"INSERT INTO {table_name} (id, v) SELECT __cg_param_n__, 'x%y' WHERE __cg_param_n__ > 1 AND "
            f"'100%' LIKE '100%%' OR __cg_param_n__ = 2")
    run = send(kernel, code, params(n=2))
    assert run.status == "ok", run.reply
    assert read(f"SELECT id, v FROM {table_name}") == [(2, "x%y")]  # the statement's own % are as written
    run = send(kernel, "SELECT __cg_param_d__ AS d, __cg_param_r__ AS r, __cg_param_t__ AS t",
               params(d=dt.date(2024, 2, 29), r=2.5, t="ok"), mode="read-only")
    assert run.status == "ok", run.reply
    row = run.tables[0]["application/vnd.dataresource+json"]["data"][0]
    assert str(row["d"]).startswith("2024-02-29") and float(row["r"]) == 2.5 and row["t"] == "ok"


def _executes() -> int:
    conn = mariadb()
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW GLOBAL STATUS LIKE 'Com_execute_sql'")
            return int(cur.fetchone()[1])
    finally:
        conn.close()


@pytest.mark.mariadb
def test_mariadb_binds_on_the_server_in_a_prepared_statement(mariadb_ro_kernel: Any) -> None:
    """PyMySQL only splices escaped literals into the text; the kernel uses PREPARE/EXECUTE instead."""
    before = _executes()
    run = send(mariadb_ro_kernel, "SELECT __cg_param_v__ AS v", params(v="x' OR 1=1 -- "),
               mode="read-only")
    assert run.status == "ok", run.reply
    assert run.tables[0]["application/vnd.dataresource+json"]["data"][0]["v"] == "x' OR 1=1 -- "
    assert _executes() >= before + 1
    after = send(mariadb_ro_kernel, "SELECT @cg_v0 IS NULL AS cleared", [], mode="read-only")
    assert after.tables[0]["application/vnd.dataresource+json"]["data"] == [{"cleared": 1}]  # nothing of the value stays


@pytest.mark.mariadb
def test_mariadb_without_backslash_escapes_still_reads_values_as_data(mariadb_ro_kernel: Any, table_name: str) -> None:
    conn = mariadb()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table_name} (id INT, v TEXT)")
    conn.close()
    code = f"SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'; INSERT INTO {table_name} VALUES (__cg_param_id__, __cg_param_v__)"
    for i, value in enumerate(["\\'; DROP TABLE x; -- ", "\\", "it\\'s", "''\\''"]):
        run = send(mariadb_ro_kernel, code, params(id=i, v=value))
        assert run.status == "ok", run.reply
    conn = mariadb()
    with conn.cursor() as cur:
        cur.execute(f"SELECT v FROM {table_name} ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["\\'; DROP TABLE x; -- ", "\\", "it\\'s", "''\\''"]
    conn.close()


@pytest.mark.parametrize(("code", "parameters", "said"), [
    ("SELECT '__cg_param_v__'", params(v="x"), "inside a string, a comment or a quoted name"),
    ("SELECT 1 -- __cg_param_v__", params(v="x"), "inside a string, a comment or a quoted name"),
    ("SELECT __cg_param_v__", [], "no value for {{ v }}"),
    ("SELECT __cg_param_v__", [{"name": "v", "type": "integer", "value": "1; DROP TABLE t"}], "v is not a integer"),
    ("SELECT __cg_param_v__", [{"name": "v", "type": "date", "value": "2024-13-01"}], "v is not a date"),
    ("SELECT __cg_param_v__", [{"name": "v", "type": "code", "value": "x"}], "unknown type 'code'"),
    ("SELECT __cg_param_v__", [{"name": "v", "type": "text"}], "is {name, type, value}"),
    ("SELECT __cg_param_v__", {"v": "x"}, "must be a list"),
])
def test_what_cannot_be_bound_runs_nothing(target: Any, table_name: str, code: str, parameters: Any, said: str) -> None:
    kernel, read = target
    before = read(f"SELECT count(*) FROM {table_name}")
    run = send(kernel, f"INSERT INTO {table_name} (id) VALUES (7); {code}", parameters)
    assert run.status == "error" and run.reply["ename"] == "CellgateRefused" and said in run.reply["evalue"], run.reply
    assert "nothing ran" in run.reply["evalue"] and read(f"SELECT count(*) FROM {table_name}") == before


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
def test_markers_are_found_only_as_whole_unquoted_tokens(dialect: str) -> None:
    assert marker_spans("UPDATE t SET a = __cg_param_a__ WHERE id=__cg_param_id__", dialect) == [(17, 31, "a"), (41, 56, "id")]
    assert marker_spans("SELECT 1", dialect) == []
    for bad in ("SELECT '__cg_param_a__'", 'SELECT "__cg_param_a__"', "SELECT 1 /* __cg_param_a__ */",
                "SELECT x__cg_param_a__", "SELECT 1 -- __cg_param_a__\n", "SELECT 'it''s __cg_param_a__'"):
        with pytest.raises(MarkerError):
            marker_spans(bad, dialect)
    assert for_driver("SELECT '50%'", dialect, {}) == ("SELECT '50%'", None)  # no marker: the text goes raw


@pytest.mark.parametrize(("dialect", "statement"), [
    ("postgresql", "SELECT E'\\\\' __cg_param_a__'"), ("postgresql", "SELECT $t$ __cg_param_a__ $t$"),
    ("postgresql", 'SELECT U&"__cg_param_a__"'), ("postgresql", "SELECT 1 /* /* */ __cg_param_a__ */"),
    ("mariadb", "SELECT /*! __cg_param_a__ */ 1"), ("mariadb", "SELECT '\\\\' __cg_param_a__ '"),
    ("mariadb", "SELECT 1 # __cg_param_a__"), ("mariadb", "SELECT `__cg_param_a__`"),
    ("sqlite", "SELECT [__cg_param_a__]"), ("sqlite", "SELECT `__cg_param_a__`"),
])
def test_each_dialects_own_quoting_and_comments_hide_no_marker(dialect: str, statement: str) -> None:
    """As the server reads it: dollar quotes, E'' escapes, nested comments (PostgreSQL), executable
    comments, # comments, backslash escapes (MariaDB), [] names (SQLite): a marker there is refused."""
    with pytest.raises(MarkerError):
        for_driver(statement, dialect, {"a": 1})


def test_each_driver_gets_its_own_placeholder_and_only_the_values_used() -> None:
    sql = "SELECT * FROM t WHERE a = __cg_param_a__ AND b LIKE 'x%'"
    assert for_driver(sql, "postgresql", {"a": 1, "b": 2}) == ("SELECT * FROM t WHERE a = %(a)s AND b LIKE 'x%%'", {"a": 1})
    assert for_driver(sql + " OR a = __cg_param_a__", "mariadb", {"a": 1}) == \
        ("SELECT * FROM t WHERE a = ? AND b LIKE 'x%' OR a = ?", [1, 1])  # a server-side prepared statement
    assert for_driver(sql, "sqlite", {"a": 1}) == ("SELECT * FROM t WHERE a = :a AND b LIKE 'x%'", {"a": 1})
