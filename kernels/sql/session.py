"""One database connection per kernel, used from one worker thread, interruptible from any thread.

The kernel's main thread hands each statement to the worker and waits. An interrupt -- an
``interrupt_request`` on the control channel, or SIGINT arriving as ``KeyboardInterrupt`` in
the waiting main thread -- asks the dialect to cancel the statement *on the server*; the worker
then returns with the driver's "cancelled" error and the connection stays usable. If the
worker does not come back within :attr:`Session.grace` seconds, the connection is abandoned
and the next statement opens a new one.

A kernel has up to two sessions: the read-write one (the target URL) and, opened on the first
read-only cell, the read-only one (see :meth:`.target.Settings.for_readonly`). They share
nothing: a ``SET`` on one does not change the other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from .dialects import Dialect, Result, dialect_for
from .params import Params
from .target import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


class Interrupted(Exception):
    """The user interrupted the cell; the running statement was cancelled on the server."""


class Session:
    """The kernel's connection. Connects lazily; reconnects after the connection broke."""

    grace = 10.0  # seconds to wait for a cancelled statement to return

    def __init__(self, settings: Settings, dialect: Dialect | None = None) -> None:
        self.settings = settings
        self.dialect = dialect or dialect_for(settings)
        self._executor = self._new_executor()
        self._conn: Any = None
        self._ever_connected = False
        self._quiet = False  # the dialect closed the connection after a cell: reconnect without a banner
        self._lock = threading.Lock()
        self._running = False
        self._interrupted_at: float | None = None

    @staticmethod
    def _new_executor() -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="cellgate-sql")

    # -- called from the kernel's main thread ------------------------------------------------

    def begin_cell(self) -> None:
        """Forget interrupts that arrived before this cell started."""
        with self._lock:
            self._interrupted_at = None

    @property
    def interrupted(self) -> bool:
        return self._interrupted_at is not None

    def connect(self) -> str | None:
        """Connect if needed; return ``"connected"``/``"reconnected"`` when a new connection was made."""
        return self._call(self._ensure_connection)

    def execute(self, statement: str, params: Params | None = None) -> Result:
        """Run one statement (with a template's values as driver parameters, when given); raises
        the driver's error, or :class:`Interrupted`."""
        if self.interrupted:
            raise Interrupted("interrupted before the statement started")
        return self._call(self._execute, statement, params)

    def end_cell(self) -> None:
        """Tell the dialect the cell is over (a read-only session ends its transaction)."""
        if self.settings.readonly and self._conn is not None:
            try:
                self._call(self._end_cell)
            except Exception as exc:
                log.warning("ending the cell failed: %s", type(exc).__name__)

    def close(self) -> None:
        try:
            self._executor.submit(self._close_connection).result(timeout=5)
        except Exception:
            pass
        self._executor.shutdown(wait=False)

    # -- any thread ----------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Cancel the running statement on the server (if any) and stop the cell."""
        with self._lock:
            if self._interrupted_at is None:
                self._interrupted_at = time.monotonic()
            conn = self._conn if self._running else None
        if conn is not None:
            try:
                self.dialect.cancel(conn)
            except Exception as exc:  # the message may name the server, never the password
                log.warning("cancelling the statement failed: %s", type(exc).__name__)

    # -- worker thread ------------------------------------------------------------------------

    def _ensure_connection(self) -> str | None:
        if self._conn is not None and self.dialect.is_usable(self._conn):
            return None
        self._close_connection()
        self._conn = self.dialect.connect()
        event = None if self._quiet else "reconnected" if self._ever_connected else "connected"
        self._ever_connected, self._quiet = True, False
        return event

    def _execute(self, statement: str, params: Params | None) -> Result:
        with self._lock:
            if self._interrupted_at is not None:
                raise Interrupted("interrupted before the statement started")
            self._running = True
            conn = self._conn
        try:
            return self.dialect.execute(conn, statement, params)
        except BaseException:
            self._recover(conn)
            raise
        finally:
            with self._lock:
                self._running = False

    def _end_cell(self) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            self.dialect.end_cell(conn)
        except Exception:
            self._close_connection()  # never carry a half-ended transaction into the next cell
            raise
        if not self.dialect.is_usable(conn):  # closed on purpose: the next cell connects quietly
            self._conn = None
            self._quiet = True

    def _recover(self, conn: Any) -> None:
        try:
            if self.dialect.is_usable(conn):
                self.dialect.recover(conn)
        except Exception:
            pass
        if not self.dialect.is_usable(conn):
            self.dialect.close(conn)
            if self._conn is conn:
                self._conn = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            self.dialect.close(self._conn)
            self._conn = None

    # -- waiting --------------------------------------------------------------------------------

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        future: Future[T] = self._executor.submit(fn, *args)
        while True:
            try:
                return future.result(timeout=0.1)
            except TimeoutError:
                pass
            except KeyboardInterrupt:
                self.interrupt()
            started = self._interrupted_at
            if started is not None and time.monotonic() - started > self.grace:
                self._abandon()
                raise Interrupted(f"the statement did not stop within {self.grace:g} s; the connection was dropped")

    def _abandon(self) -> None:
        """Leave a stuck worker behind with its connection; the next statement reconnects."""
        stuck, self._executor = self._executor, self._new_executor()
        conn, self._conn = self._conn, None
        stuck.shutdown(wait=False)
        if conn is not None:
            threading.Thread(target=self.dialect.close, args=(conn,), daemon=True).start()
