"""Split a cell into statements the way the database server does: the one splitter of cellgate.

The SQL kernel runs these statements one by one, and the gateway's risk analysis reads exactly
these statements (``Risk.texts``), so both use this module and nothing else.

- PostgreSQL: PostgreSQL's own scanner and parser (pglast, libpg_query). The boundaries are the
  ``;`` tokens of the scanner, except those inside a statement the parser reads as one (a
  ``BEGIN ATOMIC … END`` function body). Text the parser rejects is split at every ``;`` token;
  text even the scanner rejects (an unterminated quote) is one statement.
- MySQL/MariaDB: sqlglot's tokenizer for MySQL, which never folds a statement into one string.
- SQLite: SQLite's own ``sqlite3.complete_statement`` (which knows trigger bodies).

Statements are sliced out of the original text (never re-generated), so the driver receives
exactly what the user wrote: ``:name``, ``%`` and ``'{"a":1}'::jsonb`` stay as they are. Each
one is stripped of the ASCII whitespace around it, without its terminating ``;``; pieces that
are only whitespace and comments are dropped.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, NamedTuple

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

from ..registry import sqlglot_dialect

#: the whitespace stripped around a statement: ASCII only (a server reads U+00A0 as a letter)
WHITESPACE = " \t\n\r\f\v"
_PG_COMMENTS = {"SQL_COMMENT", "C_COMMENT"}
_TOKENIZERS: dict[str, type] = {}


def split_statements(sql: str, dialect: str) -> list[str]:
    """Return the statements of ``sql`` in order (dialect ``postgresql``, ``mysql``, ``mariadb``, ``sqlite``)."""
    reading = sqlglot_dialect(dialect.lower())  # kernels/registry.py: mariadb reads as mysql
    if reading == "postgres":
        return _split_postgres(sql)
    if reading == "mysql":
        return _split_mysql(sql)
    if reading == "sqlite":
        return _split_sqlite(sql)
    raise ValueError(f"cannot split SQL of dialect {dialect!r}: use postgresql, mysql, mariadb or sqlite")


# ---------------------------------------------------------------------------- PostgreSQL

class PostgresSplit(NamedTuple):
    """A PostgreSQL cell as PostgreSQL's parser reads it."""

    texts: list[str]                 # the statements, as split_statements returns them
    trees: list[dict[str, Any]] | None  # the parser's statement node of each text (JSON form), or None
    error: str | None                # why the parser (or the scanner) rejected the cell, or None
    scanned: bool                    # False when even the scanner could not read the cell


def split_postgres(sql: str) -> PostgresSplit:
    """Split ``sql`` with PostgreSQL's scanner and parser; never raises on bad SQL.

    The parser's JSON output gives statement offsets in UTF-8 bytes; the scanner's tokens (as
    pglast returns them) are ``str`` indices: both are turned into ``str`` indices here.
    """
    from pglast import parser

    try:
        tokens = parser.scan(sql)
    except Exception as exc:  # pglast.parser.ParseError: an unterminated quote or comment
        return PostgresSplit(_whole(sql), None, _error_text(exc), False)
    trees: list[dict[str, Any]] | None
    error = None
    try:
        raw = json.loads(parser.parse_sql_json(sql)).get("stmts", [])
        trees = [item.get("stmt", {}) for item in raw]
        inside = _char_ranges(sql, raw)
    except Exception as exc:  # a syntax error: every ";" token ends a statement
        trees, inside, error = None, [], _error_text(exc)
    ranges: list[tuple[int, int]] = []
    start, has_code, k = 0, False, 0
    for tok in tokens:
        if tok.name == "ASCII_59":
            while k < len(inside) and inside[k][1] <= tok.start:
                k += 1
            if k < len(inside) and inside[k][0] <= tok.start:
                continue  # a ";" inside a statement the parser read as one (BEGIN ATOMIC … END)
            if has_code:
                ranges.append((start, tok.start))
            start, has_code = tok.end + 1, False
        elif tok.name not in _PG_COMMENTS:
            has_code = True
    if has_code:
        ranges.append((start, len(sql)))
    if trees is not None and len(trees) != len(ranges):
        error = f"the parser read {len(trees)} statements where the scanner found {len(ranges)}"
        trees = None
    return PostgresSplit([sql[a:b].strip(WHITESPACE) for a, b in ranges], trees, error, True)


