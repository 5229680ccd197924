"""Split a cell into statements without breaking quoted text, comments or dollar-quoting.

Statements are sliced out of the original text (never re-generated), so the driver receives
exactly what the user wrote: ``:name``, ``%`` and ``'{"a":1}'::jsonb`` stay as they are.
"""

from __future__ import annotations

import sqlite3

from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import TokenType

_SQLGLOT_DIALECT = {"postgresql": "postgres", "mysql": "mysql"}


def split_statements(sql: str, dialect: str) -> list[str]:
    """Return the statements of ``sql`` in order, stripped, without empty ones.

    SQLite uses SQLite's own ``sqlite3.complete_statement`` (which knows trigger bodies);
    the others use the sqlglot tokenizer of their dialect. If the tokenizer cannot read the
    text, the whole text is returned as one statement and the server decides.
    """
    if dialect == "sqlite":
        return _split_sqlite(sql)
    try:
        tokens = Dialect.get_or_raise(_SQLGLOT_DIALECT[dialect]).tokenize(sql)
    except (SqlglotError, ValueError):
        return [sql.strip()] if sql.strip() else []
    statements: list[str] = []
    start = 0
    has_tokens = False
    for token in tokens:
        if token.token_type == TokenType.SEMICOLON:
            if has_tokens:
                statements.append(sql[start : token.start].strip())
            start, has_tokens = token.end + 1, False
        else:
            has_tokens = True
    if has_tokens:
        statements.append(sql[start:].strip())
    return statements


def _split_sqlite(sql: str) -> list[str]:
    statements: list[str] = []
    buffer = ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    tail = buffer[:-1]  # drop the ";" added after the last piece
    if tail.strip():
        statements.append(tail)
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    """False for pieces that are only whitespace, comments and semicolons."""
    try:
        tokens = Dialect.get_or_raise("sqlite").tokenize(statement)
    except (SqlglotError, ValueError):
        return bool(statement.strip(" \t\r\n;"))
    return any(t.token_type != TokenType.SEMICOLON for t in tokens)
