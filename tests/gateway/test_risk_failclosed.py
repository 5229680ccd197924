"""The risk analysis fails closed: disguised writes are never read-only, doubtful text is unparseable.

Tables of disguised writes per dialect (user-defined and effectful functions anywhere in a
statement, escaped names, custom operators and casts, comment and character tricks), the
boundaries the analysis reports (``Risk.texts``) against the kernel's splitter, the deadline, and
which UPDATE/DELETE statements the agent may EXPLAIN. Pure logic: no database is involved.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import pytest

from cellgate.gateway.risk import functions as sqlfuncs
from cellgate.gateway.risk import FLAGS, RULES, analyze, analyze_sql
from cellgate.kernels.sql.split import split_statements

from test_risk import CASES as BASE_CASES  # tests/gateway is on sys.path (rootdir-relative import)

PG, MY, MARIA, LITE = "postgresql", "mysql", "mariadb", "sqlite"


class Disguised(NamedTuple):
    id: str
    dialect: str
    sql: str
    flags: tuple[str, ...] = ()  # at least these


def _u(name: str) -> str:
    """``name`` as a PostgreSQL U& identifier with its first letter escaped."""
    return 'U&"\\' + f"{ord(name[0]):04x}" + name[1:] + '"'


_PG_EFFECT_FUNCTIONS = {
    "dblink": "('host=x', 'DELETE FROM t')", "dblink_exec": "('host=x', 'DROP TABLE t')",
    "pg_read_file": "('/etc/passwd')", "lo_from_bytea": "(0, 'x')", "pg_terminate_backend": "(1)",
    "set_config": "('search_path', 'x', false)", "pg_sleep": "(10)", "lo_import": "('/etc/passwd')",
    "pg_advisory_lock": "(1)", "pg_cancel_backend": "(1)", "query_to_xml": "('DELETE FROM t', true, true, '')",
    "lo_export": "(1, '/tmp/x')",
}
_PG_UNKNOWN_BUILTINS = [
    "txid_current()", "pg_current_xact_id()", "pg_import_system_collations('pg_catalog')",
    "pg_logical_emit_message(true, 'x', 'y')", "pg_stat_reset()", "pg_stat_reset_shared('bgwriter')",
    "setseed(0.5)", "lo_get(1)", "currval('s')", "lastval()", "ts_rewrite('a'::tsquery, 'SELECT 1')",
    "pg_stat_reset_single_table_counters(1)", "pg_replication_origin_create('x')",
    "pg_log_backend_memory_contexts(1)", "pg_backup_start('x')", "pg_wal_replay_pause()",
]

PG_CASES = [
    *(Disguised(f"pg-u&-{name}", PG, f"SELECT {_u(name)}{args}", ("side_effect_function",))
      for name, args in _PG_EFFECT_FUNCTIONS.items()),
    *(Disguised(f"pg-u&-quoted-{name}", PG, f'SELECT "{name}"{args}', ("side_effect_function",))
      for name, args in list(_PG_EFFECT_FUNCTIONS.items())[:4]),
    Disguised("pg-try-advisory-lock", PG, "SELECT pg_try_advisory_lock(1)", ("lock",)),
    Disguised("pg-advisory-xact-lock", PG, "SELECT pg_advisory_xact_lock(1)", ("lock",)),
    Disguised("pg-u&-uescape", PG, "SELECT U&\"!0064blink_exec\" UESCAPE '!'('h', 'DROP TABLE t')",
              ("side_effect_function",)),
    *(Disguised(f"pg-builtin-{call.split('(')[0]}", PG, f"SELECT {call}", ("unknown_function",))
      for call in _PG_UNKNOWN_BUILTINS),
    Disguised("pg-udf-select", PG, "SELECT archive_everything()", ("unknown_function",)),
    Disguised("pg-udf-from", PG, "SELECT * FROM purge_rows(30)", ("unknown_function",)),
    Disguised("pg-udf-where", PG, "SELECT * FROM t WHERE id = next_id()", ("unknown_function",)),
    Disguised("pg-udf-order-by", PG, "SELECT * FROM t ORDER BY bump(id)", ("unknown_function",)),
    Disguised("pg-udf-group-by", PG, "SELECT count(*) FROM t GROUP BY bump(id)", ("unknown_function",)),
    Disguised("pg-udf-having", PG, "SELECT a FROM t GROUP BY a HAVING bump(a) > 0", ("unknown_function",)),
    Disguised("pg-udf-lateral", PG, "SELECT * FROM t, LATERAL bump(t.id) AS b", ("unknown_function",)),
    Disguised("pg-udf-values", PG, "VALUES (bump(1))", ("unknown_function",)),
    Disguised("pg-udf-join-on", PG, "SELECT * FROM a JOIN b ON bump(a.id) = b.id", ("unknown_function",)),
    Disguised("pg-udf-cte", PG, "WITH x AS (SELECT bump(1)) SELECT * FROM x", ("unknown_function",)),
    Disguised("pg-udf-subquery", PG, "SELECT (SELECT bump(1))", ("unknown_function",)),
    Disguised("pg-udf-case", PG, "SELECT CASE WHEN bump(1) THEN 1 END", ("unknown_function",)),
    Disguised("pg-udf-window-arg", PG, "SELECT sum(bump(x)) OVER () FROM t", ("unknown_function",)),
    Disguised("pg-udf-filter", PG, "SELECT count(*) FILTER (WHERE bump(x)) FROM t", ("unknown_function",)),
    Disguised("pg-udf-in-explain", PG, "EXPLAIN SELECT bump(1)", ("unknown_function",)),
    Disguised("pg-udf-schema", PG, "SELECT public.lower('A')", ("unknown_function",)),
    Disguised("pg-udf-quoted-case", PG, 'SELECT "Lower"(\'A\')', ("unknown_function",)),
    Disguised("pg-udf-catalog-unknown", PG, "SELECT pg_catalog.bump(1)", ("unknown_function",)),
    Disguised("pg-udf-three-part", PG, "SELECT db.public.lower('a')", ("unknown_function",)),
    Disguised("pg-udf-rows-from", PG, "SELECT * FROM ROWS FROM (bump(1))", ("unknown_function",)),
    Disguised("pg-udf-in-array", PG, "SELECT ARRAY[bump(1)]", ("unknown_function",)),
    Disguised("pg-udf-in-coalesce", PG, "SELECT coalesce(bump(1), 0)", ("unknown_function",)),
    Disguised("pg-udf-default-arg", PG, "SELECT lower(bump('x'))", ("unknown_function",)),
    Disguised("pg-operator-custom", PG, "SELECT 1 OPERATOR(public.+) 2", ("unknown_function",)),
    Disguised("pg-operator-symbol", PG, "SELECT a <<=>> b FROM t", ()),
    Disguised("pg-cast-user-type", PG, "SELECT 'x'::mood", ("unknown_function",)),
    Disguised("pg-cast-schema-type", PG, "SELECT CAST('x' AS public.mood)", ("unknown_function",)),
    Disguised("pg-cast-quoted-type", PG, "SELECT '1'::\"Int4\"", ("unknown_function",)),
    Disguised("pg-cast-domain-array", PG, "SELECT '{x}'::email[]", ("unknown_function",)),
    Disguised("pg-typed-literal-user", PG, "SELECT mood 'happy'", ("unknown_function",)),
    Disguised("pg-whole-row-overload", PG, "SELECT length(a) FROM accounts a", ("unknown_function",)),
    Disguised("pg-whole-row-cast", PG, "SELECT a::text FROM accounts a WHERE id = 1", ("unknown_function",)),
    Disguised("pg-whole-row-star", PG, "SELECT upper(a.*) FROM accounts a", ("unknown_function",)),
    Disguised("pg-whole-row-operator", PG, "SELECT * FROM accounts a, orders o WHERE a = o", ("unknown_function",)),
    Disguised("pg-write-in-cte", PG, "WITH d AS (DELETE FROM t RETURNING *) SELECT 1", ("write_in_cte",)),
    Disguised("pg-insert-in-cte", PG, "WITH d AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM d",
              ("write_in_cte",)),
    Disguised("pg-select-into", PG, "SELECT * INTO copy FROM t", ("select_into",)),
    Disguised("pg-select-for-update", PG, "SELECT * FROM t FOR UPDATE", ("lock",)),
    Disguised("pg-select-for-share-nested", PG, "SELECT * FROM (SELECT * FROM t FOR SHARE) s", ()),
    Disguised("pg-nextval", PG, "SELECT nextval('s')", ("side_effect_function",)),
    Disguised("pg-backslash-quote", PG, "SELECT '\\'; DROP TABLE t; --'", ("unparseable",)),
    Disguised("pg-explain-analyze-udf", PG, "EXPLAIN ANALYZE SELECT bump(1)", ("unknown_function",)),
    Disguised("pg-do", PG, "DO $$BEGIN PERFORM 1; END$$", ("call",)),
    Disguised("pg-call", PG, "CALL archive()", ("call",)),
    Disguised("pg-copy", PG, "COPY (SELECT 1) TO '/tmp/x'", ("file_write",)),
    Disguised("pg-two-statements", PG, "SELECT 1; DROP TABLE t", ("drop",)),
    Disguised("pg-comment-hides-nothing", PG, "SELECT 1 /* ; */ ; DELETE FROM t", ("delete_without_where",)),
    Disguised("pg-dollar-hides-nothing", PG, "SELECT $a$ ; $a$; TRUNCATE t", ("truncate",)),
    Disguised("pg-named-placeholder", PG, "SELECT * FROM t WHERE id = :id", ("unparseable",)),
    Disguised("pg-set-role", PG, "SET ROLE postgres", ("session_change",)),
    Disguised("pg-set-config-catalog", PG, "SELECT pg_catalog.set_config('x.y', '1', false)",
              ("side_effect_function",)),
]

_MY_ODD = ["\u00a0", "\u2000", "\u2002", "\u2009", "\u200b", "\u3000", "\ufeff", "\u0085", "\u2028", "\u202f",
           "\x0b", "\x0c", "\x00", "\x01"]

MY_CASES = [
    *(Disguised(f"my-dash-{ord(ch):04x}", MY, f"SELECT 1 --{ch}; DROP TABLE t", ("unparseable",)) for ch in _MY_ODD),
    *(Disguised(f"my-hash-{ord(ch):04x}", MARIA, f"SELECT 1 #{ch}x\nDELETE FROM t", ("unparseable",))
      for ch in _MY_ODD[:6]),
    *(Disguised(f"my-space-{ord(ch):04x}", MARIA, f"SELECT{ch}1; DROP TABLE t", ("unparseable",)) for ch in _MY_ODD[:6]),
    Disguised("my-exec-comment", MY, "SELECT 1 /*! ; DROP TABLE t */", ("unparseable",)),
    Disguised("my-exec-comment-version", MY, "SELECT 1 /*!50000 , sleep(5) */", ("unparseable",)),
    Disguised("maria-exec-comment", MARIA, "SELECT 1 /*M! ; DROP TABLE t */", ("unparseable",)),
    Disguised("my-dash-no-space", MY, "SELECT 1 --1; DROP TABLE t", ("unparseable",)),
    Disguised("my-double-quoted", MY, 'SELECT "a" FROM t', ("unparseable",)),
    Disguised("my-backslash-n", MY, "SELECT \\N", ("unparseable",)),
    Disguised("my-backslash-quote", MY, "SELECT 'a\\'; DROP TABLE t; -- '", ("unparseable",)),
    Disguised("my-backslash-g", MARIA, "SELECT 1 \\G", ("unparseable",)),
    Disguised("my-outfile", MY, "SELECT * FROM t INTO OUTFILE '/tmp/x'", ("file_write",)),
    Disguised("my-dumpfile", MARIA, "SELECT 'x' INTO DUMPFILE '/tmp/x'", ("file_write",)),
    Disguised("my-load-file", MY, "SELECT LOAD_FILE('/etc/passwd')", ("side_effect_function",)),
    Disguised("my-sleep", MY, "SELECT sleep(5)", ("side_effect_function",)),
    Disguised("my-sleep-where", MARIA, "SELECT * FROM t WHERE sleep(1) = 0", ("side_effect_function",)),
    Disguised("my-benchmark", MY, "SELECT BENCHMARK(1000000, md5('x'))", ("side_effect_function",)),
    Disguised("my-get-lock", MY, "SELECT GET_LOCK('a', 10)", ("lock",)),
    Disguised("my-release-lock", MARIA, "SELECT RELEASE_LOCK('a')", ("lock",)),
    Disguised("my-is-free-lock", MARIA, "SELECT IS_FREE_LOCK('a')", ("unknown_function",)),
    Disguised("my-assign", MY, "SELECT @a := 5", ("session_change",)),
    Disguised("my-assign-in-where", MARIA, "SELECT * FROM t WHERE (@n := @n + 1) > 0", ("session_change",)),
    Disguised("my-into-var", MY, "SELECT 1 INTO @a", ("session_change",)),
    Disguised("my-last-insert-id", MY, "SELECT LAST_INSERT_ID(42)", ("unknown_function",)),
    Disguised("my-udf", MY, "SELECT purge_all()", ("unknown_function",)),
    Disguised("my-udf-backticks", MY, "SELECT `purge_all`()", ("unknown_function",)),
    Disguised("my-udf-qualified", MARIA, "SELECT test.purge_all()", ("unknown_function",)),
    Disguised("my-udf-where", MY, "SELECT * FROM t WHERE id = purge(1)", ("unknown_function",)),
    Disguised("my-udf-order-by", MY, "SELECT * FROM t ORDER BY purge(id)", ("unknown_function",)),
    Disguised("my-udf-group-by", MARIA, "SELECT count(*) FROM t GROUP BY purge(id)", ("unknown_function",)),
    Disguised("my-udf-join", MARIA, "SELECT * FROM a JOIN b ON purge(a.id) = b.id", ("unknown_function",)),
    Disguised("my-udf-subquery", MY, "SELECT (SELECT purge(1))", ("unknown_function",)),
    Disguised("my-udf-cte", MARIA, "WITH x AS (SELECT purge(1) AS p) SELECT * FROM x", ("unknown_function",)),
    Disguised("my-udf-in-explain", MY, "EXPLAIN SELECT purge(1)", ("unknown_function",)),
    Disguised("my-udf-nested", MY, "SELECT lower(purge('x'))", ("unknown_function",)),
    Disguised("my-udf-space", MY, "SELECT purge (1)", ("unknown_function",)),
    Disguised("maria-nextval", MARIA, "SELECT NEXTVAL(s)", ("side_effect_function",)),
    Disguised("maria-setval", MARIA, "SELECT SETVAL(s, 100)", ("side_effect_function",)),
    Disguised("maria-lastval", MARIA, "SELECT LASTVAL(s)", ("unknown_function",)),
    Disguised("my-sys-exec", MY, "SELECT sys_exec('id')", ("side_effect_function",)),
    Disguised("my-master-pos-wait", MARIA, "SELECT MASTER_POS_WAIT('log', 4)", ("side_effect_function",)),
    Disguised("my-found-rows", MY, "SELECT FOUND_ROWS()", ("unknown_function",)),
    Disguised("my-for-update", MY, "SELECT * FROM t WHERE id = 1 FOR UPDATE", ("lock",)),
    Disguised("my-lock-in-share-mode", MARIA, "SELECT * FROM t LOCK IN SHARE MODE", ()),
    Disguised("my-do-sleep", MY, "DO SLEEP(5)", ()),
    Disguised("my-call", MY, "CALL purge()", ("call",)),
    Disguised("my-set-var", MY, "SET @a = 1", ("session_change",)),
    Disguised("my-two-statements", MY, "SELECT 1; DROP TABLE t", ("drop",)),
    Disguised("my-unterminated-comment", MY, "SELECT 1 /* ; DROP TABLE t", ()),
    Disguised("my-handler", MARIA, "HANDLER t OPEN", ()),
    # a reserved word where sqlglot reads an alias: the server reads a keyword (and what follows it)
    Disguised("my-hash-line-delete", MARIA, "SELECT 1 #\nDELETE FROM t", ("unparseable",)),
    Disguised("my-alias-delete", MY, "SELECT 1 DELETE FROM t", ("unparseable",)),
    Disguised("my-alias-update", MARIA, "SELECT a UPDATE FROM t", ("unparseable",)),
    Disguised("my-table-alias-set", MY, "SELECT * FROM t SET", ("unparseable",)),
    Disguised("my-comment-alias-insert", MARIA, "SELECT 1 /* x */ INSERT FROM t", ("unparseable",)),
]

LITE_CASES = [
    *(Disguised(f"lite-dash-{ord(ch):04x}", LITE, f"SELECT 1 --{ch}; DROP TABLE t", ("unparseable",))
      for ch in _MY_ODD if ch not in "\x00"),
    *(Disguised(f"lite-space-{ord(ch):04x}", LITE, f"SELECT{ch}1", ("unparseable",)) for ch in _MY_ODD[:8]),
    Disguised("lite-attach", LITE, "ATTACH DATABASE '/tmp/new.db' AS x", ("file_write",)),
    Disguised("lite-attach-short", LITE, "ATTACH 'file:x?mode=rwc' AS x", ("file_write",)),
    Disguised("lite-attach-expr", LITE, "ATTACH ('/tmp/' || 'x.db') AS x", ()),
    Disguised("lite-pragma-journal", LITE, "PRAGMA journal_mode = DELETE", ()),
    Disguised("lite-pragma-writable-schema", LITE, "PRAGMA writable_schema = 1", ()),
    Disguised("lite-pragma-query-only", LITE, "PRAGMA query_only = 0", ()),
    Disguised("lite-pragma-user-version", LITE, "PRAGMA user_version = 5", ()),
    Disguised("lite-pragma-schema-user-version", LITE, "PRAGMA main.user_version = 5", ()),
    Disguised("lite-pragma-foreign-keys", LITE, "PRAGMA foreign_keys = OFF", ()),
    Disguised("lite-pragma-call", LITE, "PRAGMA journal_mode(WAL)", ()),
    Disguised("lite-pragma-optimize", LITE, "PRAGMA optimize", ()),
    Disguised("lite-pragma-wal-checkpoint", LITE, "PRAGMA wal_checkpoint(TRUNCATE)", ()),
    Disguised("lite-load-extension", LITE, "SELECT load_extension('/tmp/x.so')", ("side_effect_function",)),
    Disguised("lite-readfile", LITE, "SELECT readfile('/etc/passwd')", ("side_effect_function",)),
    Disguised("lite-writefile", LITE, "SELECT writefile('/tmp/x', 'y')", ("file_write",)),
    Disguised("lite-edit", LITE, "SELECT edit('x', 'vi')", ("unknown_function",)),
    Disguised("lite-fts3-tokenizer", LITE, "SELECT fts3_tokenizer('x', 0)", ("side_effect_function",)),
    Disguised("lite-zipfile", LITE, "SELECT * FROM zipfile('/tmp/x.zip')", ("unknown_function",)),
    Disguised("lite-fsdir", LITE, "SELECT * FROM fsdir('/etc')", ("unknown_function",)),
    Disguised("lite-udf", LITE, "SELECT purge()", ("unknown_function",)),
    Disguised("lite-udf-where", LITE, "SELECT * FROM t WHERE purge(id)", ("unknown_function",)),
    Disguised("lite-udf-order-by", LITE, "SELECT * FROM t ORDER BY purge(id)", ("unknown_function",)),
    Disguised("lite-udf-from", LITE, "SELECT * FROM purge_vtab(1)", ("unknown_function",)),
    Disguised("lite-udf-cte", LITE, "WITH x AS (SELECT purge(1)) SELECT * FROM x", ("unknown_function",)),
    Disguised("lite-udf-subquery", LITE, "SELECT (SELECT purge(1))", ("unknown_function",)),
    Disguised("lite-udf-quoted", LITE, 'SELECT "purge"(1)', ("unknown_function",)),
    Disguised("lite-udf-in-explain", LITE, "EXPLAIN QUERY PLAN SELECT purge(1)", ("unknown_function",)),
    Disguised("lite-udf-nested", LITE, "SELECT lower(purge('x'))", ("unknown_function",)),
    Disguised("lite-compileoption", LITE, "SELECT sqlite_compileoption_used('X')", ("unknown_function",)),
    Disguised("lite-vacuum-into", LITE, "VACUUM INTO '/tmp/copy.db'", ("file_write",)),
    Disguised("lite-trigger", LITE, "CREATE TRIGGER t AFTER INSERT ON x BEGIN DELETE FROM y; END", ("unparseable",)),
    Disguised("lite-detach", LITE, "DETACH x", ()),
    Disguised("lite-two-statements", LITE, "SELECT 1; DROP TABLE t", ("drop",)),
    Disguised("lite-replace", LITE, "REPLACE INTO t VALUES (1)", ("write",)),
    Disguised("lite-insert-returning", LITE, "INSERT INTO t VALUES (1) RETURNING *", ("write",)),
    Disguised("lite-begin-immediate", LITE, "BEGIN IMMEDIATE", ("transaction_control",)),
    Disguised("lite-savepoint", LITE, "SAVEPOINT x", ()),
    Disguised("lite-create-temp", LITE, "CREATE TEMP TABLE x (a)", ("ddl",)),
    Disguised("lite-with-delete", LITE, "WITH x AS (SELECT 1) DELETE FROM t", ("write",)),
    Disguised("lite-udf-having", LITE, "SELECT a FROM t GROUP BY a HAVING purge(a)", ("unknown_function",)),
    Disguised("lite-udf-join", LITE, "SELECT * FROM a JOIN b ON purge(a.id) = b.id", ("unknown_function",)),
    Disguised("lite-udf-values", LITE, "VALUES (purge(1))", ("unknown_function",)),
    Disguised("lite-udf-case", LITE, "SELECT CASE WHEN purge(1) THEN 1 END", ("unknown_function",)),
    Disguised("lite-udf-window", LITE, "SELECT sum(purge(x)) OVER () FROM t", ("unknown_function",)),
    Disguised("lite-udf-space", LITE, "SELECT purge (1)", ("unknown_function",)),
    Disguised("lite-udf-group-by", LITE, "SELECT count(*) FROM t GROUP BY purge(a)", ("unknown_function",)),
    Disguised("lite-pragma-main-writable", LITE, "PRAGMA main.writable_schema = ON", ()),
    Disguised("lite-alias-delete", LITE, "SELECT 1 DELETE FROM t", ("unparseable",)),
    Disguised("lite-table-alias-drop", LITE, "SELECT * FROM t DROP", ("unparseable",)),
]

DISGUISED = PG_CASES + MY_CASES + LITE_CASES


def test_each_dialect_has_sixty_disguised_writes() -> None:
    counts = {d: sum(1 for c in DISGUISED if c.dialect in d) for d in ((PG,), (MY, MARIA), (LITE,))}
    assert all(n >= 60 for n in counts.values()), counts
    assert len({c.id for c in DISGUISED}) == len(DISGUISED)


@pytest.mark.parametrize("case", DISGUISED, ids=[c.id for c in DISGUISED])
def test_disguised_write_is_never_read_only(case: Disguised) -> None:
    result = analyze_sql(case.sql, case.dialect)
    assert not result.read_only, result
    assert set(case.flags) <= set(result.flags), result.reasons
    assert set(result.flags) <= set(FLAGS)
    assert result.texts == tuple(split_statements(case.sql, case.dialect))


ALL_CELLS = [(c.dialect, c.sql) for c in BASE_CASES] + [(c.dialect, c.sql) for c in DISGUISED] + [
    (PG, "SELECT 1; -- c;\n /* x */ SELECT 'é;' ;; select 'ü'; -- tail"),
    (PG, "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 'é'; SELECT 2; END; SELECT 3"),
    (PG, "SELECT U&'\\00e9;' , $t$;$t$ ; SELECT E'\\';' ; select 3"),
    (PG, "select 'unterminated; select 2"),
    (MY, "SELECT 'é;'; # x;\nSELECT `a;b`;;"),
    (LITE, "SELECT 'é;'; -- x;\nSELECT [a;b]; "),
]


@pytest.mark.parametrize("dialect,sql", ALL_CELLS)
def test_texts_are_the_kernels_split(dialect: str, sql: str) -> None:
    assert analyze_sql(sql, dialect).texts == tuple(split_statements(sql, dialect))


def test_texts_not_in_as_dict_and_python_has_none() -> None:
    result = analyze_sql("SELECT 1; SELECT 2", PG)
    assert result.texts == ("SELECT 1", "SELECT 2")
    assert "texts" not in result.as_dict()
    assert analyze("x = 1", "python", None).texts == ()


# ---------------------------------------------------------------------------- understood reads stay read-only

READS = [
    (PG, "SELECT lower(name), count(*), max(total)::numeric(10, 2), now() - interval '1 day' FROM t GROUP BY 1"),
    (PG, "SELECT coalesce(a, b), greatest(1, 2), nullif(a, 0), CASE WHEN a ~~ 'x%' THEN 1 END FROM t"),
    (PG, "SELECT row_number() OVER (PARTITION BY a ORDER BY b), percentile_cont(0.5) WITHIN GROUP (ORDER BY x) "
         "FROM t"),
    (PG, "SELECT count(*) FILTER (WHERE a > 1), string_agg(name, ', ') FROM t"),
    (PG, "SELECT extract(year FROM now()), date_trunc('day', created), to_char(now(), 'YYYY') FROM t"),
    (PG, """SELECT '{"a":1}'::jsonb -> 'a', jsonb_build_object('a', 1), '1'::int, 'x'::text, '2020-01-01'::date"""),
    (PG, "SELECT pg_catalog.lower('A'), trim(both ' ' from x), substring(x from 1 for 2), position('a' in x) FROM t"),
    (PG, "SELECT * FROM U&\"\\0061ccounts\" WHERE x BETWEEN 1 AND 2 AND y IN (1, 2) AND z IS DISTINCT FROM 3"),
    (PG, "SELECT * FROM generate_series(1, 10) g, unnest(ARRAY[1, 2]) u"),
    (PG, "SELECT 1 --\u00a0; DROP TABLE t"),
    (MY, "SELECT lower(name), count(*), CAST(x AS DECIMAL(10, 2)), IFNULL(a, 0), DATE_FORMAT(d, '%Y') FROM t"),
    (MY, "SELECT IF(a > 1, 'x', 'y'), CONCAT(a, b), JSON_EXTRACT(j, '$.a'), NOW() FROM t GROUP BY 1"),
    (MY, "WITH x(a) AS (SELECT 1) SELECT * FROM x"),
    (MARIA, "SELECT row_number() OVER (ORDER BY id), LEFT(name, 2), REPLACE(name, 'a', 'b') FROM t"),
    (LITE, "SELECT lower(name), count(*), ifnull(a, 0), strftime('%Y', d), json_extract(j, '$.a') FROM t"),
    (LITE, "SELECT * FROM json_each('[1, 2]')"),
    (LITE, "SELECT * FROM pragma_table_info('t')"),
]


@pytest.mark.parametrize("dialect,sql", READS)
def test_allow_listed_reads_stay_read_only(dialect: str, sql: str) -> None:
    result = analyze_sql(sql, dialect)
    assert result.read_only, result.reasons


def test_tables_and_functions_are_decoded() -> None:
    result = analyze_sql('SELECT U&"\\0064blink"(\'h\', \'x\') FROM U&"\\0061udit_log", public."Audit_Log"', PG)
    assert set(result.tables) >= {"audit_log", "public.audit_log"}
    assert "dblink" in result.functions
    assert analyze_sql('DELETE FROM "Audit_Log" WHERE id = 1', PG).tables == ("audit_log",)
    assert analyze_sql('DROP TABLE U&"\\0061udit_log"', PG).tables == ("audit_log",)


def test_normalized_drops_comments() -> None:
    result = analyze_sql("SELECT /* x */ 1 -- y\n; DROP /* z */ TABLE t", PG)
    assert result.normalized == ("SELECT 1", "DROP TABLE t")
    assert analyze_sql("SELECT /* x */ 1 # y\n", MY).normalized == ("SELECT 1",)


def test_allow_lists_hold_no_function_with_effects() -> None:
    from cellgate.gateway.risk.functions import _function_rule

    for dialect, names in sqlfuncs.FUNCTIONS.items():
        bad = sorted(n for n in names if _function_rule(n) is not None)
        assert not bad, (dialect, bad)
    for name in ("txid_current", "pg_advisory_lock", "setseed", "last_insert_id", "sleep", "load_extension",
                 "pg_stat_reset", "ts_rewrite", "lo_get", "nextval", "get_lock", "is_free_lock"):
        assert not any(name in names for names in sqlfuncs.FUNCTIONS.values()), name


# ---------------------------------------------------------------------------- doubtful characters, every position

_ODD = ["\u00a0", "\u1680", "\u2000", "\u2001", "\u2003", "\u2007", "\u200a", "\u200b", "\u200e", "\u2028", "\u2029",
        "\u202f", "\u205f", "\u3000", "\ufeff", "\u0085", "\x0b", "\x0c", "\x00", "\x1f", "\x7f"]
_POSITIONS = ["SELECT{c}1", "SELECT 1 --{c}; DROP TABLE t", "SELECT 1 --{c}\nDROP TABLE t", "{c}SELECT 1",
              "SELECT 1{c}", "SELECT 1 /*{c}*/", "SELECT 1;{c}DROP TABLE t", "SELECT a{c}b FROM t"]


@pytest.mark.parametrize("dialect", [MY, LITE])
@pytest.mark.parametrize("char", _ODD, ids=[f"U+{ord(c):04X}" for c in _ODD])
def test_doubtful_characters_outside_literals_are_unparseable(dialect: str, char: str) -> None:
    for position in _POSITIONS + (["SELECT 1 #{c}\nDROP TABLE t"] if dialect == MY else []):
        sql = position.format(c=char)
        result = analyze_sql(sql, dialect)
        assert not result.parsed and not result.read_only, (sql, result.reasons)
        assert result.texts == tuple(split_statements(sql, dialect))


@pytest.mark.parametrize("dialect", [MY, LITE])
def test_odd_characters_inside_string_literals_are_fine(dialect: str) -> None:
    result = analyze_sql("SELECT 'a\u00a0b\u200bc\u3000'", dialect)
    assert result.read_only, result.reasons


@pytest.mark.parametrize("char", _ODD, ids=[f"U+{ord(c):04X}" for c in _ODD])
def test_postgres_reads_odd_characters_as_its_own_parser_does(char: str) -> None:
    """PostgreSQL's scanner is the server's: a cell is parsed exactly when libpg_query accepts it."""
    from pglast import parser

    for position in _POSITIONS:
        sql = position.format(c=char)
        result = analyze_sql(sql, PG)
        try:
            parser.parse_sql(sql)
            accepted = True
        except Exception:
            accepted = False
        if not accepted:
            assert not result.parsed and not result.read_only, sql
        assert result.texts == tuple(split_statements(sql, PG))


# ---------------------------------------------------------------------------- EXPLAIN, deadline, speed

@pytest.mark.parametrize("dialect,sql,explained", [
    (PG, "UPDATE t SET a = 1 WHERE id = 2", True),
    (PG, "UPDATE t SET a = bump(1) WHERE id = 2", False),
    (PG, "DELETE FROM t WHERE id = pg_sleep(1)::text::int", False),
    (PG, "DELETE FROM t WHERE id = 1; SELECT '\\'", False),
    (MY, "UPDATE t SET a = 1 WHERE id = 2", True),
    (MY, "UPDATE t SET a = 1 WHERE id = (SELECT 2)", False),
    (MARIA, "DELETE FROM t WHERE id IN (SELECT id FROM u)", False),
    (MY, "DELETE FROM t WHERE id = purge(1)", False),
    (LITE, "DELETE FROM t WHERE id = 1", True),
    (LITE, "DELETE FROM t WHERE id = purge(1)", False),
])
def test_explain_lists_only_understood_statements(dialect: str, sql: str, explained: bool) -> None:
    assert bool(analyze_sql(sql, dialect).explain) is explained


@pytest.mark.parametrize("dialect", [PG, MY, LITE])
def test_deadline_passed_is_a_timeout(dialect: str) -> None:
    code = "SELECT 1;\n" * 50
    result = analyze("SELECT 1;\n" * 50, "sql", dialect, deadline=time.monotonic() - 1)
    assert (result.level, result.parsed, result.read_only) == ("high", False, False)
    assert result.flags == ("analysis_timeout",)
    assert "ran out of time" in result.reasons[0]
    assert result.texts == tuple(split_statements(code, dialect))
    assert RULES["sql.analysis_timeout"][0] == "high"


def test_deadline_in_the_future_changes_nothing() -> None:
    assert analyze("SELECT 1", "sql", PG, deadline=time.monotonic() + 60).read_only


@pytest.mark.parametrize("dialect", [PG, MY, LITE])
def test_big_cells_are_linear(dialect: str) -> None:
    started = time.monotonic()
    result = analyze_sql("SELECT 1;\n" * 2000, dialect)
    literal = analyze_sql("SELECT '" + "x;" * (1 << 18) + "'", dialect)
    assert len(result.texts) == 2000 and result.read_only
    assert len(literal.texts) == 1
    assert time.monotonic() - started < 20  # about 0.5 s on an idle core


@pytest.mark.parametrize("dialect", [PG, MY, MARIA, LITE])
@pytest.mark.parametrize("sql", ["SELECT 1\x00; DELETE FROM t", "SELECT 1\x00", "SELECT '\x00'", "\x00DELETE FROM t"])
def test_a_nul_character_is_unparseable(dialect: str, sql: str) -> None:
    """PostgreSQL's parser and libpq stop reading at a NUL (``SELECT 1\\x00; DELETE…`` parsed as one
    read): text past it is never seen, so a cell holding one is reviewed, whatever the dialect."""
    result = analyze_sql(sql, dialect)
    assert not result.read_only and not result.parsed and "unparseable" in result.flags, result


@pytest.mark.parametrize("dialect", [MY, MARIA])
def test_a_hex_literal_of_half_a_byte_is_unparseable_on_mysql(dialect: str) -> None:
    """MySQL/MariaDB refuse X'4' and X'123' (whole bytes only); the analysis read them as literals."""
    for sql in ("SELECT x'4'", "SELECT X'123'", "SELECT 1 FROM t WHERE a = x'abc'"):
        result = analyze_sql(sql, dialect)
        assert not result.read_only and "unparseable" in result.flags, (sql, result)
    for sql in ("SELECT x'41'", "SELECT X''", "SELECT 0x4", "SELECT b'101'", "SELECT 0b1"):
        assert analyze_sql(sql, dialect).read_only, sql