def _char_ranges(sql: str, raw: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The parser's statements as ``str`` index ranges (it counts UTF-8 bytes)."""
    data = sql.encode("utf-8")
    ascii_only = len(data) == len(sql)
    out: list[tuple[int, int]] = []
    last_byte, last_char = 0, 0

    def index(offset: int) -> int:
        nonlocal last_byte, last_char
        if ascii_only:
            return offset
        if offset >= last_byte:
            last_char += len(data[last_byte:offset].decode("utf-8", "replace"))
        else:
            last_char = len(data[:offset].decode("utf-8", "replace"))
        last_byte = offset
        return last_char

    for item in raw:
        start = int(item.get("stmt_location", 0))
        length = int(item.get("stmt_len", 0))
        a = index(start)
        b = index(start + length) if length else len(sql)
        out.append((a, b))
    return out


def _error_text(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _split_postgres(sql: str) -> list[str]:
    return split_postgres(sql).texts


# ---------------------------------------------------------------------------- MySQL / MariaDB

def tokenizer(name: str) -> type:
    """sqlglot's tokenizer for dialect ``name`` (``mysql``, ``postgres``, ``sqlite``) without command folding.

    sqlglot's own tokenizer turns everything after a "command" keyword (EXPLAIN, CALL, SHOW…)
    into one string token; this one keeps the statement's real tokens.
    """
    cls = _TOKENIZERS.get(name)
    if cls is None:
        base = Dialect.get_or_raise(name).tokenizer_class
        cls = _TOKENIZERS[name] = type(f"{base.__name__}NoCommands", (base,), {"COMMANDS": set()})
    return cls


class TokenSplit(NamedTuple):
    """A cell as sqlglot's tokenizer splits it."""

    texts: list[str]               # the statements, as split_statements returns them
    chunks: list[list[Token]]      # the tokens of each statement, without the ";"
    empty_at: int | None           # where the text after the first ";" with no statement before it begins


def split_tokens(sql: str, name: str) -> TokenSplit:
    """The statements of ``sql`` and the tokens of each, by sqlglot's tokenizer for ``name``.

    Raises sqlglot's TokenError (or ValueError) when the tokenizer cannot read the text.
    """
    statements: list[str] = []
    chunks: list[list[Token]] = []
    chunk: list[Token] = []
    start: int = 0
    empty_at: int | None = None
    for tok in tokenizer(name)(dialect=Dialect.get_or_raise(name)).tokenize(sql):
        if tok.token_type == TokenType.SEMICOLON:
            if chunk:
                statements.append(sql[start:tok.start].strip(WHITESPACE))
                chunks.append(chunk)
            elif empty_at is None:
                empty_at = tok.end + 1
            start, chunk = tok.end + 1, []
        else:
            chunk.append(tok)
    if chunk:
        statements.append(sql[start:].strip(WHITESPACE))
        chunks.append(chunk)
    return TokenSplit(statements, chunks, empty_at)


def _split_mysql(sql: str) -> list[str]:
    try:
        return split_tokens(sql, "mysql").texts
    except (SqlglotError, ValueError):
        return _whole(sql)


# ---------------------------------------------------------------------------- SQLite

#: ";" inside one statement checked with complete_statement before the rest counts as one statement
#: (each check reads the statement from its start: without a bound, a cell of one string full of
#: ";" would take quadratic time; what is left over is sent as one text, which sqlite3 refuses to
#: run if it holds more than one statement)
SQLITE_MAX_CHECKS = 2000


def _split_sqlite(sql: str) -> list[str]:
    if "\x00" in sql:  # sqlite3 refuses text with a NUL in it: one statement, which it will refuse to run
        return _whole(sql)
    statements: list[str] = []
    start, checks = 0, 0
    at = sql.find(";")
    while at >= 0 and checks < SQLITE_MAX_CHECKS:
        checks += 1
        if sqlite3.complete_statement(sql[start:at + 1]):
            statements.append(sql[start:at])
            start, checks = at + 1, 0
        at = sql.find(";", at + 1)
    statements.append(sql[start:])
    return [s.strip(WHITESPACE) for s in statements if sqlite_has_code(s)]


def sqlite_has_code(text: str) -> bool:
    """False for text that is only whitespace and comments, read as SQLite's tokenizer reads them."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\n\f\r":
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            return True
    return False


def _whole(sql: str) -> list[str]:
    return [sql.strip(WHITESPACE)] if sql.strip(WHITESPACE) else []
