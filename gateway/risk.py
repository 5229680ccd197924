"""Risk analysis of a cell before anyone reviews it: what it does, how bad it could be.

Pure logic, no I/O: :func:`analyze` takes the code of a cell, the target's kind (``sql`` or
``python``) and its SQL dialect, and returns a :class:`Risk` that policy decides on
(``read_only`` and ``parsed`` for auto-approval, ``statements``/``tables``/``level`` for deny
rules) and reviewers read (``reasons``, most serious first).

SQL is split with kernels/sql/split.py, the splitter the kernel runs the cell with, so the
analysis reads exactly the statements that run (``Risk.texts``). PostgreSQL statements are read
by PostgreSQL's own parser (pglast): its tree gives the decoded names of functions, operators,
casts and tables, and classifies queries; sqlglot classifies the other statements, one at a
time, so that one statement it cannot read does not hide what the others do. MySQL/MariaDB and
SQLite are read by sqlglot, checked against the servers' own lexical rules. Every function call
must be on the dialect's allow-list of pure built-ins (gateway/sqlfuncs.py).

The analysis fails closed: whatever it cannot read, or the server might read differently, is
``unparseable`` (level high, never auto-approved); an unknown function is ``unknown_function``
(not read-only); the fallbacks used for unreadable statements (keywords, function names in the
tokens) can only add risk.

Every rule and its level is in :data:`RULES`, the one table docs/risk.md describes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from cellgate.kernels.sql.split import split_postgres, split_statements, split_tokens
from .sqlfuncs import known_function, known_operator, known_type

_Node = getattr(exp, "Expr", None) or exp.Expression  # sqlglot ≥ 30 names the base class Expr

LEVELS = ("low", "medium", "high", "critical")

FLAGS = (
    "unparseable", "multiple_statements", "write", "ddl", "dcl", "update_without_where",
    "delete_without_where", "tautological_where", "drop", "truncate", "alter", "write_in_cte",
    "select_into", "side_effect_function", "file_write", "transaction_control", "session_change",
    "copy", "call", "lock", "unknown_function", "analysis_timeout",
)
PYTHON_FLAGS = (
    "subprocess", "network", "file_write", "eval_exec", "env_access", "dynamic_code",
    "shell_magic", "unparseable", "sql_write",
)

#: Every rule the analysis applies: id → (level, what it covers). A finding names its rule; the
#: level of a cell is the highest level among its findings. docs/risk.md renders this table.
RULES: dict[str, tuple[str, str]] = {
    # --- SQL, low
    "sql.read": ("low", "pure reads: SELECT, WITH … SELECT, UNION, VALUES, TABLE, SHOW, DESCRIBE, "
                        "EXPLAIN without ANALYZE, read-only PRAGMA"),
    "sql.multiple_statements": ("low", "several statements in one cell, all of them reads"),
    # --- SQL, medium
    "sql.dml": ("medium", "INSERT, UPDATE, DELETE, MERGE, REPLACE with a real WHERE clause (or INSERT … VALUES/SELECT)"),
    "sql.lock": ("medium", "LOCK TABLE(S), UNLOCK TABLES, SELECT … FOR UPDATE/SHARE"),
    "sql.transaction_control": ("medium", "BEGIN, START TRANSACTION, COMMIT, END, ROLLBACK, SAVEPOINT, RELEASE"),
    "sql.session_change": ("medium", "SET, SET ROLE, SET SESSION AUTHORIZATION, RESET, DISCARD, USE, PREPARE, "
                                     "LISTEN/NOTIFY, SELECT … INTO @variable, PRAGMA that sets a value, DETACH"),
    "sql.temp_table": ("medium", "CREATE TEMPORARY TABLE: visible to this session only, gone when it ends"),
    "sql.maintenance": ("medium", "ANALYZE, plain VACUUM, CHECKPOINT, REINDEX/REFRESH … CONCURRENTLY, CHECK TABLE"),
    "sql.function_state": ("medium", "functions that change session or server state a little: nextval, setval, "
                                     "set_config, pg_notify, advisory locks, get_lock, pg_sleep, sleep, benchmark"),
    "sql.unknown_function": ("medium", "a function, operator or cast the dialect's allow-list of pure built-ins does "
                                       "not hold (user-defined, or a built-in with effects): reviewed"),
    # --- SQL, high
    "sql.ddl": ("high", "CREATE (table, index, view, function, trigger, schema…), COMMENT ON, CREATE TABLE … AS"),
    "sql.alter": ("high", "ALTER TABLE and other ALTER statements, RENAME TABLE"),
    "sql.write_in_cte": ("high", "INSERT/UPDATE/DELETE inside WITH: a statement that reads like a SELECT writes"),
    "sql.select_into": ("high", "SELECT … INTO table: creates a table"),
    "sql.unparseable": ("high", "SQL that could not be parsed in the target's dialect, a statement type the "
                                "analysis does not know, or text whose statements cannot be told apart reliably "
                                "(MySQL executable comments, a backslash before a quote, a character the server "
                                "may read differently)"),
    "sql.call": ("high", "CALL, DO, EXECUTE: procedures and prepared statements whose effects are not visible"),
    "sql.copy": ("high", "COPY to/from the client, LOAD DATA LOCAL INFILE"),
    "sql.multiple_statements_with_write": ("high", "several statements in one cell, at least one of them a write"),
    "sql.exclusive_maintenance": ("high", "VACUUM FULL, SQLite VACUUM, CLUSTER, REINDEX, OPTIMIZE/REPAIR TABLE, "
                                          "REFRESH MATERIALIZED VIEW: rewrite under an exclusive lock"),
    "sql.server_setting": ("high", "SET GLOBAL/PERSIST, ALTER SYSTEM, FLUSH, PRAGMA writable_schema and the like: "
                                   "change the server for every session"),
    "sql.function_high": ("high", "functions that reach other servers or control the server: dblink*, "
                                  "pg_cancel_backend, pg_reload_conf, query_to_xml, replication slots, lo_unlink…"),
    "sql.unknown_dialect": ("high", "a SQL dialect the analysis does not support"),
    "sql.analysis_timeout": ("high", "the analysis ran out of time before it finished: reviewed, never auto-approved"),
    # --- SQL, critical
    "sql.drop": ("critical", "DROP (database, schema, table, index, anything), ALTER TABLE … DROP COLUMN/PARTITION"),
    "sql.truncate": ("critical", "TRUNCATE"),
    "sql.dcl": ("critical", "GRANT, REVOKE, CREATE/ALTER/DROP USER or ROLE, SET PASSWORD, ALTER DEFAULT PRIVILEGES, "
                            "REASSIGN OWNED"),
    "sql.update_without_where": ("critical", "UPDATE without WHERE: every row changes"),
    "sql.delete_without_where": ("critical", "DELETE without WHERE: every row goes"),
    "sql.tautological_where": ("critical", "UPDATE/DELETE whose WHERE is always true (1=1, TRUE, 'a'='a', x = x, … OR 1=1)"),
    "sql.file_write": ("critical", "writes a file on the database server: SELECT … INTO OUTFILE/DUMPFILE, COPY … TO "
                                  "'file', lo_export, writefile, VACUUM INTO, ATTACH DATABASE"),
    "sql.server_access": ("critical", "reaches the server itself: ends other sessions (pg_terminate_backend, KILL), "
                                      "reads server files (pg_read_file, pg_ls_dir, lo_import, load_file, readfile, "
                                      "COPY FROM 'file', LOAD DATA INFILE), runs programs (COPY … PROGRAM, sys_exec), "
                                      "loads native code (load_extension, CREATE EXTENSION, INSTALL PLUGIN), "
                                      "stops the server (SHUTDOWN)"),
    # --- Python
    "python.clean": ("low", "Python without any of the flags below"),
    "python.file_write": ("medium", "writes, moves or deletes files: open(…, 'w'/'a'/'x'/'+'), pathlib write_text/"
                                    "unlink/…, shutil, os.remove/rename/makedirs/chmod…, DataFrame.to_csv(path), "
                                    "%%writefile"),
    "python.env_access": ("medium", "reads or changes the environment, where the target's credentials live: "
                                    "os.environ, os.getenv, os.putenv, %env"),
    "python.subprocess": ("high", "starts processes: subprocess, os.system, os.popen, os.exec*, os.spawn*, pty, "
                                  "os.kill, asyncio.create_subprocess_*"),
    "python.network": ("high", "talks to the network: socket, urllib.request, http.client, requests, httpx, "
                               "aiohttp, ftplib, smtplib, paramiko, telnetlib, boto3…"),
    "python.eval_exec": ("high", "runs code built at run time: eval, exec, compile, __import__, importlib, "
                                 "runpy, getattr on a module with a computed name, %run, %load_ext"),
    "python.dynamic_code": ("high", "loads code or native memory: pickle/marshal/dill loads, shelve, "
                                    "pandas.read_pickle, yaml.load without a safe loader, ctypes, cffi"),
    "python.shell_magic": ("high", "IPython shell escapes and magics: !cmd, x = !cmd, %%bash, %%sh, %%script, "
                                   "%sx, %system, %pip, %rm…, and magics the scan does not know"),
    "python.sql_write": ("high", "runs SQL that is not a plain read, or SQL built at run time: cursor.execute, "
                                 "executemany, executescript, read_sql, sqlalchemy text(), DataFrame.to_sql"),
    "python.unparseable": ("high", "Python that does not parse (SyntaxError): never auto-approvable"),
    # --- other kinds
    "kind.unknown": ("high", "cells of a kind that has no analyser"),
}

_RANK = {level: i for i, level in enumerate(LEVELS)}


@dataclass(frozen=True)
class Risk:
    level: str                     # one of LEVELS
    reasons: tuple[str, ...]       # human sentences, most serious first
    flags: tuple[str, ...]         # machine-readable, sorted (FLAGS or PYTHON_FLAGS)
    statements: tuple[str, ...]    # statement types in order, upper case
    tables: tuple[str, ...]        # lower-case, schema-qualified when written so, sorted, no CTE names
    read_only: bool                # True only when parsed and every statement is a pure read
    parsed: bool                   # False when any statement could not be parsed
    explain: tuple[str, ...] = ()  # UPDATE/DELETE statements (original text) an agent may EXPLAIN
    texts: tuple[str, ...] = ()    # the statement texts, exactly as kernels/sql/split.py splits the cell
    functions: tuple[str, ...] = ()   # functions called, decoded, lower-case, "schema.name" when qualified
    normalized: tuple[str, ...] = ()  # each statement's tokens without comments, joined by one space

    def as_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "reasons": list(self.reasons),
            "flags": list(self.flags),
            "statements": list(self.statements),
            "tables": list(self.tables),
            "read_only": self.read_only,
            "parsed": self.parsed,
            "explain": list(self.explain),
        }


class Findings:
    """What an analysis found: (rule, sentence) pairs and flags, turned into a :class:`Risk`."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []
        self.flags: set[str] = set()

    def add(self, rule: str, sentence: str, *flags: str) -> None:
        if rule not in RULES:  # a typo here must fail the tests, not pass silently
            raise KeyError(f"unknown risk rule {rule!r}")
        self.items.append((rule, sentence))
        self.flags.update(flags)

    def extend(self, other: Findings) -> None:
        self.items.extend(other.items)
        self.flags.update(other.flags)

    def level(self) -> str:
        return max((RULES[rule][0] for rule, _ in self.items), key=_RANK.__getitem__, default="low")

    def reasons(self) -> tuple[str, ...]:
        ordered = sorted(self.items, key=lambda item: -_RANK[RULES[item[0]][0]])  # stable: cell order within a level
        seen: dict[str, None] = {}
        for _, sentence in ordered:
            seen.setdefault(sentence, None)
        return tuple(seen)


# ============================================================================ dispatcher

