"""SQLite through the standard library.

- One statement per ``execute`` (the session splits the cell); no parameters are passed.
- Rows are stepped lazily; reading stops after the limit, so the total is not known.
- Statement timeout: a progress handler that aborts once the deadline has passed.
- Cancel: ``connection.interrupt()``, safe from another thread.
- Read-only connections: the same database file opened with ``mode=ro`` (a missing file is not
  created), ``SQLITE_LIMIT_ATTACHED`` set to 0 (no ``ATTACH``, no ``VACUUM INTO``) and the
  engine's authorizer (:mod:`.sqlite_readonly`), which lets through reads, allow-listed
  functions and read-only pragmas only.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from .params import Params
from .dialects import Dialect, Result, ResultSet, Status, status_text
from .sqlite_readonly import authorize


class StatementTimeout(sqlite3.OperationalError):
    """The statement ran longer than CELLGATE_STATEMENT_TIMEOUT."""


class SQLiteDialect(Dialect):
    name = "sqlite"
    _deadline: float | None = None
    _timed_out = False

    def connect(self) -> sqlite3.Connection:
        if self.readonly:
            conn = self._connect_read_only()
        else:
            conn = sqlite3.connect(self.target.database or ":memory:", isolation_level=None, check_same_thread=False)
        if self.settings.statement_timeout:
            conn.set_progress_handler(self._progress, 10_000)
        return conn

    def _connect_read_only(self) -> sqlite3.Connection:
        uri = Path(self.target.database or "").absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = 1")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(authorize)
        return conn

    def _progress(self) -> int:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._timed_out = True
            return 1
        return 0

    def execute(self, conn: sqlite3.Connection, statement: str, params: Params | None = None) -> Result:
        timeout = self.settings.statement_timeout
        self._deadline = time.monotonic() + timeout if timeout else None
        self._timed_out = False
        cur = conn.cursor()
        try:
            cur.execute(statement, params or ())
            if cur.description is None:
                return Status(status_text(statement, cur.rowcount))
            rows = cur.fetchmany(self.row_limit + 1)
            columns = [c[0] for c in cur.description]
            shown = rows[: self.row_limit]
            return ResultSet(columns, [tuple(r) for r in shown], len(rows) > len(shown), None)
        except sqlite3.OperationalError as exc:
            if self._timed_out:
                raise StatementTimeout(f"statement timeout ({timeout:g} s) exceeded") from exc
            raise
        finally:
            self._deadline = None
            cur.close()

    def cancel(self, conn: sqlite3.Connection) -> None:
        conn.interrupt()

    def is_usable(self, conn: sqlite3.Connection) -> bool:
        try:
            conn.total_changes  # noqa: B018 - reading it raises ProgrammingError on a closed connection
        except sqlite3.ProgrammingError:
            return False
        return True

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, StatementTimeout)


DIALECT = SQLiteDialect
