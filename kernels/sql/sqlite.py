"""SQLite through the standard library.

- One statement per ``execute`` (the session splits the cell); no parameters are passed.
- Rows are stepped lazily; reading stops after the limit, so the total is not known.
- Statement timeout: a progress handler that aborts once the deadline has passed.
- Cancel: ``connection.interrupt()``, safe from another thread.
"""

from __future__ import annotations

import sqlite3
import time

from .dialects import Dialect, Result, ResultSet, Status, status_text


class StatementTimeout(sqlite3.OperationalError):
    """The statement ran longer than CELLGATE_STATEMENT_TIMEOUT."""


class SQLiteDialect(Dialect):
    name = "sqlite"
    _deadline: float | None = None
    _timed_out = False

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.target.database or ":memory:", isolation_level=None, check_same_thread=False)
        if self.settings.statement_timeout:
            conn.set_progress_handler(self._progress, 10_000)
        return conn

    def _progress(self) -> int:
        if self._deadline is not None and time.monotonic() > self._deadline:
            self._timed_out = True
            return 1
        return 0

    def execute(self, conn: sqlite3.Connection, statement: str) -> Result:
        timeout = self.settings.statement_timeout
        self._deadline = time.monotonic() + timeout if timeout else None
        self._timed_out = False
        cur = conn.cursor()
        try:
            cur.execute(statement)
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
            conn.total_changes
        except sqlite3.ProgrammingError:
            return False
        return True

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, StatementTimeout)


DIALECT = SQLiteDialect
