"""The SQL kernel end to end: real kernel processes against PostgreSQL, MariaDB and SQLite."""

from __future__ import annotations

import json
import signal
import time

import psycopg
import pytest
from databases import mariadb

from sql_kernel_harness import MARIADB_URL, PG_URL, TABLE, SQLKernelHandle, require_mariadb, require_postgres

DIALECTS = [
    pytest.param("pg_kernel", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb_kernel", id="mariadb", marks=pytest.mark.mariadb),
    pytest.param("sqlite_kernel", id="sqlite"),
]

SLEEP = {
    "pg_kernel": "SELECT pg_sleep(60)",
    "mariadb_kernel": "SELECT SLEEP(60)",
    "sqlite_kernel": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
}
TWELVE_ROWS = {
    "pg_kernel": "SELECT g AS n FROM generate_series(1, 12) AS g",
    "mariadb_kernel": "SELECT seq AS n FROM seq_1_to_12",
    "sqlite_kernel": "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 12) SELECT n FROM c",
}
MISSING_TABLE_ENAME = {
    "pg_kernel": "UndefinedTable",
    "mariadb_kernel": "ProgrammingError",
    "sqlite_kernel": "OperationalError",
}


@pytest.fixture(params=DIALECTS)
def kernel(request) -> tuple[str, SQLKernelHandle]:
    return request.param, request.getfixturevalue(request.param)


def _reply(kc, msg_id: str) -> dict:
    """The shell reply to ``msg_id`` (a late reply to an earlier request is skipped)."""
    msg = kc.get_shell_msg(timeout=10)
    while msg["parent_header"].get("msg_id") != msg_id:
        msg = kc.get_shell_msg(timeout=10)
    return msg["content"]


def test_kernel_info(sqlite_kernel):
    info = _reply(sqlite_kernel.kc, sqlite_kernel.kc.kernel_info())
    assert info["language_info"]["name"] == "sql"
    assert info["language_info"]["mimetype"] == "text/x-sql"
    assert info["language_info"]["file_extension"] == ".sql"
    assert info["implementation"] == "cellgate-sql"


def test_is_complete_and_complete(sqlite_kernel):
    kc = sqlite_kernel.kc
    assert _reply(kc, kc.is_complete("SELECT 1;"))["status"] == "complete"
    assert _reply(kc, kc.is_complete("SELECT 1"))["status"] == "incomplete"
    reply = _reply(kc, kc.complete("SELE", 4))
    assert reply["status"] == "ok" and reply["matches"] == []


def test_results_in_three_mimetypes(kernel, table_name):
    name, k = kernel
    try:
        k.ok(
            f"CREATE TABLE {table_name} (id INT, label VARCHAR(20), amount DECIMAL(6, 2), made DATE);"
            f"INSERT INTO {table_name} VALUES (1, '<b>&co', 12.50, '2024-02-29'), (2, NULL, NULL, NULL);"
        )
        run = k.ok(f"SELECT id, label, amount, made FROM {table_name} ORDER BY id")
        [data] = run.tables
        assert run.outputs[-1]["msg_type"] == "execute_result"

        text = data["text/plain"].splitlines()
        assert text[0].split("|")[0].strip() == "id" and "label" in text[0]
        assert set(text[1]) <= {"-", "+"}
        assert "<b>&co" in text[2] and "NULL" in text[3] and text[-1] == "(2 rows)"
        bars = [[i for i, ch in enumerate(line) if ch in "|+"] for line in text[:4]]
        assert bars[0] and all(b == bars[0] for b in bars)  # aligned columns

        html = data["text/html"]
        assert "<table" in html and "&lt;b&gt;&amp;co" in html and "<b>&co" not in html

        table = data[TABLE]
        json.dumps(table)  # JSON-safe
        fields = {f["name"]: f["type"] for f in table["schema"]["fields"]}
        if name == "sqlite_kernel":  # SQLite stores the decimal as REAL and the date as TEXT
            assert fields == {"id": "integer", "label": "string", "amount": "number", "made": "string"}
            assert table["data"][0] == {"id": 1, "label": "<b>&co", "amount": 12.5, "made": "2024-02-29"}
        else:
            assert fields == {"id": "integer", "label": "string", "amount": "number", "made": "date"}
            assert table["data"][0] == {"id": 1, "label": "<b>&co", "amount": "12.50", "made": "2024-02-29"}
        assert table["data"][1] == {"id": 2, "label": None, "amount": None, "made": None}
    finally:
        k.ok(f"DROP TABLE IF EXISTS {table_name}")


def test_row_cap(kernel):
    name, k = kernel
    run = k.ok(TWELVE_ROWS[name])
    [data] = run.tables
    assert [row["n"] for row in data[TABLE]["data"]] == [1, 2, 3, 4, 5]
    expected = "more rows not shown (limit 5)" if name == "sqlite_kernel" else "7 more rows not shown"
    assert expected in data["text/plain"] and expected in data["text/html"]


def test_sql_goes_to_the_driver_raw(kernel, table_name):
    _, k = kernel
    try:
        run = k.ok(
            f"CREATE TABLE {table_name} (v VARCHAR(20));\n"
            f"INSERT INTO {table_name} VALUES (':name'), ('a%b'), ('x;y'), ('zzz');\n"
            f"SELECT v FROM {table_name} WHERE v LIKE 'a%' OR v = ':name' ORDER BY v;\n"
            f"UPDATE {table_name} SET v = 'q' WHERE v = 'zzz';\n"
            f"SELECT count(*) AS c FROM {table_name} WHERE v LIKE '%;%'"
        )
        assert [o["msg_type"] for o in run.outputs][-4:] == ["stream", "display_data", "stream", "execute_result"]
        assert "INSERT" in run.stdout and "4" in run.stdout and "UPDATE 1" in run.stdout
        first, second = run.tables
        assert [r["v"] for r in first[TABLE]["data"]] == [":name", "a%b"]
        assert list(second[TABLE]["data"][0].values()) == [1]
    finally:
        k.ok(f"DROP TABLE IF EXISTS {table_name}")


@pytest.mark.postgres
def test_postgres_jsonb_and_dollar_quotes(pg_kernel):
    run = pg_kernel.ok("SELECT '{\"a\":1}'::jsonb AS j, $$semi;colon$$ AS s, 'a%' LIKE 'a%' AS l, ':name' AS n")
    [data] = run.tables
    assert data[TABLE]["data"] == [{"j": {"a": 1}, "s": "semi;colon", "l": True, "n": ":name"}]
    assert {"name": "j", "type": "object"} in data[TABLE]["schema"]["fields"]


def test_database_error_then_next_cell(kernel):
    name, k = kernel
    run = k.run("SELECT * FROM cg_no_such_table")
    assert run.status == "error"
    assert run.reply["ename"] == MISSING_TABLE_ENAME[name]
    assert "cg_no_such_table" in run.reply["evalue"]
    assert run.errors and run.errors[0]["ename"] == run.reply["ename"]
    assert k.ok("SELECT 7 AS seven").tables[0][TABLE]["data"] == [{"seven": 7}]


@pytest.mark.postgres
def test_postgres_aborted_transaction_is_rolled_back(pg_kernel):
    run = pg_kernel.run("BEGIN; SELECT 1 / 0")
    assert run.reply["ename"] == "DivisionByZero"
    assert pg_kernel.ok("SELECT 1 AS one").tables[0][TABLE]["data"] == [{"one": 1}]


def _postgres_sleepers() -> int:
    with psycopg.connect(PG_URL) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(60)'"
        ).fetchone()[0]