def analyze(code: str, kind: str, dialect: str | None, *, deadline: float | None = None) -> Risk:
    """The risk of one cell: SQL in ``dialect``, Python, or a kind nobody analyses (high).

    ``deadline`` is a :func:`time.monotonic` value: a SQL analysis still running then stops and
    returns a high, not-parsed Risk flagged ``analysis_timeout``.
    """
    if kind == "sql":
        return analyze_sql(code, dialect or "", deadline=deadline)
    if kind == "python":
        from .pyscan import analyze_python  # pyscan imports this module
        return analyze_python(code)
    found = Findings()
    found.add("kind.unknown", f"cells of kind {kind!r} are not analysed", "unparseable")
    return Risk(level=found.level(), reasons=found.reasons(), flags=tuple(sorted(found.flags)),
                statements=(), tables=(), read_only=False, parsed=False)


# ============================================================================ SQL

#: cellgate dialect → sqlglot dialect
SQLGLOT_DIALECTS = {"postgresql": "postgres", "postgres": "postgres", "mysql": "mysql",
                    "mariadb": "mysql", "sqlite": "sqlite"}
_DIALECT_NAMES = {"postgres": "PostgreSQL", "mysql": "MySQL/MariaDB", "sqlite": "SQLite"}
_DIALECT_CACHE: dict[str, tuple[Dialect, type]] = {}

# sqlglot logs a warning each time it falls back to exp.Command; those statements are handled
# here, so the warning is noise. A filter on its logger drops records only while we analyse.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("cellgate_risk_quiet", default=False)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


_sqlglot_logger = logging.getLogger("sqlglot")
if not any(isinstance(f, _QuietFilter) for f in _sqlglot_logger.filters):
    _sqlglot_logger.addFilter(_QuietFilter())


def _dialect(name: str) -> tuple[Dialect, type]:
    """The sqlglot dialect and a tokenizer for it that never folds a statement into one string.

    sqlglot's tokenizer turns everything after a "command" keyword (EXPLAIN, CALL, VACUUM, SHOW,
    LOCK, REPLACE…) into a single string token, so neither the parser nor the checks here would
    see the statement's own tokens. Statement boundaries are the same either way: the folded
    text is scanned with the same rules and stops at the same semicolon.
    """
    cached = _DIALECT_CACHE.get(name)
    if cached is None:
        dialect = Dialect.get_or_raise(name)
        tokenizer = type(f"{type(dialect).__name__}RiskTokenizer", (dialect.tokenizer_class,), {"COMMANDS": set()})
        cached = _DIALECT_CACHE[name] = (dialect, tokenizer)
    return cached


def _node_class(name: str) -> type | None:
    return getattr(exp, name, None)


#: parsed statement node → statement type; anything else at the top is not a statement we know
_STATEMENT_TYPES: dict[type, str] = {
    cls: kind
    for name, kind in (
        ("Select", "SELECT"), ("SetOperation", "SELECT"), ("Subquery", "SELECT"), ("Values", "VALUES"),
        ("Insert", "INSERT"), ("Update", "UPDATE"), ("Delete", "DELETE"), ("Merge", "MERGE"),
        ("Create", "CREATE"), ("Drop", "DROP"), ("Alter", "ALTER"), ("TruncateTable", "TRUNCATE"),
        ("Grant", "GRANT"), ("Revoke", "REVOKE"), ("Set", "SET"), ("Use", "USE"),
        ("Transaction", "BEGIN"), ("Commit", "COMMIT"), ("Rollback", "ROLLBACK"), ("Show", "SHOW"),
        ("Describe", "DESCRIBE"), ("Copy", "COPY"), ("Pragma", "PRAGMA"), ("Attach", "ATTACH"),
        ("Detach", "DETACH"), ("Analyze", "ANALYZE"), ("Kill", "KILL"), ("Comment", "COMMENT"),
    )
    if (cls := _node_class(name)) is not None
}
def _statement_type(tree: exp.Expr | None) -> str | None:
    for cls in type(tree).__mro__:  # Union → SetOperation
        if cls in _STATEMENT_TYPES:
            return _STATEMENT_TYPES[cls]
    return None


_GRANTS = {c for c in (_node_class("Grant"), _node_class("Revoke")) if c}
_DML = tuple(c for c in (_node_class("Insert"), _node_class("Update"), _node_class("Delete"), _node_class("Merge")) if c)

#: statement keywords reported as such when a statement is classified from its tokens
_KEYWORD_TYPES = {
    "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "VALUES", "TABLE", "CREATE",
    "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE", "SET", "RESET", "SHOW", "EXPLAIN", "DESCRIBE",
    "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "CALL", "DO", "EXECUTE", "PREPARE",
    "DEALLOCATE", "COPY", "LOAD", "LOCK", "UNLOCK", "USE", "VACUUM", "ANALYZE", "CHECKPOINT",
    "CLUSTER", "REINDEX", "OPTIMIZE", "REPAIR", "CHECK", "CHECKSUM", "REFRESH", "FLUSH", "KILL",
    "LISTEN", "UNLISTEN", "NOTIFY", "DISCARD", "PRAGMA", "ATTACH", "DETACH", "COMMENT", "HANDLER",
    "RENAME", "DECLARE", "FETCH", "MOVE", "CLOSE", "XA", "SHUTDOWN", "RESTART", "INSTALL", "UNINSTALL",
    "REASSIGN",
}
_KEYWORD_ALIASES = {"DESC": "DESCRIBE", "END": "COMMIT", "ABORT": "ROLLBACK", "EXEC": "EXECUTE",
                    "WITH": "SELECT", "TABLE": "SELECT"}

#: tokens that start the statement an EXPLAIN explains
_STATEMENT_START = {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "VALUES", "TABLE",
                    "CREATE", "EXECUTE", "DECLARE"}

# Functions with effects even inside a SELECT: name → (rule, extra flags, what it does).
_FUNCTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    # PostgreSQL
    "pg_terminate_backend": ("sql.server_access", (), "ends another session"),
    "pg_cancel_backend": ("sql.function_high", (), "cancels another session's query"),
    "pg_reload_conf": ("sql.function_high", (), "reloads the server configuration"),
    "pg_promote": ("sql.server_access", (), "promotes a standby server"),
    "pg_rotate_logfile": ("sql.function_high", (), "rotates the server log"),
    "pg_switch_wal": ("sql.function_high", (), "switches the write-ahead log"),
    "pg_create_restore_point": ("sql.function_high", (), "creates a restore point"),
    "pg_drop_replication_slot": ("sql.function_high", (), "drops a replication slot"),
    "pg_create_physical_replication_slot": ("sql.function_high", (), "creates a replication slot"),
    "pg_create_logical_replication_slot": ("sql.function_high", (), "creates a replication slot"),
    "set_config": ("sql.function_state", ("session_change",), "changes a setting"),
    "nextval": ("sql.function_state", (), "advances a sequence"),
    "setval": ("sql.function_state", (), "moves a sequence"),
    "pg_notify": ("sql.function_state", (), "notifies other sessions"),
    "pg_sleep": ("sql.function_state", (), "holds the session (and its locks) while it sleeps"),
    "pg_sleep_for": ("sql.function_state", (), "holds the session (and its locks) while it sleeps"),
    "pg_sleep_until": ("sql.function_state", (), "holds the session (and its locks) while it sleeps"),
    "lo_import": ("sql.server_access", (), "reads a file on the database server"),
    "lo_export": ("sql.file_write", ("file_write",), "writes a file on the database server"),
    "lo_unlink": ("sql.function_high", ("write",), "deletes a large object"),
    "lo_create": ("sql.function_high", ("write",), "creates a large object"),
    "lo_creat": ("sql.function_high", ("write",), "creates a large object"),
    "lo_from_bytea": ("sql.function_high", ("write",), "creates a large object"),
    "lo_put": ("sql.function_high", ("write",), "writes a large object"),
    "lowrite": ("sql.function_high", ("write",), "writes a large object"),
    "pg_read_file": ("sql.server_access", (), "reads a file on the database server"),
    "pg_read_binary_file": ("sql.server_access", (), "reads a file on the database server"),
    "pg_stat_file": ("sql.server_access", (), "inspects a file on the database server"),
    "pg_file_write": ("sql.file_write", ("file_write",), "writes a file on the database server"),
    "pg_file_rename": ("sql.file_write", ("file_write",), "renames a file on the database server"),
    "pg_file_unlink": ("sql.file_write", ("file_write",), "deletes a file on the database server"),
    "query_to_xml": ("sql.function_high", (), "runs the SQL it is given as text"),
    "query_to_xmlschema": ("sql.function_high", (), "runs the SQL it is given as text"),
    "query_to_xml_and_xmlschema": ("sql.function_high", (), "runs the SQL it is given as text"),
    # MySQL / MariaDB
    "sleep": ("sql.function_state", (), "holds the connection (and its locks) while it sleeps"),
    "benchmark": ("sql.function_state", (), "burns server CPU on purpose"),
    "load_file": ("sql.server_access", (), "reads a file on the database server"),
    "get_lock": ("sql.function_state", ("lock",), "takes a named lock"),
    "release_lock": ("sql.function_state", ("lock",), "releases a named lock"),
    "release_all_locks": ("sql.function_state", ("lock",), "releases named locks"),
    "master_pos_wait": ("sql.function_state", (), "waits for replication"),
    "source_pos_wait": ("sql.function_state", (), "waits for replication"),
    "sys_exec": ("sql.server_access", (), "runs a program on the database server"),
    "sys_eval": ("sql.server_access", (), "runs a program on the database server"),
    # SQLite
    "load_extension": ("sql.server_access", (), "loads native code into the database process"),
    "writefile": ("sql.file_write", ("file_write",), "writes a file"),
    "readfile": ("sql.server_access", (), "reads a file"),
    "fts3_tokenizer": ("sql.function_high", (), "registers a tokenizer by memory address"),
}
_FUNCTION_PREFIXES: tuple[tuple[str, tuple[str, tuple[str, ...], str]], ...] = (
    ("dblink", ("sql.function_high", (), "runs SQL on another server")),
    ("pg_advisory_", ("sql.function_state", ("lock",), "takes or releases an advisory lock")),
    ("pg_try_advisory_", ("sql.function_state", ("lock",), "takes an advisory lock")),
    ("pg_ls_", ("sql.server_access", (), "lists a directory on the database server")),
)


def _function_rule(name: str) -> tuple[str, tuple[str, ...], str] | None:
    name = name.lower()
    found = _FUNCTIONS.get(name)
    if found is None:
        for prefix, rule in _FUNCTION_PREFIXES:
            if name.startswith(prefix):
                return rule
    return found


class _Stmt:
    """What one statement does."""

    def __init__(self, kind: str = "OTHER") -> None:
        self.kind = kind
        self.found = Findings()
        self.tables: set[str] = set()
        self.read_only = False
        self.explain: list[str] = []
        self.no_explain = False  # MariaDB's EXPLAIN evaluates constant subqueries: not for the agent to run

    def understood(self) -> bool:
        """Parsed, no function the allow-list does not hold, no function with effects."""
        return self.parsed and not self.no_explain and not (self.flags & {"unknown_function", "side_effect_function"})

    def add(self, rule: str, sentence: str, *flags: str) -> None:
        self.found.add(rule, sentence, *flags)

    @property
    def flags(self) -> set[str]:
        return self.found.flags

    @property
    def parsed(self) -> bool:
        return "unparseable" not in self.found.flags


class _Ctx:
    def __init__(self, code: str, sg: str) -> None:
        self.code = code
        self.sg = sg
        self.dialect, self.tokenizer_class = _dialect(sg)
        self.name = _DIALECT_NAMES[sg]

    def tokenize(self) -> list[Token]:
        return self.tokenizer_class(dialect=self.dialect).tokenize(self.code)

    def text(self, toks: list[Token]) -> str:
        return self.code[toks[0].start: toks[-1].end + 1]

    def parse(self, toks: list[Token]) -> exp.Expr | None:
        trees = self.dialect.parser().parse(toks, self.code)
        return trees[0] if trees else None


