"""Affected-row estimates for UPDATE/DELETE statements, from the database's planner.

Nothing is ever executed here, and only the target's READ-ONLY credential is used (no estimate,
with the reason, when the target has none):

A read-only role may not ``EXPLAIN UPDATE/DELETE`` (both servers check the write privilege
while planning, and MariaDB refuses it in a read-only session), so a single-table ``UPDATE`` or
``DELETE`` is explained as ``SELECT 1 FROM <its table> WHERE <its condition>``, both sliced
from the original text (never re-generated); other shapes (joins, ``USING``/``FROM``, ``WITH``)
get no estimate.

- PostgreSQL: the shape is read by PostgreSQL's own parser (pglast); ``EXPLAIN`` (never
  ``ANALYZE``) of one statement per call, as a prepared statement (the server refuses a second
  command in it), on a connection opened with ``default_transaction_read_only=on`` inside a
  ``READ ONLY`` transaction that is rolled back.
- MariaDB/MySQL: ``EXPLAIN`` evaluates constant subqueries and functions while planning
  (``EXPLAIN DELETE … WHERE id = (SELECT SLEEP(5))`` sleeps), so a statement holding a subquery,
  any function call or a ``/*! … */`` comment is not estimated; one statement per call (PyMySQL
  without ``MULTI_STATEMENTS``), in a ``SET SESSION TRANSACTION READ ONLY`` session.

At most :data:`MAX_STATEMENTS` statements are estimated. Connections use the target's own
settings on the agent; nothing of them leaves it.
"""

from __future__ import annotations

import json
import logging
import re

from pglast import ast
from pglast.parser import ParseError, parse_sql, scan
from sqlglot.dialects.dialect import Dialect as SqlglotDialect
from sqlglot.errors import SqlglotError
from sqlglot.tokens import Token, TokenType

from cellgate.kernels.sql.dialects import dialect_for
from cellgate.kernels.sql.target import Settings, parse_target_url, redact

from .config import Target

log = logging.getLogger(__name__)

DML = re.compile(r"^\s*(UPDATE|DELETE)\b", re.IGNORECASE)
#: at most this many statements are estimated per request (as Bytebase does)
MAX_STATEMENTS = 10


class ExplainError(Exception):
    """No estimate: the dialect has no planner estimate here, or the database refused."""


def estimate(target: Target, statements: list[str], *, statement_timeout: float) -> list[int]:
    """Estimated affected rows, one per statement (of the first :data:`MAX_STATEMENTS`); each
    EXPLAIN may take ``statement_timeout`` seconds (``Agent.explain_timeout``)."""
    statements = statements[:MAX_STATEMENTS]
    bad = [s for s in statements if not DML.match(s) or ";" in s.strip().rstrip(";")]
    if bad:
        raise ExplainError("only single UPDATE or DELETE statements are estimated")
    if target.dialect not in ("postgresql", "mysql", "mariadb"):
        raise ExplainError(f"no row estimate on {target.dialect or target.kind}")
    if not target.readonly_url:
        raise ExplainError(f"no row estimate: target {target.name} has no read-only credential "
                           "(set readonly_url_env in the agent's targets file)")
    settings = Settings(target=parse_target_url(target.readonly_url, "readonly_url"), row_limit=1,
                        statement_timeout=statement_timeout, readonly=True)
    try:
        if settings.target.dialect == "postgresql":
            return _postgres(settings, [_pg_select(s) for s in statements])
        return _mysql(settings, [_mysql_select(s) for s in statements])
    except ExplainError:
        raise
    except Exception as exc:
        raise ExplainError(redact(f"EXPLAIN failed: {exc}", settings.target.secrets())) from None


def _postgres(settings: Settings, selects: list[str]) -> list[int]:
    conn = dialect_for(settings).connect()  # read-only: psycopg opens BEGIN READ ONLY itself
    try:
        rows = []
        with conn.cursor() as cur:
            for select in selects:
                # prepared: the server refuses a second command in it, so only EXPLAIN of one statement runs
                cur.execute(f"EXPLAIN (FORMAT JSON) {select}", prepare=True)
                plan = cur.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                rows.append(int(plan[0]["Plan"].get("Plan Rows", 0)))
        conn.rollback()
        return rows
    finally:
        conn.close()