def _mariadb_sleepers() -> int:
    conn = mariadb()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.processlist WHERE info = 'SELECT SLEEP(60)'")
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_interrupt_cancels_on_the_server(kernel):
    name, k = kernel
    run = k.run(SLEEP[name], interrupt_after=1.0)
    assert run.status == "error" and run.reply["ename"] == "KeyboardInterrupt", run.reply
    assert run.seconds < 2, f"the reply came {run.seconds:.2f} s after the interrupt"
    if name == "pg_kernel":
        assert _postgres_sleepers() == 0
    elif name == "mariadb_kernel":
        assert _mariadb_sleepers() == 0
    assert k.ok("SELECT 42 AS answer").tables[0][TABLE]["data"] == [{"answer": 42}]


@pytest.mark.postgres
def test_sigint_also_cancels(pg_kernel):
    """interrupt_mode "signal" (SIGINT to the kernel) takes the same path as interrupt_request."""
    msg_id = pg_kernel.kc.execute("SELECT pg_sleep(60)")
    time.sleep(1.0)
    pg_kernel.km.signal_kernel(signal.SIGINT)
    started = time.monotonic()
    reply = pg_kernel.kc.get_shell_msg(timeout=10)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 2
    assert pg_kernel.ok("SELECT 1 AS one").tables[0][TABLE]["data"] == [{"one": 1}]