def analyze_sql(code: str, dialect: str, *, deadline: float | None = None) -> Risk:
    """The risk of a cell of SQL in ``dialect`` (postgresql, mysql, mariadb or sqlite)."""
    sg = SQLGLOT_DIALECTS.get((dialect or "").lower())
    if sg is None:
        found = Findings()
        found.add("sql.unknown_dialect", f"SQL dialect {dialect!r} is not supported by the risk analysis",
                  "unparseable")
        return _risk(found, [])
    token = _QUIET.set(True)
    try:
        return _ANALYSERS[sg](code, _Ctx(code, sg), deadline)
    except _OutOfTime as late:
        return _timed_out(code, sg, late.texts)
    finally:
        _QUIET.reset(token)


class _OutOfTime(Exception):
    """The deadline passed while the analysis was running (``texts``: the cell's split, if done)."""

    def __init__(self, texts: list[str] | None) -> None:
        super().__init__("the risk analysis ran out of time")
        self.texts = texts


def _check_time(deadline: float | None, texts: list[str]) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _OutOfTime(texts)


def _timed_out(code: str, sg: str, texts: list[str] | None) -> Risk:
    found = Findings()
    found.add("sql.analysis_timeout", f"the analysis ran out of time on this {len(code.encode('utf-8'))}-byte cell; "
              "it is reviewed, never auto-approved", "analysis_timeout")
    if texts is None:
        try:
            texts = split_statements(code, _SPLIT_NAMES[sg])
        except Exception:  # the split is what the kernel runs: without it the kernel refuses the cell
            texts = []
    return Risk(level="high", reasons=found.reasons(), flags=("analysis_timeout",), statements=(), tables=(),
                read_only=False, parsed=False, texts=tuple(texts))


_SPLIT_NAMES = {"postgres": "postgresql", "mysql": "mysql", "sqlite": "sqlite"}


def _analyze_postgres(code: str, ctx: _Ctx, deadline: float | None) -> Risk:
    """PostgreSQL: PostgreSQL's own parser for the statements and names, sqlglot for the rest."""
    cell = Findings()
    pg = split_postgres(code)
    _check_time(deadline, pg.texts)
    if pg.error is not None:
        cell.add("sql.unparseable", f"PostgreSQL's parser rejects the cell: {_snippet(pg.error, 100)}", "unparseable")
    if not pg.scanned:
        st = _Stmt(_first_word_type(code))
        _tokens_or_text(ctx, st, code)
        return _risk(cell, [st], texts=pg.texts)
    _pg_version_doubts(code, cell)
    statements: list[_Stmt] = []
    functions: set[str] = set()
    normalized: list[str] = []
    for i, text in enumerate(pg.texts):
        _check_time(deadline, pg.texts)
        tree = pg.trees[i] if pg.trees is not None else _pg_parse_alone(text)
        sub = _Ctx(text, "postgres")
        facts = _pg_facts(tree) if tree is not None else None
        if facts is not None and facts.pure_query():
            # a query without INTO, FOR UPDATE or a write inside: PostgreSQL's own reading says all there is
            found = [_Stmt("VALUES" if _pg_is_values(tree) else "SELECT")]
            found[0].read_only = True
        else:
            found = _sqlglot_statements(sub, text)
        if facts is not None:
            functions.update(facts.function_names())
            for st in found:
                _pg_apply(st, facts, tree)
            _pg_agree(found, facts, sub)
        elif pg.trees is None:
            for st in found:
                st.add("sql.unparseable", f"PostgreSQL's parser rejects this statement: {_snippet(text)}", "unparseable")
        statements.extend(found)
        normalized.append(_pg_normalized(text))
        _pg_doubts(text, cell)
    _multiple(cell, statements)
    return _risk(cell, statements, texts=pg.texts, functions=functions, normalized=normalized)


def _pg_parse_alone(text: str) -> dict[str, Any] | None:
    """The parser's tree of one statement of a cell the parser rejected, or None when it rejects it too."""
    from pglast import parser

    try:
        stmts = json.loads(parser.parse_sql_json(text)).get("stmts", [])
    except Exception:  # the statement the parser rejects
        return None
    return stmts[0].get("stmt", {}) if len(stmts) == 1 else None


def _sqlglot_statements(ctx: _Ctx, text: str) -> list[_Stmt]:
    """sqlglot's reading of one statement text: one _Stmt, or several when sqlglot splits it (then unparseable)."""
    try:
        tokens = ctx.tokenize()
    except Exception as exc:  # TokenError, or anything sqlglot raises: fail closed
        st = _Stmt(_first_word_type(text))
        st.add("sql.unparseable", f"the statement could not be read as {ctx.name}: {_error_line(exc)}", "unparseable")
        _scan_text(st, text)
        return [st]
    chunks = list(_chunks(tokens))
    found = [_analyze_guarded(ctx, chunk) for chunk in chunks]
    if len(found) != 1:
        st = found[0] if found else _Stmt("OTHER")
        st.add("sql.unparseable", f"sqlglot reads {len(found)} statements where {ctx.name} reads one: "
               f"{_snippet(text)}", "unparseable")
        if not found:
            found = [st]
    return found


def _analyze_tokens(code: str, ctx: _Ctx, deadline: float | None) -> Risk:
    """MySQL/MariaDB and SQLite: sqlglot's tokenizer and parser, checked against the server's reading."""
    cell = Findings()
    try:
        texts, chunks, empty_at = split_tokens(code, ctx.sg)
    except Exception as exc:  # TokenError, or anything sqlglot raises: fail closed
        st = _Stmt(_first_word_type(code))
        st.add("sql.unparseable", f"the SQL could not be read as {ctx.name}: {_error_line(exc)}", "unparseable")
        _scan_text(st, code)
        kernel = split_statements(code, _SPLIT_NAMES[ctx.sg])
        return _risk(cell, [st], texts=kernel)
    if ctx.sg == "sqlite":
        kernel = split_statements(code, "sqlite")
        if kernel != texts:
            cell.add("sql.unparseable", f"SQLite reads {len(kernel)} statements where the analysis reads {len(texts)} "
                     "(a trigger body, or text the two read differently): the statements cannot be told apart "
                     "reliably", "unparseable")
        texts = kernel
    _check_time(deadline, texts)
    _token_doubts(ctx, [tok for chunk in chunks for tok in chunk], cell)
    if ctx.sg == "mysql" and empty_at is not None and code[empty_at:].strip(" \t\n\r;"):
        cell.add("sql.unparseable", "an empty statement (a ; with nothing before it) followed by more text: MariaDB "
                 "rejects the text there, the split drops it, so the two do not agree (remove the extra ;)",
                 "unparseable")
    statements: list[_Stmt] = []
    functions: set[str] = set()
    for chunk in chunks:
        _check_time(deadline, texts)
        st = _analyze_guarded(ctx, chunk)
        functions.update(_token_functions(ctx, st, chunk))
        statements.append(st)
    _multiple(cell, statements)
    normalized = [" ".join(code[t.start:t.end + 1] for t in chunk) for chunk in chunks]
    return _risk(cell, statements, texts=texts, functions=functions, normalized=normalized)


def _multiple(cell: Findings, statements: list[_Stmt]) -> None:
    if len(statements) > 1:
        writes = [st.kind for st in statements if "write" in st.flags]
        if writes:
            cell.add("sql.multiple_statements_with_write",
                     f"{len(statements)} statements in one cell, including {_list(writes)}: they run one after "
                     "another and a failure part-way leaves the earlier ones done", "multiple_statements")
        else:
            cell.add("sql.multiple_statements", f"{len(statements)} statements in one cell", "multiple_statements")


def _tokens_or_text(ctx: _Ctx, st: _Stmt, code: str) -> None:
    """What a cell nothing can read seems to do: its tokens if sqlglot reads them, else its words."""
    try:
        tokens = ctx.tokenize()
    except Exception:  # fail closed: the words are all there is
        _scan_text(st, code)
        return
    for chunk in _chunks(tokens):
        _scan_tokens(st, chunk)
    _scan_text(st, code)


_ANALYSERS = {"postgres": _analyze_postgres, "mysql": _analyze_tokens, "sqlite": _analyze_tokens}


def _risk(cell: Findings, statements: list[_Stmt], texts: list[str] | tuple[str, ...] = (),
          functions: set[str] | None = None, normalized: list[str] | None = None) -> Risk:
    found = Findings()
    for st in statements:
        found.extend(st.found)
    found.extend(cell)
    parsed = "unparseable" not in found.flags
    read_only = parsed and all(st.read_only for st in statements) and not cell.flags - {"multiple_statements"}
    tables = sorted({t for st in statements for t in st.tables})
    if statements and all(rule in ("sql.read", "sql.multiple_statements") for rule, _ in found.items):
        summary = f"read-only: {_list([st.kind for st in statements])}" + (f" on {_list(tables)}" if tables else "")
        found.items.insert(0, ("sql.read", summary))
    elif not statements and not found.items:
        found.items.append(("sql.read", "the cell has no SQL statements"))
    return Risk(
        level=found.level(),
        reasons=found.reasons(),
        flags=tuple(sorted(found.flags)),
        statements=tuple(st.kind for st in statements),
        tables=tuple(tables),
        read_only=read_only,
        parsed=parsed,
        explain=tuple(text for st in statements if parsed and st.understood() for text in st.explain),
        texts=tuple(texts),
        functions=tuple(sorted(functions or ())),
        normalized=tuple(normalized or ()),
    )


def _chunks(tokens: list[Token]) -> Iterator[list[Token]]:
    chunk: list[Token] = []
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            if chunk:
                yield chunk
            chunk = []
        else:
            chunk.append(tok)
    if chunk:
        yield chunk


# ---------------------------------------------------------------------------- PostgreSQL's reading

