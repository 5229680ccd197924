"""MariaDB and MySQL through PyMySQL.

- ``cursor.execute(sql)`` with ``args=None`` sends the text as is (no ``%`` interpolation).
- Rows are streamed (unbuffered cursor); rows beyond the limit are read and counted, not kept.
- Statement timeout: MariaDB ``max_statement_time`` (seconds); MySQL ``max_execution_time``
  (milliseconds, which MySQL applies to SELECT only).
- Cancel: ``KILL QUERY <connection id>`` from a second, short-lived connection.
"""

from __future__ import annotations

import pymysql
import pymysql.cursors
from pymysql.constants import CLIENT, ER

from .dialects import Dialect, Result, ResultSet, Status, status_text

_TIMEOUT_CODES = {1969, 3024}  # MariaDB ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT


class MySQLDialect(Dialect):
    name = "mysql"

    def _connect(self, **extra: object) -> pymysql.connections.Connection:
        t = self.target
        options = {k: v for k, v in t.query.items() if k in {"charset", "unix_socket", "ssl_ca"}}
        return pymysql.connect(
            host=t.host or "localhost",
            port=t.port or 3306,
            user=t.user or "",
            password=t.password or "",
            database=t.database,
            autocommit=True,
            connect_timeout=10,
            **options,  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )

    def connect(self) -> pymysql.connections.Connection:
        conn = self._connect(client_flag=CLIENT.MULTI_STATEMENTS, cursorclass=pymysql.cursors.SSCursor)
        seconds = self.settings.statement_timeout
        with conn.cursor() as cur:
            if "mariadb" in conn.get_server_info().lower():
                cur.execute(f"SET SESSION max_statement_time = {seconds:f}")
            else:
                cur.execute(f"SET SESSION max_execution_time = {int(seconds * 1000)}")
        return conn

    def execute(self, conn: pymysql.connections.Connection, statement: str) -> Result:
        with conn.cursor() as cur:
            cur.execute(statement)
            while cur.description is None and cur.nextset():
                pass  # only reached if the text still held several statements
            if cur.description is None:
                return Status(status_text(statement, cur.rowcount))
            rows = list(cur.fetchmany(self.row_limit + 1))
            columns = [c[0] for c in cur.description]
            shown = rows[: self.row_limit]
            more = len(rows) - len(shown)
            if more:
                while chunk := cur.fetchmany(10_000):
                    more += len(chunk)
            while cur.nextset():
                pass
            return ResultSet(columns, [tuple(r) for r in shown], more > 0, more or None)

    def cancel(self, conn: pymysql.connections.Connection) -> None:
        thread_id = conn.thread_id()
        killer = self._connect()
        try:
            with killer.cursor() as cur:
                cur.execute(f"KILL QUERY {int(thread_id)}")
        except pymysql.err.OperationalError as exc:
            if exc.args[0] != ER.NO_SUCH_THREAD:
                raise
        finally:
            killer.close()

    def recover(self, conn: pymysql.connections.Connection) -> None:
        conn.ping(reconnect=False)

    def is_usable(self, conn: pymysql.connections.Connection) -> bool:
        return bool(conn.open)

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, pymysql.err.MySQLError) and bool(exc.args) and exc.args[0] in _TIMEOUT_CODES


DIALECT = MySQLDialect