def _pg_select(statement: str) -> str:
    """``SELECT 1 FROM <table> WHERE <condition>`` for a single-table UPDATE/DELETE; refuses the rest."""
    text = statement.strip().rstrip(";")
    try:
        [raw] = parse_sql(text)
        tokens = scan(text)
    except (ParseError, ValueError):
        raise ExplainError("no row estimate: PostgreSQL's parser does not read the statement as one") from None
    stmt = raw.stmt
    if (not isinstance(stmt, (ast.DeleteStmt, ast.UpdateStmt)) or stmt.withClause
            or getattr(stmt, "usingClause", None) or getattr(stmt, "fromClause", None)
            or isinstance(stmt.whereClause, ast.CurrentOfExpr)):
        raise ExplainError("no row estimate: only single-table UPDATE and DELETE are estimated")
    marks: dict[str, int] = {}
    depth = 0
    for i, token in enumerate(tokens):
        depth += {"ASCII_40": 1, "ASCII_41": -1}.get(token.name, 0)
        if depth == 0 and token.name in ("FROM", "SET", "WHERE", "RETURNING"):
            marks.setdefault(token.name, i)
    first = marks["FROM"] + 1 if isinstance(stmt, ast.DeleteStmt) else 1
    after_table = min(marks.get(k, len(tokens)) for k in ("SET", "WHERE", "RETURNING") if k != "SET"
                      or isinstance(stmt, ast.UpdateStmt))
    def piece(a: int, b: int) -> str:  # the scanner's offsets are character offsets, end inclusive
        return text[tokens[a].start : tokens[b].end + 1]

    select = f"SELECT 1 FROM {piece(first, after_table - 1)}"
    if "WHERE" in marks:
        end = marks.get("RETURNING", len(tokens))
        select += f" WHERE {piece(marks['WHERE'] + 1, end - 1)}"
    return select


def _mysql(settings: Settings, selects: list[str]) -> list[int]:
    conn = dialect_for(settings).connect()  # read-only session, no MULTI_STATEMENTS
    try:
        rows = []
        with conn.cursor() as cur:
            for select in selects:
                cur.execute(f"EXPLAIN {select}")
                names = [d[0].lower() for d in cur.description]
                found = [dict(zip(names, r)) for r in cur.fetchall()]
                rows.append(max((int(r.get("rows") or 0) for r in found), default=0))
        return rows
    finally:
        conn.close()


#: tokens before which "(" is grouping, not a function call's argument list
_GROUPING_AFTER = {
    TokenType.IN, TokenType.L_PAREN, TokenType.COMMA, TokenType.EQ, TokenType.NEQ, TokenType.LT,
    TokenType.LTE, TokenType.GT, TokenType.GTE, TokenType.AND, TokenType.OR, TokenType.NOT,
    TokenType.WHERE, TokenType.PLUS, TokenType.DASH, TokenType.STAR, TokenType.SLASH, TokenType.MOD,
    TokenType.SET, TokenType.NULLSAFE_EQ, TokenType.IS, TokenType.BETWEEN,
}
_TABLE_NAME = {TokenType.VAR, TokenType.IDENTIFIER, TokenType.DOT}
_TAIL = {TokenType.ORDER_BY, TokenType.LIMIT}
_EXECUTABLE_COMMENT = re.compile(r"/\*M?!", re.IGNORECASE)


def _mysql_select(statement: str) -> str:
    """``SELECT 1 FROM <table> WHERE <condition>`` for a single-table UPDATE/DELETE; refuses the rest."""
    text = statement.strip().rstrip(";")
    if _EXECUTABLE_COMMENT.search(text):
        raise ExplainError("no row estimate: the statement holds a /*! … */ comment, which the server would run")
    try:
        tokens = SqlglotDialect.get_or_raise("mysql").tokenize(text)
    except (SqlglotError, ValueError):
        raise ExplainError("no row estimate: the statement could not be read") from None
    _no_evaluation(tokens)
    words = [t.token_type for t in tokens]
    if words[0] == TokenType.DELETE:
        if len(words) < 3 or words[1] != TokenType.FROM:
            raise ExplainError("no row estimate: only DELETE FROM <table> [WHERE …] is estimated")
        start = 2
    else:
        start = 1
    end = start
    while end < len(tokens) and words[end] in _TABLE_NAME:
        end += 1
    if end == start:
        raise ExplainError("no row estimate: only single-table UPDATE and DELETE are estimated")
    table = text[tokens[start].start : tokens[end - 1].end + 1]
    rest = words[end:]
    expected = TokenType.SET if words[0] == TokenType.UPDATE else None
    if expected is not None and (not rest or rest[0] != TokenType.SET):
        raise ExplainError("no row estimate: only single-table UPDATE and DELETE are estimated")
    if expected is None and rest and rest[0] not in (TokenType.WHERE, *_TAIL):
        raise ExplainError("no row estimate: only single-table UPDATE and DELETE are estimated")
    where = next((i for i in range(end, len(tokens)) if words[i] == TokenType.WHERE), None)
    stop = next((i for i in range(end, len(tokens)) if words[i] in _TAIL), len(tokens))
    condition = ""
    if where is not None and where < stop:
        last = tokens[stop - 1]
        condition = " WHERE " + text[tokens[where + 1].start : last.end + 1] if where + 1 < stop else ""
    return f"SELECT 1 FROM {table}{condition}"


def _no_evaluation(tokens: list[Token]) -> None:
    """Refuse a subquery or any function call: EXPLAIN on MariaDB may evaluate them."""
    for i, token in enumerate(tokens):
        if token.token_type == TokenType.SELECT:
            raise ExplainError("no row estimate: the statement holds a subquery, which EXPLAIN would run")
        if token.token_type == TokenType.L_PAREN and i > 0 and tokens[i - 1].token_type not in _GROUPING_AFTER:
            raise ExplainError("no row estimate: the statement calls a function, which EXPLAIN may run")
