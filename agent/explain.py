"""Affected-row estimates for UPDATE/DELETE statements, from the database's planner.

The statement is only ever passed to ``EXPLAIN`` (never ``EXPLAIN ANALYZE``), one statement per
call through a protocol that refuses a second statement (a PostgreSQL prepared statement;
PyMySQL without ``MULTI_STATEMENTS``), inside a transaction that is rolled back (read-only on
PostgreSQL). So a cell's
``UPDATE …; DROP TABLE …`` text can never run here, even in part. Connections use the target's
own settings on the agent; nothing of them leaves it.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from cellgate.kernels.sql.dialects import dialect_for
from cellgate.kernels.sql.target import Settings, parse_target_url, redact

from .config import Target

log = logging.getLogger(__name__)

DML = re.compile(r"^\s*(UPDATE|DELETE)\b", re.IGNORECASE)
EXPLAIN_TIMEOUT = 10.0


class ExplainError(Exception):
    """No estimate: the dialect has no planner estimate here, or the database refused."""


def estimate(target: Target, statements: list[str]) -> list[int]:
    """Estimated affected rows, one per statement."""
    if target.url is None:
        raise ExplainError(f"target {target.name} has no database URL")
    bad = [s for s in statements if not DML.match(s) or ";" in s.strip().rstrip(";")]
    if bad:
        raise ExplainError("only single UPDATE or DELETE statements are estimated")
    settings = Settings(target=parse_target_url(target.url), row_limit=1, statement_timeout=EXPLAIN_TIMEOUT)
    dialect = settings.target.dialect
    try:
        if dialect == "postgresql":
            return _postgres(settings, statements)
        if dialect == "mysql":
            return _mysql(settings, statements)
    except ExplainError:
        raise
    except Exception as exc:
        raise ExplainError(redact(f"EXPLAIN failed: {exc}", settings.target.secrets())) from None
    raise ExplainError(f"no row estimate on {dialect}")


def _postgres(settings: Settings, statements: list[str]) -> list[int]:
    conn = dialect_for(settings).connect()
    try:
        rows = []
        with conn.cursor() as cur:
            cur.execute("BEGIN READ ONLY")
            for statement in statements:
                # prepared: the server refuses a second command in it, so only EXPLAIN of one statement runs
                cur.execute(f"EXPLAIN (FORMAT JSON) {statement.strip().rstrip(';')}", prepare=True)
                plan = cur.fetchone()[0]
                plan = json.loads(plan) if isinstance(plan, str) else plan
                rows.append(_pg_rows(plan[0]["Plan"]))
            cur.execute("ROLLBACK")
        return rows
    finally:
        conn.close()


def _pg_rows(plan: dict[str, Any]) -> int:
    """A ModifyTable node plans 0 rows without RETURNING; the rows it touches are its input's."""
    if plan.get("Node Type") == "ModifyTable" and plan.get("Plans"):
        return int(plan["Plans"][0].get("Plan Rows", 0))
    return int(plan.get("Plan Rows", 0))


def _mysql(settings: Settings, statements: list[str]) -> list[int]:
    conn = dialect_for(settings)._connect()  # no MULTI_STATEMENTS: one statement per call
    try:
        rows = []
        with conn.cursor() as cur:
            cur.execute("START TRANSACTION")  # MariaDB refuses EXPLAIN UPDATE in a READ ONLY one
            for statement in statements:
                cur.execute(f"EXPLAIN {statement.strip().rstrip(';')}")
                names = [d[0].lower() for d in cur.description]
                found = [dict(zip(names, r)) for r in cur.fetchall()]
                rows.append(max((int(r.get("rows") or 0) for r in found), default=0))
            cur.execute("ROLLBACK")
        return rows
    finally:
        conn.close()