@pytest.mark.parametrize(
    "url,require,sleep",
    [
        pytest.param(PG_URL, require_postgres, "SELECT pg_sleep(10)", id="postgres", marks=pytest.mark.postgres),
        pytest.param(MARIADB_URL, require_mariadb, "SELECT SLEEP(10)", id="mariadb", marks=pytest.mark.mariadb),
        pytest.param(None, None, SLEEP["sqlite_kernel"], id="sqlite"),
    ],
)
def test_statement_timeout(url, require, sleep, tmp_path):
    if require:
        require()
    k = SQLKernelHandle(url or f"sqlite:///{tmp_path / 't.db'}", CELLGATE_STATEMENT_TIMEOUT="1")
    try:
        run = k.run(sleep)
        assert run.status == "error", run.reply
        assert "CELLGATE_STATEMENT_TIMEOUT=1 s" in run.reply["evalue"]
        assert run.seconds < 5
        k.ok("SELECT 1")
    finally:
        k.close()


@pytest.mark.postgres
def test_postgres_reconnects_after_the_connection_broke(pg_kernel):
    run = pg_kernel.run("SELECT pg_terminate_backend(pg_backend_pid())")
    assert run.status == "error"
    run = pg_kernel.ok("SELECT 3 AS three")
    assert f"Reconnected to {PG_URL}" in run.stdout
    assert run.tables[0][TABLE]["data"] == [{"three": 3}]


@pytest.mark.mariadb
def test_mariadb_reconnects_after_the_connection_broke(mariadb_kernel):
    assert mariadb_kernel.run("KILL CONNECTION_ID()").status == "error"
    run = mariadb_kernel.ok("SELECT 3 AS three")
    assert f"Reconnected to {MARIADB_URL}" in run.stdout


@pytest.mark.postgres
def test_postgres_password_never_shown(table_name):
    """Trust auth ignores the password, so the kernel connects and we can look at every output."""
    require_postgres()
    secret = "s3cr3t-Pw_9"
    k = SQLKernelHandle(PG_URL.replace("postgres@", f"postgres:{secret}@", 1))
    try:
        k.kc.kernel_info()
        info = k.kc.get_shell_msg(timeout=10)["content"]
        first = k.ok("SELECT 1")
        assert f"Connected to {PG_URL}" in first.stdout
        failed = k.run(f"SELECT '{secret}' FROM cg_missing_{table_name}")
        assert failed.status == "error" and "********" in failed.reply["evalue"]
        for text in (repr(info), first.everything(), failed.everything()):
            assert secret not in text
    finally:
        k.close()


@pytest.mark.mariadb
def test_mariadb_wrong_password_error_hides_it():
    require_mariadb()
    secret = "hunter2-Secret"
    k = SQLKernelHandle(MARIADB_URL.replace("root@", f"root:{secret}@", 1))
    try:
        run = k.run("SELECT 1")
        assert run.status == "error" and run.reply["ename"] == "OperationalError"
        assert "Access denied" in run.reply["evalue"]
        assert secret not in run.everything()
    finally:
        k.close()


def test_missing_target_url_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("CELLGATE_TARGET_URL", raising=False)
    k = SQLKernelHandle("")
    try:
        run = k.run("SELECT 1")
        assert run.reply["ename"] == "ConfigError"
        assert "CELLGATE_TARGET_URL is not set" in run.reply["evalue"]
    finally:
        k.close()
