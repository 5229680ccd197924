"""PostgreSQL through psycopg 3.

- ``cursor.execute(sql)`` without parameters sends the text as is (no ``%`` parsing).
- Statement timeout: the ``statement_timeout`` setting, given at connect time.
- Cancel: ``connection.cancel_safe()`` (the libpq cancel request), safe from another thread.
- After an error inside an explicit transaction, the transaction is rolled back.
"""

from __future__ import annotations

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

from .dialects import Dialect, Result, ResultSet, Status


class PostgresDialect(Dialect):
    name = "postgresql"

    def connect(self) -> psycopg.Connection:
        t = self.target
        kwargs: dict[str, object] = dict(t.query)
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("application_name", "cellgate-sql-kernel")
        timeout_ms = int(self.settings.statement_timeout * 1000)
        options = f"-c statement_timeout={timeout_ms}"
        kwargs["options"] = f"{kwargs['options']} {options}" if "options" in kwargs else options
        return psycopg.connect(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            dbname=t.database,
            autocommit=True,
            **kwargs,
        )

    def execute(self, conn: psycopg.Connection, statement: str) -> Result:
        with conn.cursor() as cur:
            cur.execute(statement)
            while cur.description is None and cur.nextset():
                pass  # only reached if the text still held several statements
            if cur.description is None:
                return Status(cur.statusmessage or "OK")
            rows = cur.fetchmany(self.row_limit + 1)
            columns = [c.name for c in cur.description]
            shown = rows[: self.row_limit]
            truncated = len(rows) > self.row_limit
            more = cur.rowcount - len(shown) if truncated and cur.rowcount >= 0 else None
            return ResultSet(columns, [tuple(r) for r in shown], truncated, more)

    def cancel(self, conn: psycopg.Connection) -> None:
        conn.cancel_safe(timeout=5)

    def recover(self, conn: psycopg.Connection) -> None:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.INERROR:
            conn.execute("ROLLBACK")

    def is_usable(self, conn: psycopg.Connection) -> bool:
        return not conn.closed and not conn.broken

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, errors.QueryCanceled) and "statement timeout" in str(exc)


DIALECT = PostgresDialect