_PG_WRITES = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}
_PG_READ_STATEMENTS = {"SelectStmt", "ExplainStmt", "VariableShowStmt"}
_PG_TABLE_OBJECTS = {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE"}


class _PgFacts:
    """What PostgreSQL's parser says one statement contains (names decoded as the server decodes them)."""

    def __init__(self) -> None:
        self.kind = ""
        self.funcs: list[tuple[str, ...]] = []
        self.ops: list[tuple[str, ...]] = []
        self.types: list[tuple[str, ...]] = []
        self.tables: set[str] = set()
        self.ctes: set[str] = set()
        self.writes: set[str] = set()
        self.clauses: set[str] = set()     # intoClause, lockingClause
        self.explain_analyze = False
        self.ranges: set[str] = set()      # names a FROM item is known by (alias, or the table's own name)
        self.row_uses: list[tuple[str, str]] = []  # (where, name): a bare name passed to a function, cast, operator

    def pure_query(self) -> bool:
        """A SELECT (or VALUES) without INTO, FOR UPDATE/SHARE or a write inside: a read, to the parser."""
        return self.kind == "SelectStmt" and not self.clauses and not self.writes

    def function_names(self) -> set[str]:
        return {".".join(name).lower() for name in self.funcs}


def _pg_is_values(tree: dict[str, Any]) -> bool:
    return bool(tree.get("SelectStmt", {}).get("valuesLists"))


def _pg_names(items: Any) -> tuple[str, ...]:
    out = []
    for item in items or ():
        value = item.get("String", {}).get("sval") if isinstance(item, dict) else None
        if isinstance(value, str):
            out.append(value)
    return tuple(out)


def _pg_facts(tree: dict[str, Any]) -> _PgFacts:
    facts = _PgFacts()
    facts.kind = next(iter(tree), "")
    top = tree.get(facts.kind, {})
    if facts.kind == "ExplainStmt":
        facts.explain_analyze = any(opt.get("DefElem", {}).get("defname") == "analyze"
                                    for opt in top.get("options") or [])
    if facts.kind == "DropStmt" and top.get("removeType") in _PG_TABLE_OBJECTS:
        for obj in top.get("objects") or []:
            facts.tables.add(".".join(_pg_names(obj.get("List", {}).get("items"))).lower())
    relations: list[dict[str, Any]] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if "relname" in node:
            relations.append(node)
            facts.ranges.add(str((node.get("alias") or {}).get("aliasname") or node.get("relname")))
        for key, value in node.items():
            if key == "FuncCall":
                name = _pg_names(value.get("funcname"))
                facts.funcs.append(name)
                facts.row_uses.extend((f"{'.'.join(name)}()", arg) for arg in map(_bare_name, value.get("args") or ())
                                      if arg)
            elif key == "A_Expr":
                name = _pg_names(value.get("name"))
                facts.ops.append(name)
                facts.row_uses.extend((f"operator {'.'.join(name)}", arg) for arg in
                                      map(_bare_name, (value.get("lexpr"), value.get("rexpr"))) if arg)
            elif key == "TypeCast":
                name = _pg_names((value.get("typeName") or {}).get("names"))
                facts.types.append(name)
                arg = _bare_name(value.get("arg"))
                if arg:
                    facts.row_uses.append((f"a cast to {'.'.join(name)}", arg))
            elif key in ("RangeSubselect", "RangeFunction") and isinstance(value.get("alias"), dict):
                facts.ranges.add(str(value["alias"].get("aliasname")))
            elif key == "CommonTableExpr":
                facts.ctes.add(str(value.get("ctename", "")).lower())
            elif key in _PG_WRITES and node is not tree:
                facts.writes.add(key)
            elif key in ("intoClause", "lockingClause"):
                facts.clauses.add(key)
            if isinstance(value, (dict, list)):
                stack.append(value)
    for rel in relations:
        parts = [rel.get("catalogname"), rel.get("schemaname"), rel.get("relname")]
        name = ".".join(str(p) for p in parts if p).lower()
        if name and not ("." not in name and name in facts.ctes):
            facts.tables.add(name)
    return facts


def _bare_name(node: Any) -> str | None:
    """The name of a one-part column reference (``a``, ``a.*``), which may be a whole row."""
    ref = node.get("ColumnRef") if isinstance(node, dict) else None
    fields = (ref or {}).get("fields") or []
    if fields and (len(fields) == 1 or (len(fields) == 2 and "A_Star" in fields[1])):
        value = fields[0].get("String", {}).get("sval") if isinstance(fields[0], dict) else None
        return value if isinstance(value, str) else None
    return None


def _pg_apply(st: _Stmt, facts: _PgFacts, tree: dict[str, Any]) -> None:
    """Add what PostgreSQL's parser found: decoded tables and functions, operators and casts not built in."""
    if facts.tables:  # the parser's names are decoded (U&"\0061", "Quoted"): they replace sqlglot's guesses
        st.tables = set(facts.tables)
    for name in facts.funcs:
        written = ".".join(name)
        if not name:
            continue
        if _function_rule(name[-1]) is not None:
            _function(st, name[-1])
            continue
        schema = _schema_of(name)
        if not known_function(name[-1], "postgres", schema):
            _unknown(st, f"{written}() is not on the allow-list of PostgreSQL functions without side effects "
                     "(a user-defined function, or a built-in that changes or reaches something)")
    for name in facts.ops:
        schema = _schema_of(name)
        if name and not known_operator(name[-1], schema):
            _unknown(st, f"operator {'.'.join(name)} is not a built-in PostgreSQL operator: it calls a function "
                     "the analysis cannot see")
    for where, name in facts.row_uses:
        if name in facts.ranges:
            _unknown(st, f"the whole row {name} is passed to {where}: a user-defined function, operator or cast "
                     "for that row type may be the one that runs")
    for name in facts.types:
        schema = _schema_of(name)
        if name and not known_type(name[-1], schema):
            _unknown(st, f"a cast to type {'.'.join(name)}, which is not built in: its input function or domain "
                     "check may be user-defined")


def _schema_of(name: tuple[str, ...] | list[str]) -> str | None:
    """The schema of a qualified name: ``None`` when unqualified, ``""`` when it has a catalog too
    (never a built-in's: a three-part name is not what the allow-lists know)."""
    if len(name) == 2:
        return name[0]
    return "" if len(name) > 2 else None


def _unknown(st: _Stmt, sentence: str) -> None:
    st.read_only = False
    st.add("sql.unknown_function", sentence, "unknown_function")


def _pg_agree(found: list[_Stmt], facts: _PgFacts, ctx: _Ctx) -> None:
    """sqlglot must not call read-only what PostgreSQL's parser reads as anything else."""
    pure = facts.kind in _PG_READ_STATEMENTS and not facts.clauses and not facts.writes
    if facts.kind == "ExplainStmt" and not facts.explain_analyze:
        pure = True  # EXPLAIN plans the statement, it does not run it (functions are checked all the same)
    for st in found:
        if st.read_only and not pure:
            st.read_only = False
            st.add("sql.unparseable", f"sqlglot reads a pure read where PostgreSQL's parser reads {facts.kind}: "
                   f"{_snippet(ctx.code)}", "unparseable")


def _pg_normalized(text: str) -> str:
    from pglast import parser

    try:
        tokens = parser.scan(text)
    except Exception:  # cannot happen for a text the cell's scan read; keep the text as it is
        return text
    return " ".join(text[t.start:t.end + 1] for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT"))


_PG_LITERALS = {"SCONST", "USCONST", "BCONST", "XCONST"}


def _pg_version_doubts(code: str, cell: Findings) -> None:
    """Text the analysis's parser (libpg_query of PostgreSQL 17+) reads differently from older servers.

    PostgreSQL 16 made the vertical tab a space; PostgreSQL 15 rejects it outside a literal.
    """
    if "\x0b" not in code:
        return
    from pglast import parser

    try:
        tokens = parser.scan(code)
    except Exception:  # the split already reported it
        return
    at = code.index("\x0b")
    literal = [(t.start, t.end) for t in tokens if t.name in _PG_LITERALS]
    while at >= 0:
        if not any(a <= at <= b for a, b in literal):
            cell.add("sql.unparseable", "a vertical tab outside a string literal: PostgreSQL 16 and later read it as "
                     "a space, older servers reject it", "unparseable")
            return
        at = code.find("\x0b", at + 1)


_BACKSLASH_QUOTE = re.compile(r"(?<!\\)(?:\\\\)*\\'")


def _pg_doubts(text: str, cell: Findings) -> None:
    """A standard string with a backslash before a quote ends where standard_conforming_strings says."""
    if "\\" not in text:
        return
    from pglast import parser

    try:
        tokens = parser.scan(text)
    except Exception:  # the cell's scan read it; nothing to add
        return
    for tok in tokens:
        raw = text[tok.start:tok.end + 1]
        if tok.name == "SCONST" and raw[:1] in ("'", "N", "n") and _BACKSLASH_QUOTE.search(raw):
            cell.add("sql.unparseable", f"a string literal has a backslash before a quote ({_snippet(raw, 40)}): "
                     "where it ends depends on the server's standard_conforming_strings setting, so the statements "
                     "cannot be told apart reliably (write '' for a quote inside a string, or E'…')", "unparseable")
            return


# ---------------------------------------------------------------------------- one statement

def _analyze_guarded(ctx: _Ctx, toks: list[Token]) -> _Stmt:
    """A statement whose analysis fails (nesting too deep for the parser, a bug) is unparseable."""
    try:
        return _analyze_statement(ctx, toks)
    except Exception as exc:  # RecursionError included: fail closed, never crash the submission
        st = _Stmt(_first_word_type(ctx.text(toks)))
        st.add("sql.unparseable", f"the statement could not be analysed ({type(exc).__name__}): "
               f"{_snippet(ctx.text(toks))}", "unparseable")
        _scan_tokens(st, toks)
        return st


def _analyze_statement(ctx: _Ctx, toks: list[Token]) -> _Stmt:
    first = toks[0].text.upper().split()[0]
    second = toks[1].text.upper() if len(toks) > 1 else ""
    if first == "EXPLAIN" or (first in ("DESC", "DESCRIBE", "ANALYZE") and ctx.sg == "mysql"
                              and second not in ("TABLE", "NO_WRITE_TO_BINLOG", "LOCAL")
                              and _explained_start(toks) is not None):
        return _explain(ctx, toks)  # MariaDB's ANALYZE <statement> runs it, like EXPLAIN ANALYZE

    replace = first == "REPLACE" and ctx.sg in ("mysql", "sqlite")
    parse_toks = toks
    if replace:  # MySQL/SQLite REPLACE INTO: sqlglot has no tree for it; read it as the INSERT it extends
        head = toks[0]
        parse_toks = [Token(TokenType.INSERT, "INSERT", head.line, head.col, head.start, head.end), *toks[1:]]

    error: Exception | None = None
    try:
        tree = ctx.parse(parse_toks)
    except Exception as exc:  # ParseError, or anything else sqlglot raises: fail closed
        tree, error = None, exc

    kind = _statement_type(tree)
    if tree is not None and kind is not None:
        st = _Stmt(kind)
        _analyze_tree(ctx, st, tree, toks)
        if replace:
            st.kind = "REPLACE"
        return st
    return _analyze_keywords(ctx, toks, error, tree)


class _Nodes:
    """The nodes of a tree the analysis looks at, collected in one walk."""

    def __init__(self, tree: exp.Expr) -> None:
        self.tables: list[exp.Table] = []
        self.ctes: list[exp.CTE] = []
        self.selects: list[exp.Select] = []
        self.funcs: list[exp.Func] = []
        self.dml: list[exp.Expr] = []
        for node in tree.dfs():
            if isinstance(node, exp.Table):
                self.tables.append(node)
            elif isinstance(node, exp.Select):
                self.selects.append(node)
            elif isinstance(node, exp.Func):
                self.funcs.append(node)
            elif isinstance(node, exp.CTE):
                self.ctes.append(node)
            elif isinstance(node, _DML) and node is not tree:
                self.dml.append(node)


def _analyze_tree(ctx: _Ctx, st: _Stmt, tree: exp.Expr, toks: list[Token]) -> None:
    nodes = _Nodes(tree)
    st.tables = _tables(tree, nodes)
    on = _on(st.tables)
    kind = st.kind
    if isinstance(tree, (exp.Select, exp.Subquery, exp.Values)) or kind == "SELECT":
        st.read_only = True
        _select_effects(st, nodes)
        if toks[0].text.upper() not in ("SELECT", "WITH", "(", "VALUES", "TABLE", "EXPLAIN", "DESC", "DESCRIBE",
                                         "ANALYZE", "REPLACE"):  # sqlglot also reads FROM t SELECT …
            st.read_only = False
            st.add("sql.unparseable", f"a query that does not start with SELECT, WITH or VALUES, which the server "
                   f"rejects: {_snippet(ctx.text(toks))}", "unparseable")
        if _dangling(toks[-1]):  # "SELECT 2 AS", "SELECT x IS": sqlglot reads them, servers do not
            st.read_only = False
            st.add("sql.unparseable", f"a query that ends in {toks[-1].text.upper()}, which the server rejects: "
                   f"{_snippet(ctx.text(toks))}", "unparseable")
        if any(isinstance(star.parent, exp.Binary) for star in tree.find_all(exp.Star)):  # sqlglot reads "* / 1"
            st.read_only = False
            st.add("sql.unparseable", f"* used as a value, which the server rejects: {_snippet(ctx.text(toks))}",
                   "unparseable")
        if any(not select.expressions for select in nodes.selects):  # sqlglot accepts a bare SELECT, servers do not
            st.read_only = False
            st.add("sql.unparseable", f"a SELECT without a select list, which the server rejects: "
                   f"{_snippet(ctx.text(toks))}", "unparseable")
    elif isinstance(tree, exp.Insert):
        _insert(ctx, st, tree, toks)
    elif isinstance(tree, (exp.Update, exp.Delete)):
        _update_delete(st, tree, top=True)
        st.explain.append(ctx.text(toks))
        st.no_explain = ctx.sg == "mysql" and bool(nodes.selects or tree.find(exp.Subquery))
    elif kind == "MERGE":
        st.add("sql.dml", f"MERGE into {_target(tree)} adds, changes or deletes rows it matches", "write")
    elif kind == "CREATE":
        _create(ctx, st, tree)
    elif kind == "DROP":
        _drop(st, tree)
    elif kind == "ALTER":
        _alter(st, tree)
    elif kind == "TRUNCATE":
        st.add("sql.truncate", f"TRUNCATE{on}: every row is deleted at once, without a WHERE clause",
               "truncate", "write")
    elif kind in ("GRANT", "REVOKE"):
        st.add("sql.dcl", f"{kind}{on or ''} changes who may do what: {_snippet(ctx.text(toks))}", "dcl")
    elif kind == "SET":
        _set(st, tree)
    elif kind == "USE":
        st.add("sql.session_change", f"USE {tree.name or ''} switches the database of this session".replace("  ", " "),
               "session_change")
    elif kind in ("BEGIN", "COMMIT", "ROLLBACK"):
        st.add("sql.transaction_control", f"{kind} controls the transaction", "transaction_control")
    elif kind in ("SHOW", "DESCRIBE"):
        st.read_only = True
    elif kind == "COPY":
        _copy(st, tree)
    elif kind == "PRAGMA":
        _pragma(st, tree)
    elif kind == "ATTACH":
        st.add("sql.file_write", "ATTACH DATABASE opens (and creates, if missing) a database file on the server, "
               "which later statements can write", "file_write", "session_change")
    elif kind == "DETACH":
        st.add("sql.session_change", "DETACH DATABASE closes an attached database", "session_change")
    elif kind == "ANALYZE":
        st.add("sql.maintenance", f"ANALYZE{on} updates planner statistics")
    elif kind == "KILL":
        st.add("sql.server_access", f"KILL ends another connection or its query: {_snippet(ctx.text(toks))}",
               "side_effect_function")
    elif kind == "COMMENT":
        st.add("sql.ddl", f"COMMENT ON changes the schema's documentation{on}", "ddl")
    _functions_in_tree(st, nodes)
    _writes_in_ctes(st, nodes)


_DANGLING_WORDS = {"AS", "IS", "NOT", "AND", "OR", "XOR", "LIKE", "IN", "BY", "ON", "JOIN", "SELECT", "FROM", "WHERE",
                   "HAVING", "LIMIT", "OFFSET", "UNION", "EXCEPT", "INTERSECT", "BETWEEN", "CASE", "WHEN", "THEN",
                   "ELSE", "DISTINCT", "ESCAPE", "COLLATE", "INTERVAL", "REGEXP", "RLIKE", "GLOB", "DIV"}
_DANGLING_TYPES = {t for t in (getattr(TokenType, n, None) for n in (
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "PLUS", "DASH", "SLASH", "MOD", "L_PAREN", "L_BRACKET", "DOT", "COMMA",
    "COLON", "CARET", "AMP", "PIPE", "DPIPE", "NULLSAFE_EQ", "COLON_EQ", "TILDA", "LSHIFT", "RSHIFT")) if t is not None}


def _dangling(tok: Token) -> bool:
    """Whether a statement cannot end with this token (an operator, AS, IS…)."""
    if tok.token_type in _STRING_TOKENS or tok.token_type in (TokenType.IDENTIFIER, TokenType.VAR, TokenType.NUMBER):
        return False
    return tok.token_type in _DANGLING_TYPES or tok.text.upper() in _DANGLING_WORDS


def _select_effects(st: _Stmt, nodes: _Nodes) -> None:
    for select in nodes.selects:
        into = select.args.get("into")
        if into is not None:
            target = into.this
            if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
                name = _table_name(target)
                st.read_only = False
                st.add("sql.select_into", f"SELECT … INTO {name} creates table {name}", "select_into", "write", "ddl")
            else:
                st.read_only = False
                st.add("sql.session_change", "SELECT … INTO a variable sets session variables", "session_change")
        locks = select.args.get("locks") or []
        if locks:
            mode = "FOR UPDATE" if any(lock.args.get("update") for lock in locks) else "FOR SHARE"
            st.read_only = False
            st.add("sql.lock", f"SELECT … {mode} locks the rows it reads{_on(_tables(select))} until the "
                   "transaction ends", "lock")


def _insert(ctx: _Ctx, st: _Stmt, tree: exp.Insert, toks: list[Token]) -> None:
    target = _target(tree)
    verb = "REPLACE" if toks[0].text.upper() == "REPLACE" else "INSERT"
    conflict = tree.args.get("conflict")
    source = tree.expression
    detail = ""
    if verb == "REPLACE" or str(tree.args.get("alternative") or "").upper() == "REPLACE":
        detail = " (rows with the same key are deleted first)"
    elif conflict is not None:
        action = "ON DUPLICATE KEY UPDATE" if conflict.args.get("duplicate") else f"ON CONFLICT {conflict.args.get('action') or ''}".strip()
        if "UPDATE" in action.upper():
            detail = f" with {action}: adds or changes rows"
    if isinstance(source, (exp.Select, exp.SetOperation, exp.Subquery)):
        sources = _tables(source)
        detail += f" from a SELECT{_on(sources)}" if sources else " from a SELECT"
    st.add("sql.dml", f"{verb} into {target}{detail}", "write")


def _update_delete(st: _Stmt, node: exp.Expr, top: bool) -> None:
    verb = "UPDATE" if isinstance(node, exp.Update) else "DELETE"
    target = _target(node)
    where = node.args.get("where")
    consequence = "every row changes" if verb == "UPDATE" else "every row is deleted"
    if where is None:
        flag = "update_without_where" if verb == "UPDATE" else "delete_without_where"
        st.add(f"sql.{flag}", f"{verb} on {target} has no WHERE clause: {consequence}", flag, "write")
        return
    why = _always_true(where.this)
    if why:
        st.add("sql.tautological_where", f"{verb} on {target} has a WHERE clause that is always true ({why}): "
               f"{consequence}", "tautological_where", "write")
        return
    if top:
        st.add("sql.dml", f"{verb} on {target} changes the rows its WHERE clause matches" if verb == "UPDATE"
               else f"{verb} on {target} deletes the rows its WHERE clause matches", "write")


def _create(ctx: _Ctx, st: _Stmt, tree: exp.Expr) -> None:
    kind = str(tree.args.get("kind") or "").upper()
    name = _object_name(tree.this)
    props = tree.args.get("properties")
    temporary = bool(props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions))
    materialized = bool(props and any(isinstance(p, exp.MaterializedProperty) for p in props.expressions))
    with_data = (kind == "TABLE" or materialized) and isinstance(tree.expression, (exp.Select, exp.SetOperation, exp.Subquery))
    if kind in ("USER", "ROLE"):
        st.add("sql.dcl", f"CREATE {kind} {name} adds an account", "dcl", "ddl")
    elif kind == "TABLE" and temporary:
        flags = ("ddl", "write") if with_data else ("ddl",)
        st.add("sql.temp_table", f"CREATE TEMPORARY TABLE {name}: visible to this session only", *flags)
    elif kind == "INDEX":
        name = tree.this.name.lower() if isinstance(tree.this, exp.Index) and tree.this.name else name
        table = _list(sorted(st.tables)) or "a table"
        how = "" if tree.args.get("concurrently") or ctx.sg != "postgres" else " (without CONCURRENTLY it blocks writes to the table while it builds)"
        st.add("sql.ddl", f"CREATE INDEX {name} on {table}{how}", "ddl")
    else:
        what = f"CREATE {'MATERIALIZED ' if materialized else ''}{kind} {name}".rstrip() if kind else "CREATE"
        detail = " from a SELECT, writing its rows" if with_data else ""
        flags = ("ddl", "write") if with_data else ("ddl",)
        st.add("sql.ddl", f"{what} changes the schema{detail}", *flags)


def _drop(st: _Stmt, tree: exp.Expr) -> None:
    kind = str(tree.args.get("kind") or "").upper()
    if tree.args.get("materialized"):
        kind = f"MATERIALIZED {kind}"
    names = _list([_object_name(t) for t in tree.args.get("tables") or []]) or "?"
    if kind in ("USER", "ROLE"):
        st.add("sql.dcl", f"DROP {kind} {names} removes an account", "dcl", "drop", "ddl")
        return
    what = {"TABLE": "the table and its data are gone", "DATABASE": "the database and all its data are gone",
            "SCHEMA": "the schema and everything in it are gone"}.get(kind, "it is gone")
    st.add("sql.drop", f"DROP {kind} {names}: {what}".replace("  ", " "), "drop", "ddl", "write")


def _alter(st: _Stmt, tree: exp.Expr) -> None:
    kind = str(tree.args.get("kind") or "TABLE").upper()
    name = _object_name(tree.this)
    if kind in ("USER", "ROLE"):
        st.add("sql.dcl", f"ALTER {kind} {name} changes an account", "dcl", "alter", "ddl")
        return
    drops = [a for a in tree.args.get("actions") or [] if isinstance(a, exp.Drop)]
    lost = [str(a.args.get("kind") or "").upper() for a in drops
            if str(a.args.get("kind") or "").upper() in ("COLUMN", "PARTITION", "")]
    if lost:
        st.add("sql.drop", f"ALTER {kind} {name} drops a {lost[0].lower() or 'column'}: its data is gone",
               "drop", "alter", "ddl", "write")
    else:
        st.add("sql.alter", f"ALTER {kind} {name} changes the schema", "alter", "ddl")


def _set(st: _Stmt, tree: exp.Expr) -> None:
    server_wide = False
    for item in tree.expressions:
        kind = str(item.args.get("kind") or "").upper()
        if kind in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
            server_wide = True
        for param in item.find_all(exp.SessionParameter):
            if str(param.args.get("kind") or "").lower() in ("global", "persist", "persist_only"):
                server_wide = True
    if server_wide:
        st.add("sql.server_setting", "SET GLOBAL changes a setting for every session on the server", "session_change")
    else:
        st.add("sql.session_change", "SET changes a setting of this session", "session_change")


def _copy(st: _Stmt, tree: exp.Expr) -> None:
    into_table = bool(tree.args.get("kind"))  # True: COPY … FROM (into the table)
    files = tree.args.get("files") or []
    names = [f.name.upper() for f in files if isinstance(f, exp.Identifier)]
    on = _on(st.tables)
    if into_table:
        st.flags.add("write")
    if "PROGRAM" in names:
        st.add("sql.server_access", f"COPY{on} {'FROM' if into_table else 'TO'} PROGRAM runs a shell command on "
               "the database server", "copy", "side_effect_function")
    elif any(isinstance(f, exp.Literal) and f.is_string for f in files):
        if into_table:
            st.add("sql.server_access", f"COPY{on} FROM a file reads a file on the database server into the table",
                   "copy", "write")
        else:
            st.add("sql.file_write", f"COPY{on} TO a file writes a file on the database server", "copy", "file_write")
    else:
        verb = "loads rows from the client into the table" if into_table else "streams rows to the client"
        st.add("sql.copy", f"COPY{on} {verb}", "copy", *(("write",) if into_table else ()))


_PRAGMA_READ_ARG = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
                    "foreign_key_check", "integrity_check", "quick_check", "table_list"}
