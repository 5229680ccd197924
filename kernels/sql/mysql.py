"""MariaDB and MySQL through PyMySQL.

- ``cursor.execute(sql)`` with ``args=None`` sends the text as is (no ``%`` interpolation), in one
  ``COM_QUERY`` on a connection without ``CLIENT.MULTI_STATEMENTS``: the server refuses a text
  holding a second statement (error 1064).
- Rows are streamed (unbuffered cursor); rows beyond the limit are read and counted, not kept.
- Statement timeout: MariaDB ``max_statement_time`` (seconds); MySQL ``max_execution_time``
  (milliseconds, which MySQL applies to SELECT only).
- Cancel: ``KILL QUERY <connection id>`` from a second, short-lived connection.
- Read-only connections: ``SET SESSION TRANSACTION READ ONLY`` on connect and again before every
  statement (the cell's own SQL could change it); closed when the cell ends (PyMySQL has no
  ``COM_RESET_CONNECTION``), so no lock or session variable of a cell outlives it. Not
  ``START TRANSACTION READ ONLY``: DDL commits implicitly through it.
"""

from __future__ import annotations


import pymysql
import pymysql.cursors
from pymysql.constants import ER

from .params import Params
from .dialects import Dialect, Result, ResultSet, Status, status_text

_TIMEOUT_CODES = {1969, 3024}  # MariaDB ER_STATEMENT_TIMEOUT, MySQL ER_QUERY_TIMEOUT
READ_ONLY = "SET SESSION TRANSACTION READ ONLY"
#: the session's one prepared statement, for a statement with template values
PREPARED = "cg_stmt"


class MySQLDialect(Dialect):
    name = "mysql"

    def _connect(self, **extra: object) -> pymysql.connections.Connection:
        t = self.target
        options = {k: v for k, v in t.query.items() if k in {"charset", "unix_socket", "ssl_ca"}}
        # the URL's query options and the caller's extras are keyword arguments PyMySQL checks when it runs;
        # its stubs' overloads cannot match a ** of mixed values
        return pymysql.connect(  # type: ignore[call-overload]
            host=t.host or "localhost",
            port=t.port or 3306,
            user=t.user or "",
            password=t.password or "",
            database=t.database,
            autocommit=True,
            connect_timeout=10,
            **options,
            **extra,
        )

    def connect(self) -> pymysql.connections.Connection:
        # PyMySQL's default client_flag has no MULTI_STATEMENTS: one statement per COM_QUERY
        conn = self._connect(cursorclass=pymysql.cursors.SSCursor)
        seconds = self.settings.statement_timeout
        with conn.cursor() as cur:
            if "mariadb" in conn.get_server_info().lower():
                cur.execute(f"SET SESSION max_statement_time = {seconds:f}")
            else:
                cur.execute(f"SET SESSION max_execution_time = {int(seconds * 1000)}")
            if self.readonly:
                cur.execute(READ_ONLY)
        return conn

    def execute(self, conn: pymysql.connections.Connection, statement: str, params: Params | None = None) -> Result:
        if params is None:
            return self._execute(conn, statement, None)
        # a template's values: bound by the server in a prepared statement (``?`` in the text,
        # ``EXECUTE … USING`` user variables each set to one value), never spliced into the text
        values = list(params.values()) if isinstance(params, dict) else list(params)
        names = [f"@cg_v{i}" for i in range(len(values))]
        with conn.cursor() as cur:
            for name, value in zip(names, values):
                cur.execute(f"SET {name} = %s", (value,))
            cur.execute(f"PREPARE {PREPARED} FROM %s", (statement,))
        try:
            return self._execute(conn, f"EXECUTE {PREPARED}" + (f" USING {', '.join(names)}" if names else ""), statement)
        finally:
            with conn.cursor() as cur:
                cur.execute(f"DEALLOCATE PREPARE {PREPARED}")
                if names:
                    cur.execute("SET " + ", ".join(f"{name} = NULL" for name in names))

    def _execute(self, conn: pymysql.connections.Connection, sent: str, statement: str | None) -> Result:
        """Send ``sent`` (the statement, or the EXECUTE of it); ``statement`` names it in status lines."""
        statement = statement or sent
        with conn.cursor() as cur:
            if self.readonly:
                cur.execute(READ_ONLY)
            cur.execute(sent)
            while cur.description is None and cur.nextset():
                pass  # a CALL's status before its result set
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

    def end_cell(self, conn: pymysql.connections.Connection) -> None:
        """Read-only: close the session, so nothing of the cell outlives it (``GET_LOCK`` locks,
        ``SET sql_mode`` and other session variables); the next read-only cell connects anew."""
        if self.readonly and conn.open:
            conn.close()

    def is_usable(self, conn: pymysql.connections.Connection) -> bool:
        return bool(conn.open)

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, pymysql.err.MySQLError) and bool(exc.args) and exc.args[0] in _TIMEOUT_CODES


DIALECT = MySQLDialect
