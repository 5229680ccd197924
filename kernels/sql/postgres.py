"""PostgreSQL through psycopg 3.

- One statement, one protocol call: each statement is sent through the *extended* query
  protocol as the unnamed statement (psycopg's pipeline mode always uses ``PQsendQueryParams``),
  and the server refuses a Parse message holding two commands ("cannot insert multiple commands
  into a prepared statement"). Results stay in text format, so types render as with the simple
  protocol; no named prepared statement is left on the server (``prepare_threshold=None``).
  Without libpq pipeline support (libpq < 14) ``prepare=True`` is used instead (named statements).
- ``cursor.execute(sql)`` without parameters sends the text as is (no ``%`` parsing).
- Statement timeout: the ``statement_timeout`` setting, given at connect time.
- Cancel: ``connection.cancel_safe()`` (the libpq cancel request), safe from another thread.
- After an error inside an explicit transaction, the transaction is rolled back.
- Read-only connections: ``default_transaction_read_only=on`` in the connection options, and
  every statement runs inside a ``READ ONLY`` transaction started by psycopg itself
  (``autocommit=False``, ``read_only=True``), pinned with a snapshot before the cell's own text
  runs (so ``SET TRANSACTION READ WRITE`` is refused) and rolled back when the cell ends, then
  ``DISCARD ALL`` (session advisory locks, settings, ``LISTEN`` die with the cell). A ``COMMIT``
  in the cell ends the transaction; the next statement gets a new read-only one.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus

from .params import Params
from .dialects import Dialect, Result, ResultSet, Status

_PIPELINE = psycopg.Pipeline.is_supported()


class PostgresDialect(Dialect):
    name = "postgresql"

    def connect(self) -> psycopg.Connection:
        t = self.target
        kwargs: dict[str, Any] = dict(t.query)  # the URL's query options, passed to libpq as they are
        kwargs.setdefault("connect_timeout", 10)
        kwargs.setdefault("application_name", "cellgate-sql-kernel")
        timeout_ms = int(self.settings.statement_timeout * 1000)
        options = f"-c statement_timeout={timeout_ms}"
        if self.readonly:
            options += " -c default_transaction_read_only=on"
        kwargs["options"] = f"{kwargs['options']} {options}" if "options" in kwargs else options
        conn = psycopg.connect(
            host=t.host,
            port=t.port,
            user=t.user,
            password=t.password,
            dbname=t.database,
            autocommit=not self.readonly,
            prepare_threshold=None,
            **kwargs,
        )
        if self.readonly:
            conn.read_only = True  # psycopg opens every transaction with BEGIN READ ONLY
        return conn

    def execute(self, conn: psycopg.Connection, statement: str, params: Params | None = None) -> Result:
        if self.readonly:
            self._pin_read_only(conn)
        with conn.cursor() as cur:
            try:
                _run(conn, cur, statement, params)
            except psycopg.OperationalError as exc:
                if "COPY" not in str(exc):
                    raise
                conn.close()  # a COPY left the protocol mid-copy: start afresh next time
                raise errors.FeatureNotSupported(
                    "COPY ... FROM STDIN / TO STDOUT cannot run in this kernel; use SELECT, or COPY to "
                    "and from a file on the server; the connection was reset"
                ) from None
            if cur.description is None:
                return Status(cur.statusmessage or "OK")
            rows = cur.fetchmany(self.row_limit + 1)
            columns = [c.name for c in cur.description]
            shown = rows[: self.row_limit]
            truncated = len(rows) > self.row_limit
            more = cur.rowcount - len(shown) if truncated and cur.rowcount >= 0 else None
            return ResultSet(columns, [tuple(r) for r in shown], truncated, more)

    @staticmethod
    def _pin_read_only(conn: psycopg.Connection) -> None:
        """Open the READ ONLY transaction and take its snapshot before the cell's text runs.

        Once a query ran in it, PostgreSQL refuses to switch the transaction to read-write.
        """
        if conn.info.transaction_status == TransactionStatus.IDLE:
            with conn.cursor() as cur:
                _run(conn, cur, "SELECT 1")

    def end_cell(self, conn: psycopg.Connection) -> None:
        """Read-only: roll back, then ``DISCARD ALL`` -- nothing of the cell outlives it (session
        advisory locks, ``SET``s, ``LISTEN``); the connection's startup options stay."""
        if not self.readonly or conn.closed:
            return
        conn.rollback()
        conn.autocommit = True  # DISCARD ALL cannot run inside a transaction block
        try:
            conn.execute("DISCARD ALL")
        finally:
            conn.autocommit = False

    def cancel(self, conn: psycopg.Connection) -> None:
        conn.cancel_safe(timeout=5)

    def recover(self, conn: psycopg.Connection) -> None:
        if conn.closed:
            return
        status = conn.info.transaction_status
        if status == TransactionStatus.ACTIVE:
            conn.close()  # left mid-protocol: not reusable
        elif self.readonly:
            conn.rollback()
        elif status == TransactionStatus.INERROR:
            conn.execute("ROLLBACK")

    def is_usable(self, conn: psycopg.Connection) -> bool:
        return not conn.closed and not conn.broken

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, errors.QueryCanceled) and "statement timeout" in str(exc)


def _run(conn: psycopg.Connection, cur: psycopg.Cursor, statement: str, params: Params | None = None) -> None:
    """Send ``statement`` in one extended-protocol call (see the module docstring); ``params`` are
    bound by the server (psycopg sends them apart from the text)."""
    if not _PIPELINE:
        cur.execute(statement, params, prepare=True)
        return
    with conn.pipeline():
        cur.execute(statement, params, prepare=False)


DIALECT = PostgresDialect