_PRAGMA_READ = {"database_list", "collation_list", "function_list", "module_list", "pragma_list", "compile_options",
                "user_version", "schema_version", "application_id", "page_count", "page_size", "freelist_count",
                "encoding", "journal_mode", "foreign_keys", "data_version", "max_page_count", "cache_size",
                "busy_timeout", "auto_vacuum", "synchronous", "temp_store", "recursive_triggers", "secure_delete",
                "automatic_index", "cell_size_check", "defer_foreign_keys", "ignore_check_constraints",
                "locking_mode", "mmap_size", "query_only", "read_uncommitted", "reverse_unordered_selects",
                "threads", "trusted_schema", "wal_autocheckpoint", "legacy_alter_table", "case_sensitive_like",
                "hard_heap_limit", "soft_heap_limit", "analysis_limit", "cache_spill", "checkpoint_fullfsync",
                "fullfsync", "journal_size_limit"} | _PRAGMA_READ_ARG
_PRAGMA_UNSAFE = {"writable_schema", "schema_version", "trusted_schema", "journal_mode", "locking_mode",
                  "synchronous", "ignore_check_constraints", "foreign_keys", "query_only"}


def _pragma(st: _Stmt, tree: exp.Expr) -> None:
    body = tree.this
    value = None
    if isinstance(body, exp.EQ):
        body, value = body.this, body.expression
    name = (body.expression if isinstance(body, exp.Dot) else body).name.lower() if body is not None else ""
    if value is None and name in _PRAGMA_READ or name in _PRAGMA_READ_ARG:
        st.read_only = True
        if name in _PRAGMA_READ_ARG and isinstance(value, (exp.Column, exp.Identifier, exp.Literal)):
            st.tables.add(value.name.lower())
        return
    if name in _PRAGMA_UNSAFE:
        st.add("sql.server_setting", f"PRAGMA {name} = … changes how the database file is read or written", "session_change")
    elif name in ("optimize", "wal_checkpoint", "incremental_vacuum", "shrink_memory"):
        st.add("sql.maintenance", f"PRAGMA {name} performs maintenance")
    else:
        st.add("sql.session_change", f"PRAGMA {name or '?'} changes a setting", "session_change")


