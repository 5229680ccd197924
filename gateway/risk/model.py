"""The risk model: levels, flags, the rule table (as data) and the :class:`Risk` a cell gets.

Every rule the analysis applies, and its level, is in :data:`RULES`, the one table docs/risk.md
describes; :class:`Findings` collects (rule, sentence) pairs and turns them into a level and
reasons. Nothing here reads SQL or Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


def combine(parts: Sequence[Risk], labels: Sequence[str]) -> Risk:
    """The risk of several cells run as one task (a notebook): the highest level of any; every
    reason, each under its cell's label, most serious first; read-only and parsed only when every
    cell is; the statements, texts and UPDATE/DELETE statements of all cells in order."""
    if not parts:
        raise ValueError("combine needs at least one part")
    ranked = sorted(((p, label) for p, label in zip(parts, labels)), key=lambda pl: -_RANK[pl[0].level])
    reasons: dict[str, None] = {}
    for part, label in ranked:  # stable: cell order within a level, and a cell's own order
        for reason in part.reasons:
            reasons.setdefault(f"{label}: {reason}", None)
    return Risk(level=max((p.level for p in parts), key=_RANK.__getitem__), reasons=tuple(reasons),
                flags=tuple(sorted({f for p in parts for f in p.flags})),
                statements=tuple(s for p in parts for s in p.statements),
                tables=tuple(sorted({t for p in parts for t in p.tables})),
                read_only=all(p.read_only for p in parts), parsed=all(p.parsed for p in parts),
                explain=tuple(e for p in parts for e in p.explain), texts=tuple(t for p in parts for t in p.texts),
                functions=tuple(sorted({f for p in parts for f in p.functions})),
                normalized=tuple(n for p in parts for n in p.normalized))
