"""The store: engine, sessions, migrations.

SQLite (embedded default) or PostgreSQL (``postgresql+psycopg://``). The core is async; database
work runs in a thread pool (one thread for SQLite, which serialises its writers) through
:meth:`Store.run`, so the tornado loop is never blocked.

The store can fail: every call is bounded (``Timeouts.store_*``: PostgreSQL's ``statement_timeout``
and ``connect_timeout``, the pool's ``pool_timeout``, and :meth:`Store.run`'s own bound on the
whole call); a call the store does not answer in time, or cannot take (the connection refused or
reset), raises :class:`~.errors.StoreUnavailable`, which a request answers with 503. A call given
up on this way is abandoned: if it still reaches its commit later, it rolls back instead.
:meth:`Store.run_unbounded` waits as long as the store takes (for writes retried until they commit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from .errors import StoreUnavailable
from .timeouts import Timeouts

T = TypeVar("T")
MIGRATIONS = Path(__file__).parent / "migrations"


class StoreError(Exception):
    """The store is missing, unreachable or at the wrong schema version."""


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` as psycopg 3 URLs."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, timeouts: Timeouts | None = None) -> Engine:
    timeouts = timeouts or Timeouts()
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    connect_args = {"connect_timeout": max(2, round(timeouts.store_connect)),
                    "options": f"-c statement_timeout={round(timeouts.store_statement * 1000)}"}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, pool_timeout=timeouts.store_pool,
                         connect_args=connect_args)


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached or did not answer (worth a retry), not
    that the call itself was wrong: a refused, reset or timed-out connection, an exhausted pool, a
    statement cut by ``statement_timeout``, a busy SQLite file."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError))


class _Abandoned(Exception):
    """The caller gave up on this call (its bound passed): roll back, do not commit."""


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Apply every migration up to head (``cellgate upgrade-db``)."""
    command.upgrade(alembic_config(engine), "head")


def schema_state(engine: Engine) -> tuple[str | None, str]:
    """(current revision, head revision)."""
    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, head or ""


def known_revision(engine: Engine, revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config(engine)).get_revision(revision) is not None
    except CommandError:
        return False


class Store:
    """Owns the engine and the thread pool that every database call runs in."""

    def __init__(self, url: str, *, auto_upgrade_empty: bool = True, timeouts: Timeouts | None = None) -> None:
        self.url = normalise_url(url)
        self.timeouts = timeouts or Timeouts()
        self.engine = make_engine(self.url, self.timeouts)
        self.is_sqlite = self.url.startswith("sqlite")
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._pool = ThreadPoolExecutor(max_workers=1 if self.is_sqlite else 8, thread_name_prefix="store")
        if auto_upgrade_empty:
            try:
                self.ensure_schema()
            except BaseException:
                self.close()
                raise

    def ensure_schema(self) -> None:
        """Migrate an empty store; refuse a store at another revision with the fix in the message."""
        if not inspect(self.engine).get_table_names():
            upgrade(self.engine)
            return
        current, head = schema_state(self.engine)
        if current is not None and current != head and not known_revision(self.engine, current):
            raise StoreError(
                f"the store is at schema revision {current}, which this cellgate does not know "
                f"(it knows up to {head}): the store is newer than this cellgate; upgrade cellgate"
            )
        if current != head:
            raise StoreError(
                f"the store is at schema revision {current or 'none'} but this cellgate needs {head}: "
                "run `cellgate upgrade-db` (after a backup)"
            )

    def call(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a transaction, here and now (for threads and the CLI)."""
        with self.sessions.begin() as session:
            return fn(session)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(session, *args)`` in a transaction on the store's thread pool, within
        ``Timeouts.store_call`` seconds; raises :class:`StoreUnavailable` beyond it or when the
        store cannot be reached (the call is then abandoned: it never commits)."""
        return await self._submit(lambda session: fn(session, *args, **kwargs), self.timeouts.store_call)

    async def run_long(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """As :meth:`run`, within ``Timeouts.store_long_call``: a call that reads a whole table (its
        statements get that long too, ``SET LOCAL statement_timeout`` on PostgreSQL)."""
        bound = self.timeouts.store_long_call

        def work(session: Session) -> T:
            if not self.is_sqlite:
                session.execute(text(f"SET LOCAL statement_timeout = {round(bound * 1000)}"))
            return fn(session, *args, **kwargs)
        return await self._submit(work, bound)

    async def run_unbounded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """As :meth:`run`, but waits as long as the call takes (a stalled store: until it answers).
        For writes retried until they commit; an unreachable store still raises StoreUnavailable."""
        return await self._submit(lambda session: fn(session, *args, **kwargs), None)

    async def _submit(self, work: Callable[[Session], T], bound: float | None) -> T:
        abandoned = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._call_unless_abandoned, work, abandoned)
        try:
            return await (future if bound is None else asyncio.wait_for(future, bound))
        except TimeoutError:
            raise StoreUnavailable(
                f"the gateway's store did not answer within {bound:g} s; try again in a moment (a change you "
                "asked for may still be applied once the store answers: check before repeating it)") from None
        except sa_exc.SQLAlchemyError as exc:
            if not unreachable(exc):
                raise
            raise StoreUnavailable(
                "the gateway's store cannot be reached or refused the call for now "
                f"({type(getattr(exc, 'orig', None) or exc).__name__}); try again in a moment") from exc
        finally:
            abandoned.set()  # a call still queued or running is given up on: it rolls back

    def _call_unless_abandoned(self, work: Callable[[Session], T], abandoned: threading.Event) -> T:
        if abandoned.is_set():  # it waited in the pool's queue past its bound: never start it
            raise _Abandoned()
        with self.sessions.begin() as session:
            result = work(session)
            if abandoned.is_set():
                raise _Abandoned()  # rolls back: its caller answered 503 already
            return result

    def close(self, wait: bool = True) -> None:
        """Close the pool and the engine. ``wait=False`` (the gateway's stop): calls still queued are
        dropped and one blocked on a stalled store is left behind (it was abandoned already, and rolls
        back if the store ever answers), so that a stop during a stall still ends in time."""
        self._pool.shutdown(wait=wait, cancel_futures=not wait)
        self.engine.dispose()