def _functions_in_tree(st: _Stmt, nodes: _Nodes) -> None:
    for node in nodes.funcs:
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        if isinstance(name, str):
            _function(st, name)


def _function(st: _Stmt, name: str) -> None:
    found = _function_rule(name)
    if found is None:
        return
    rule, flags, what = found
    st.read_only = False
    st.add(rule, f"{name.lower()}() {what}", "side_effect_function", *flags)


def _writes_in_ctes(st: _Stmt, nodes: _Nodes) -> None:
    for node in nodes.dml:
        if node.find_ancestor(exp.CTE) is None:
            continue
        verb = type(node).__name__.upper()
        st.read_only = False
        st.add("sql.write_in_cte", f"{verb} on {_target(node)} inside WITH: the statement writes although it "
               "ends in a SELECT", "write_in_cte", "write")
        if isinstance(node, (exp.Update, exp.Delete)):
            _update_delete(st, node, top=False)


# ---------------------------------------------------------------------------- EXPLAIN

def _explained_start(toks: list[Token]) -> int | None:
    """Index of the statement an EXPLAIN/DESCRIBE/ANALYZE explains, or None."""
    i, n = 1, len(toks)
    while i < n:
        tok = toks[i]
        up = tok.text.upper()
        if tok.token_type == TokenType.L_PAREN:
            nxt = toks[i + 1].text.upper() if i + 1 < n else ""
            if nxt in _STATEMENT_START or nxt == "(":
                return i
            depth = 0
            while i < n:  # a PostgreSQL option list: (ANALYZE, BUFFERS)
                if toks[i].token_type == TokenType.L_PAREN:
                    depth += 1
                elif toks[i].token_type == TokenType.R_PAREN:
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
        elif up in _STATEMENT_START and tok.token_type not in (TokenType.VAR, TokenType.IDENTIFIER) or up == "REPLACE":
            return i
        i += 1
    return None


def _explain(ctx: _Ctx, toks: list[Token]) -> _Stmt:
    start = _explained_start(toks)
    options = {t.text.upper() for t in toks[1:start]}
    runs = bool(options & {"ANALYZE", "ANALYSE"}) or toks[0].text.upper() == "ANALYZE"
    if start is None:  # EXPLAIN t (MySQL: DESCRIBE), EXPLAIN FOR CONNECTION n
        st = _Stmt("EXPLAIN" if toks[0].text.upper() == "EXPLAIN" else "DESCRIBE")
        st.tables = _guess_tables(toks, first_name=True)
        if runs:
            st.add("sql.unparseable", f"EXPLAIN ANALYZE of something the analysis cannot read: {_snippet(ctx.text(toks))}",
                   "unparseable")
        else:
            st.read_only = True
        return st
    inner = _analyze_statement(ctx, toks[start:])
    if runs:
        # EXPLAIN ANALYZE executes the statement: what runs is the inner statement
        inner.add("sql.read", f"EXPLAIN ANALYZE executes the {inner.kind} it explains")
        return inner
    st = _Stmt("EXPLAIN")
    st.tables = inner.tables
    if inner.parsed:
        st.read_only = True
    else:
        st.add("sql.unparseable", f"the statement EXPLAIN explains could not be parsed as {ctx.name}", "unparseable")
    return st


# ---------------------------------------------------------------------------- keywords

def _analyze_keywords(ctx: _Ctx, toks: list[Token], error: Exception | None, tree: exp.Expr | None) -> _Stmt:
    """Statements sqlglot could not turn into a tree we know: classify by their leading keywords.

    Statements whose keywords say all they do (transaction control, SET, SHOW, VACUUM…) are
    classified without doubt. The others are ``unparseable``; their tokens are still scanned
    so the reasons say what they seem to do, and their level can only go up.
    """
    words = " ".join(t.text for t in toks[:5]).upper().split() + ["", "", "", ""]  # MySQL: "LOCK TABLES" is one token
    w0, w1, w2 = words[0], words[1], words[2]
    kind = _KEYWORD_ALIASES.get(w0, w0) if w0 in _KEYWORD_TYPES or w0 in _KEYWORD_ALIASES else "OTHER"
    st = _Stmt(kind)
    text = ctx.text(toks)
    snippet = _snippet(text)
    known = True

    if w0 in ("SHOW", "DESC", "DESCRIBE", "CHECKSUM"):
        st.read_only = True
        if w0 == "CHECKSUM":
            st.tables = _guess_tables(toks, all_names=True)
    elif w0 in ("BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "XA") or (w0 == "START" and w1 == "TRANSACTION"):
        st.kind = "BEGIN" if w0 == "START" else st.kind
        st.add("sql.transaction_control", f"{st.kind} controls the transaction", "transaction_control")
    elif w0 == "SET":
        if w1 == "PASSWORD":
            st.add("sql.dcl", "SET PASSWORD changes an account's password", "dcl")
        elif w1 in ("GLOBAL", "PERSIST", "PERSIST_ONLY") or w1.startswith("@@GLOBAL"):
            st.add("sql.server_setting", "SET GLOBAL changes a setting for every session on the server", "session_change")
        elif w1 == "ROLE" or (w1 in ("SESSION", "LOCAL") and w2 in ("ROLE", "AUTHORIZATION")):
            st.add("sql.session_change", f"{snippet} changes the privileges of every later statement in this session",
                   "session_change")
        else:
            st.add("sql.session_change", f"{snippet} changes a setting of this session", "session_change")
    elif w0 in ("RESET", "DISCARD", "USE", "PREPARE", "DEALLOCATE", "LISTEN", "UNLISTEN", "NOTIFY", "DECLARE",
                "FETCH", "MOVE", "CLOSE"):
        st.add("sql.session_change", f"{w0} changes the state of this session", "session_change")
    elif w0 in ("LOCK", "UNLOCK"):
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.lock", f"{snippet} {'locks' if w0 == 'LOCK' else 'releases locks on'} tables until the "
               "transaction or session ends", "lock")
    elif w0 in ("CALL", "DO", "EXECUTE", "EXEC"):
        st.add("sql.call", f"{kind} runs code whose effects are not visible here: {snippet}", "call")
    elif w0 == "VACUUM":
        st.tables = _guess_tables(toks, all_names=True)
        if w1 == "INTO" or "INTO" in words:
            st.add("sql.file_write", "VACUUM INTO writes a copy of the database to a file", "file_write")
        elif ctx.sg == "sqlite" or any(t.text.upper() == "FULL" for t in toks):
            st.add("sql.exclusive_maintenance", f"{snippet} rewrites the {'database' if ctx.sg == 'sqlite' else 'table'} "
                   "under an exclusive lock", "lock")
        else:
            st.add("sql.maintenance", f"{snippet} reclaims space and updates statistics")
    elif w0 in ("ANALYZE", "CHECKPOINT", "CHECK"):
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.maintenance", f"{w0} performs maintenance{_on(st.tables)}")
    elif w0 in ("CLUSTER", "REINDEX", "OPTIMIZE", "REPAIR", "REFRESH"):
        st.tables = _guess_tables(toks, all_names=True)
        write = ("write",) if w0 == "REFRESH" else ()
        if any(t.text.upper() == "CONCURRENTLY" for t in toks):
            st.add("sql.maintenance", f"{snippet} rebuilds without blocking readers", *write)
        else:
            st.add("sql.exclusive_maintenance", f"{snippet} rebuilds under an exclusive lock", "lock", *write)
    elif w0 == "FLUSH":
        flags = ("lock",) if any(t.text.upper() == "LOCK" for t in toks) else ()
        st.add("sql.server_setting", f"{snippet} acts on the whole server", *flags)
    elif w0 in ("SHUTDOWN", "RESTART") or (w0 in ("INSTALL", "UNINSTALL") and w1 in ("PLUGIN", "COMPONENT", "SONAME")):
        st.add("sql.server_access", f"{snippet} acts on the database server itself", "side_effect_function")
    elif (w0 == "ALTER" and w1 == "DEFAULT" and w2 == "PRIVILEGES") or (w0 == "REASSIGN" and w1 == "OWNED"):
        st.add("sql.dcl", f"{w0} {w1} {w2} changes who may do what: {snippet}", "dcl")
    elif w0 == "KILL":
        st.add("sql.server_access", f"KILL ends another connection or its query: {snippet}", "side_effect_function")
    elif w0 == "LOAD" and w1 in ("DATA", "XML"):
        known = False
        st.tables = _guess_tables(toks)
        if w2 == "LOCAL":
            st.add("sql.copy", f"LOAD {w1} LOCAL INFILE loads a client file into {_list(sorted(st.tables)) or 'a table'}",
                   "copy", "write")
        else:
            st.add("sql.server_access", f"LOAD {w1} INFILE reads a file on the database server into "
                   f"{_list(sorted(st.tables)) or 'a table'}", "copy", "write")
    elif w0 in ("GRANT", "REVOKE"):
        st.add("sql.dcl", f"{w0} changes who may do what: {snippet}", "dcl")
    elif w0 in ("CREATE", "ALTER", "DROP") and (w1 in ("USER", "ROLE", "GROUP", "LOGIN")
                                               or (w1 == "OR" and w2 == "REPLACE" and words[3] in ("USER", "ROLE"))):
        st.add("sql.dcl", f"{w0} {w1} changes accounts: {snippet}", "dcl", "ddl")
    elif w0 == "CREATE" and (w1 == "EXTENSION" or (w1 == "OR" and words[3] == "EXTENSION")):
        st.add("sql.server_access", f"CREATE EXTENSION loads code into the database server: {snippet}", "ddl")
    elif w0 == "RENAME":
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.alter", f"RENAME changes the schema: {snippet}", "alter", "ddl")
    elif w0 == "ALTER" and w1 == "SYSTEM":
        st.add("sql.server_setting", "ALTER SYSTEM changes the server configuration for every session",
               "alter", "session_change")
    elif w0 == "DROP":
        known = False
        st.tables = _guess_tables(toks)
        st.add("sql.drop", f"DROP {w1}: {snippet}", "drop", "ddl", "write")
    elif w0 == "TRUNCATE":
        known = False
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.truncate", f"TRUNCATE{_on(st.tables)}: every row is deleted at once", "truncate", "write")
    elif w0 == "ALTER":
        known = False
        st.tables = _guess_tables(toks)
        st.add("sql.alter", f"ALTER {w1} changes the schema: {snippet}", "alter", "ddl")
    elif w0 in ("CREATE", "COMMENT"):
        known = False
        st.tables = _guess_tables(toks)
        st.add("sql.ddl", f"{w0} changes the schema: {snippet}", "ddl")
    else:
        known = False
        st.tables = _guess_tables(toks)

    _scan_tokens(st, toks)
    if not known:
        what = f"{kind} statement" if kind != "OTHER" else "statement"
        if error is not None:
            why = f"could not be parsed as {ctx.name} ({_error_line(error)})"
        elif isinstance(tree, exp.Command) or tree is None:
            why = f"uses {ctx.name} syntax the parser does not understand"
        else:
            why = "is not a statement the analysis recognises"
        st.add("sql.unparseable", f"{what} {why}: {snippet}", "unparseable")
    return st


def _scan_tokens(st: _Stmt, toks: list[Token]) -> None:
    """What a statement without a usable tree seems to do, from its tokens: only adds risk."""
    ups = [t.text.upper() for t in toks]
    for i, tok in enumerate(toks[:-1]):
        if toks[i + 1].token_type == TokenType.L_PAREN and tok.token_type not in (TokenType.STRING, TokenType.IDENTIFIER):
            _function(st, tok.text)
    for i, up in enumerate(ups[:-1]):
        if up == "INTO" and ups[i + 1] in ("OUTFILE", "DUMPFILE"):
            st.add("sql.file_write", f"SELECT … INTO {ups[i + 1]} writes a file on the database server",
                   "file_write", "select_into")
        if up == "FOR" and ups[i + 1] in ("UPDATE", "SHARE") and st.kind == "SELECT":
            st.add("sql.lock", f"SELECT … FOR {ups[i + 1]} locks the rows it reads", "lock")
    if st.kind in ("SELECT", "OTHER") and ups and ups[0] == "WITH":
        for up in ups[1:]:
            if up in ("INSERT", "UPDATE", "DELETE", "MERGE"):
                st.add("sql.write_in_cte", f"{up} inside WITH: the statement writes", "write_in_cte", "write")
                break
    if st.kind in ("INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"):
        st.add("sql.dml", f"{st.kind}{_on(st.tables)} writes rows", "write")


_TEXT_WORDS = re.compile(r"\b(DROP|TRUNCATE|GRANT|REVOKE|DELETE|UPDATE|INSERT|ALTER|OUTFILE|DUMPFILE|PROGRAM)\b", re.I)


def _scan_text(st: _Stmt, code: str) -> None:
    """SQL that could not even be tokenized: name the dangerous words it contains."""
    words = sorted({m.group(1).upper() for m in _TEXT_WORDS.finditer(code)})
    if not words:
        return
    flags = {"DROP": ("drop",), "TRUNCATE": ("truncate",), "GRANT": ("dcl",), "REVOKE": ("dcl",),
             "OUTFILE": ("file_write",), "DUMPFILE": ("file_write",)}
    rule = "sql.unparseable"
    extra: set[str] = set()
    for word in words:
        extra.update(flags.get(word, ()))
    if extra & {"drop", "truncate", "dcl", "file_write"}:
        rule = "sql.drop" if "drop" in extra else "sql.truncate" if "truncate" in extra else (
            "sql.dcl" if "dcl" in extra else "sql.file_write")
    st.add(rule, f"the unreadable SQL mentions {_list(words)}", *sorted(extra))


# ---------------------------------------------------------------------------- MySQL/SQLite: the server's reading

_STRING_TOKENS = {t for t in (getattr(TokenType, n, None) for n in (
    "STRING", "NATIONAL_STRING", "HEX_STRING", "BIT_STRING", "BYTE_STRING", "RAW_STRING", "HEREDOC_STRING",
    "UNICODE_STRING")) if t is not None}
_ASCII_ODD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ODD_CATEGORIES = {"Zs", "Zl", "Zp", "Cf", "Cc", "Co", "Cs", "Cn"}


def _odd_char(text: str) -> str | None:
    """A character a server may read differently from the analysis: control, format, non-ASCII space."""
    match = _ASCII_ODD.search(text)
    if match:
        return match.group(0)
    if not text.isascii():
        for ch in set(_NON_ASCII.findall(text)):
            if unicodedata.category(ch) in _ODD_CATEGORIES:
                return ch
    return None


def _token_doubts(ctx: _Ctx, tokens: list[Token], cell: Findings) -> None:
    """Places where MySQL/MariaDB or SQLite may read the text differently from sqlglot's tokenizer."""
    code, mysql = ctx.code, ctx.sg == "mysql"
    outside: list[str] = []
    gaps: list[tuple[int, int]] = []
    prev_string_end = prev_end = 0
    for tok in tokens:
        gaps.append((prev_end, tok.start))
        prev_end = tok.end + 1
        if tok.token_type in _STRING_TOKENS:
            outside.append(code[prev_string_end:tok.start])
            prev_string_end = tok.end + 1
            if mysql:
                _mysql_string_doubts(code[tok.start:tok.end + 1], cell)
                if tok.token_type in (TokenType.HEX_STRING, TokenType.BIT_STRING) and not _MYSQL_BINARY.fullmatch(
                        code[tok.start:tok.end + 1]):
                    cell.add("sql.unparseable", f"a hex or bit literal the server would reject: "
                             f"{_snippet(code[tok.start:tok.end + 1], 40)}", "unparseable")
    outside.append(code[prev_string_end:])
    gaps.append((prev_end, len(code)))
    if any(a.token_type == TokenType.STAR and b.token_type == TokenType.SLASH and b.start == a.end + 1
           for a, b in zip(tokens, tokens[1:])):
        cell.add("sql.unparseable", "*/ outside a comment: a comment the analysis and the server may end in "
                 "different places", "unparseable")
    if mysql and any(a.text in ("@", "@@") and b.start != a.end + 1 for a, b in zip(tokens, tokens[1:])):
        cell.add("sql.unparseable", "an @ not followed directly by a variable name: the analysis and MySQL/MariaDB "
                 "may read it differently", "unparseable")
    if mysql and any(a.token_type == b.token_type == TokenType.DASH and b.start == a.end + 1
                     for a, b in zip(tokens, tokens[1:])):
        cell.add("sql.unparseable", "-- without a space after it: MySQL/MariaDB reads two minus signs, other tools a "
                 "comment, so the statements cannot be told apart reliably (write - -1, or -- with a space for a "
                 "comment)", "unparseable")
    for text in outside:
        odd = _odd_char(text)
        if odd is not None:
            cell.add("sql.unparseable", f"the SQL contains the character U+{ord(odd):04X} "
                     f"({unicodedata.name(odd, 'a control character')}) outside a string literal: {ctx.name} may read "
                     "it differently from the analysis (as a letter, or not as the end of a comment), so the "
                     "statements cannot be told apart reliably", "unparseable")
            break
        if mysql and "\\" in text:
            cell.add("sql.unparseable", "a backslash outside a string literal (\\N, \\G…): the analysis cannot tell "
                     "how MySQL/MariaDB or its client reads it", "unparseable")
            break
    lex = _mysql_gap if mysql else _sqlite_gap
    for start, end in gaps:
        if start < end:
            why = lex(code, start, end)
            if why:
                cell.add("sql.unparseable", f"{why}: the statements cannot be told apart reliably", "unparseable")
                break


_MYSQL_BINARY = re.compile(r"[xX]'[0-9a-fA-F]*'|0x[0-9a-fA-F]+|[bB]'[01]*'|0b[01]+")


def _mysql_string_doubts(raw: str, cell: Findings) -> None:
    quote = raw[-1:]
    if quote == '"':
        cell.add("sql.unparseable", f"a \"double-quoted\" string ({_snippet(raw, 40)}): with the server's ANSI_QUOTES "
                 "mode it is an identifier, so the analysis cannot tell what runs (write 'single quotes')",
                 "unparseable")
    elif quote == "'" and re.search(r"(?<!\\)(?:\\\\)*\\'", raw):
        cell.add("sql.unparseable", f"a string literal has a backslash before a quote ({_snippet(raw, 40)}): "
                 "where it ends depends on the server's NO_BACKSLASH_ESCAPES setting, so the statements cannot "
                 "be told apart reliably (write '' for a quote inside a string)", "unparseable")


def _mysql_gap(code: str, i: int, end: int) -> str | None:
    """Why the text between two tokens is not only whitespace and comments to MySQL/MariaDB, or None."""
    while i < end:
        c = code[i]
        if c in " \t\n\r;":  # ";" is the statement separator, a token of its own
            i += 1
        elif c == "#":
            nl = code.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif code.startswith("--", i) and (i + 2 == len(code) or code[i + 2] in " \t\n\r"):
            nl = code.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif code.startswith("/*", i):
            if code.startswith("/*!", i) or code.startswith("/*M!", i):
                return "a MySQL executable comment /*! … */: the server runs what is inside, the analysis cannot see it"
            close = code.find("*/", i + 2, end)
            if close < 0:
                return "a /* comment whose end the analysis and the server may not agree on"
            i = close + 2
        else:
            return (f"text the analysis reads as a comment or space but MySQL/MariaDB may not "
                    f"({_snippet(code[i:min(end, i + 20)], 20)!r})")
    return None


def _sqlite_gap(code: str, i: int, end: int) -> str | None:
    """Why the text between two tokens is not only whitespace and comments to SQLite, or None."""
    while i < end:
        c = code[i]
        if c in " \t\n\f\r;":
            i += 1
        elif code.startswith("--", i):
            nl = code.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif code.startswith("/*", i):
            close = code.find("*/", i + 2, end)
            i = end if close < 0 else close + 2
        else:
            return f"text the analysis reads as a comment or space but SQLite may not ({_snippet(code[i:min(end, i + 20)], 20)!r})"
    return None


#: words followed by "(" that are not function calls
_NOT_CALLS = set("""
    IN VALUES VALUE AS ON USING EXISTS OVER FILTER WITHIN FROM JOIN SELECT INTO WHERE AND OR NOT XOR BY WHEN THEN
    ELSE CASE IS LIKE GLOB REGEXP RLIKE MATCH AGAINST BETWEEN ALL ANY SOME UNION EXCEPT INTERSECT MINUS RETURNING
    TABLE KEY INDEX PRIMARY UNIQUE FOREIGN REFERENCES CHECK CONSTRAINT PARTITION PARTITIONS SUBPARTITION WITH
    LATERAL DISTINCT LIMIT OFFSET HAVING GROUP ORDER SET ROW ROWS RECURSIVE DEFAULT ESCAPE WINDOW RANGE DIV ASC
    DESC NULL TRUE FALSE COLUMNS DO DECIMAL NUMERIC DEC FIXED FLOAT DOUBLE REAL INT INTEGER BIGINT SMALLINT TINYINT
    MEDIUMINT VARCHAR NCHAR NVARCHAR VARBINARY BINARY BIT DATETIME BLOB TEXT ENUM SIGNED UNSIGNED RAISE
""".split())
#: words after which a name followed by "(" is a table or index (INSERT INTO t (a, b)), not a call
_TARGET_INTRO = {"INTO", "TABLE", "UPDATE", "INDEX", "KEY", "REFERENCES", "TRIGGER", "VIEW", "EXISTS", "PROCEDURE",
                 "FUNCTION", "AS", "CALL"}
_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")


def _token_functions(ctx: _Ctx, st: _Stmt, toks: list[Token]) -> set[str]:
    """MySQL/SQLite: every name followed by "(" is a call; those not allow-listed make the statement unknown."""
    if not toks or toks[0].text.upper() == "PRAGMA":
        return set()
    names: set[str] = set()
    n = len(toks)
    for i in range(n - 1):
        if toks[i + 1].token_type != TokenType.L_PAREN:
            continue
        tok = toks[i]
        quoted = tok.token_type == TokenType.IDENTIFIER
        if not quoted and (tok.token_type in _STRING_TOKENS or not _NAME_TOKEN.match(tok.text)
                           or tok.text.upper() in _NOT_CALLS):
            continue
        prev = toks[i - 1] if i else None
        qualified = prev is not None and prev.token_type == TokenType.DOT and i >= 2
        if not qualified and prev is not None and prev.text.upper() in _TARGET_INTRO:
            continue
        if _cte_columns(toks, i + 1):
            continue
        name = tok.text.lower()
        written = f"{toks[i - 2].text.lower()}.{name}" if qualified else name
        names.add(written)
        if _function_rule(name) is not None:
            _function(st, name)
        elif qualified or not known_function(name, ctx.sg):
            _unknown(st, f"{written}() is not on the allow-list of {ctx.name} functions without side effects "
                     "(a user-defined function, or a built-in that changes or reaches something)")
    if ctx.sg == "mysql" and toks[0].text.upper() != "SET" and any(t.token_type == TokenType.COLON_EQ for t in toks):
        st.read_only = False
        st.add("sql.session_change", "@variable := … assigns a user variable of this session", "session_change")
    return names


def _cte_columns(toks: list[Token], at: int) -> bool:
    """Whether the parenthesis at ``at`` is a column list followed by AS ( — WITH x(a, b) AS (…)."""
    depth, j, n = 0, at, len(toks)
    while j < n:
        if toks[j].token_type == TokenType.L_PAREN:
            depth += 1
        elif toks[j].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                break
        j += 1
    return j + 2 < n and toks[j + 1].text.upper() == "AS" and toks[j + 2].token_type == TokenType.L_PAREN


# ---------------------------------------------------------------------------- helpers

def _tables(tree: exp.Expr, nodes: _Nodes | None = None) -> set[str]:
    nodes = nodes or _Nodes(tree)
    ctes = {cte.alias_or_name.lower() for cte in nodes.ctes}
    skip: set[int] = set()
    kind = str(tree.args.get("kind") or "").upper()
    if isinstance(tree, exp.Drop) and kind not in ("TABLE", "VIEW"):
        skip.update(id(t) for t in tree.args.get("tables") or [])
    if isinstance(tree, exp.Create) and kind not in ("TABLE", "VIEW", "INDEX", "TRIGGER", ""):
        if isinstance(tree.this, _Node):
            skip.update(id(t) for t in tree.this.find_all(exp.Table))
    if type(tree) in _GRANTS and kind not in ("", "TABLE"):
        securable = tree.args.get("securable")
        if securable is not None:
            skip.add(id(securable))
    if isinstance(tree, exp.Delete):  # MySQL DELETE o, i FROM orders o JOIN items i: o and i are aliases
        aliases = {t.alias.lower() for t in nodes.tables if t.alias}
        skip.update(id(t) for t in tree.args.get("tables") or [] if isinstance(t, exp.Table) and t.name.lower() in aliases)
    out: set[str] = set()
    for table in nodes.tables:
        if id(table) in skip or not isinstance(table.this, exp.Identifier):
            continue
        name = _table_name(table)
        if "." not in name and name in ctes:
            continue
        out.add(name)
    return out


def _table_name(table: exp.Table) -> str:
    parts = [table.args.get("catalog"), table.args.get("db"), table.this]
    return ".".join(p.name.lower() for p in parts if isinstance(p, _Node) and p.name)


def _object_name(node: Any) -> str:
    if isinstance(node, exp.Table):
        return _table_name(node) or "?"
    if isinstance(node, _Node):
        inner = node.find(exp.Table)
        if inner is not None and _table_name(inner):
            return _table_name(inner)
        return node.name.lower() or "?"
    return "?"


def _target(node: exp.Expr) -> str:
    target = node.this
    if isinstance(target, exp.Schema):
        target = target.this
    if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
        return _table_name(target)
    tables = node.args.get("tables") or []  # MySQL multi-table DELETE t1, t2 FROM …
    aliases = {t.alias.lower(): _table_name(t) for t in node.find_all(exp.Table) if t.alias}
    names = [aliases.get(_table_name(t), _table_name(t)) for t in tables if isinstance(t, exp.Table)]
    return _list(names) if names else "?"


def _on(tables: set[str] | list[str]) -> str:
    return f" on {_list(sorted(tables))}" if tables else ""


def _list(items: list[str], limit: int = 3) -> str:
    seen = list(dict.fromkeys(items))
    if len(seen) > limit:
        return ", ".join(seen[:limit]) + f" and {len(seen) - limit} more"
    return ", ".join(seen)


def _snippet(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_line(exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    first = re.sub(r"\x1b\[[0-9;]*m", "", first)
    first = re.sub(r"<Token token_type: [^,]*, text: ([^,]*),[^>]*>", r"'\1'", first)
    return _snippet(first.rstrip(". "), 100)


def _first_word_type(code: str) -> str:
    stripped = re.sub(r"(--[^\n]*|#[^\n]*|/\*.*?\*/|\s)+", " ", code, flags=re.S).strip()
    match = re.match(r"[A-Za-z]+", stripped)
    word = match.group(0).upper() if match else ""
    if word in _KEYWORD_ALIASES:
        return _KEYWORD_ALIASES[word]
    return word if word in _KEYWORD_TYPES else "OTHER"


_NAME_TOKENS = (TokenType.VAR, TokenType.IDENTIFIER)
_TABLE_INTRO = {"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "TABLES", "ONLY", "EXISTS"}
_NOT_TABLES = {"OUTFILE", "DUMPFILE", "FULL", "VERBOSE", "FREEZE", "READ", "WRITE", "LOCAL", "LOW_PRIORITY",
               "IN", "MODE", "ACCESS", "SHARE", "EXCLUSIVE", "ROW", "NOWAIT", "CONCURRENTLY", "INDEX", "SCHEMA",
               "DATABASE", "SYSTEM", "NO_WRITE_TO_BINLOG", "QUICK", "EXTENDED", "USE_FRM", "MATERIALIZED",
               "VIEW", "TABLE", "TABLES", "ONLY", "CASCADE", "RESTRICT", "SKIP_LOCKED", "DISABLE_PAGE_SKIPPING",
               "INDEX_CLEANUP", "PROCESS_TOAST", "TRUNCATE", "PARALLEL", "WITH", "DATA", "NO", "INTO", "ALL",
               "UPDATE", "SHARE", "MEDIUM", "CHANGED", "FOR", "UPGRADE", "ANALYZE", "IF", "NOT", "CONNECTION", "TO",
               "LOW_PRIORITY"}


def _read_name(toks: list[Token], i: int) -> tuple[str | None, int]:
    if i >= len(toks) or toks[i].token_type not in _NAME_TOKENS or toks[i].text.upper() in _NOT_TABLES:
        return None, i + 1
    parts = [toks[i].text.lower()]
    i += 1
    while i + 1 < len(toks) and toks[i].token_type == TokenType.DOT and toks[i + 1].token_type in _NAME_TOKENS:
        parts.append(toks[i + 1].text.lower())
        i += 2
    return ".".join(parts), i


def _guess_tables(toks: list[Token], all_names: bool = False, first_name: bool = False) -> set[str]:
    """Table names from tokens, for statements without a tree: best effort, for reviewers."""
    out: set[str] = set()
    i = 1
    while i < len(toks):
        up = toks[i].text.upper()
        intro = (toks[i].token_type not in _NAME_TOKENS and up in _TABLE_INTRO)
        if all_names or first_name:
            if up in ("USING", "ON", "TO", "AS"):  # CLUSTER t USING index, RENAME TABLE a TO b: skip what follows
                i += 1 if up == "TO" else 2
                continue
            name, j = _read_name(toks, i)
            if name:
                out.add(name)
                if first_name:
                    return out
                i = j
                continue
            i += 1
            continue
        if intro:
            name, j = _read_name(toks, i + 1)
            if name:
                out.add(name)
                i = j
                continue
        i += 1
    return out


_TAUTOLOGY_OPS = {exp.EQ: lambda a, b: a == b, exp.NEQ: lambda a, b: a != b, exp.GT: lambda a, b: a > b,
                  exp.GTE: lambda a, b: a >= b, exp.LT: lambda a, b: a < b, exp.LTE: lambda a, b: a <= b}
_NULLSAFE_EQ = _node_class("NullSafeEQ")


def _const(node: exp.Expr) -> Any:
    """The value of a literal (number, string, boolean), or a sentinel when it is not one."""
    if isinstance(node, exp.Paren):
        return _const(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        try:
            return float(node.this)
        except ValueError:
            return _NOT_CONST
    if isinstance(node, exp.Neg):
        value = _const(node.this)
        return -value if isinstance(value, float) else _NOT_CONST
    return _NOT_CONST


_NOT_CONST = object()


def _always_true(node: exp.Expr | None) -> str | None:
    """Why a WHERE condition holds for every row (e.g. ``1 = 1``), or None."""
    if node is None:
        return None
    if isinstance(node, exp.Paren):
        return _always_true(node.this)
    if isinstance(node, exp.Or):  # long OR chains nest deeply: walk them without recursion
        return next(filter(None, map(_always_true, _operands(node, exp.Or))), None)
    if isinstance(node, exp.And):
        parts = [_always_true(part) for part in _operands(node, exp.And)]
        return " AND ".join(parts) if all(parts) else None  # type: ignore[arg-type]
    if isinstance(node, exp.Not):
        return f"NOT {node.this.sql()}" if _always_false(node.this) else None
    value = _const(node)
    if value is not _NOT_CONST:
        return node.sql() if (value is True or (isinstance(value, float) and value != 0)) else None
    op = type(node)
    if op in _TAUTOLOGY_OPS or (_NULLSAFE_EQ is not None and op is _NULLSAFE_EQ):
        left, right = node.this, node.expression
        if op in (exp.EQ, exp.GTE, exp.LTE, _NULLSAFE_EQ) and left == right and not left.find(exp.Func):
            return node.sql()
        a, b = _const(left), _const(right)
        if a is not _NOT_CONST and b is not _NOT_CONST and type(a) is type(b):
            compare = _TAUTOLOGY_OPS.get(op, _TAUTOLOGY_OPS[exp.EQ])
            try:
                return node.sql() if compare(a, b) else None
            except TypeError:
                return None
    if isinstance(node, exp.Like) and isinstance(node.expression, exp.Literal) and node.expression.is_string:
        if node.expression.this and set(node.expression.this) == {"%"}:
            return node.sql()
    return None


def _operands(node: exp.Expr, kind: type) -> list[exp.Expr]:
    """The operands of a chain of ``kind`` (a OR b OR c …), parentheses included, left to right."""
    out: list[exp.Expr] = []
    stack = [node]
    while stack:
        current = stack.pop()
        while isinstance(current, exp.Paren) and isinstance(current.this, kind):
            current = current.this
        if isinstance(current, kind):
            stack.extend((current.expression, current.this))
        else:
            out.append(current)
    return out


def _always_false(node: exp.Expr) -> bool:
    if isinstance(node, exp.Paren):
        return _always_false(node.this)
    if isinstance(node, exp.Not):
        return _always_true(node.this) is not None
    value = _const(node)
    if value is not _NOT_CONST:
        return value is False or value == 0.0
    op = type(node)
    if op in _TAUTOLOGY_OPS:
        a, b = _const(node.this), _const(node.expression)
        if a is not _NOT_CONST and b is not _NOT_CONST and type(a) is type(b):
            try:
                return not _TAUTOLOGY_OPS[op](a, b)
            except TypeError:
                return False
    return False
