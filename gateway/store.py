"""The store: engine, sessions, migrations.

SQLite (embedded default) or PostgreSQL (``postgresql+psycopg://``). The core is async; database
work runs in a thread pool (one thread for SQLite, which serialises its writers) through
:meth:`Store.run`, so the tornado loop is never blocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

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


def make_engine(url: str) -> Engine:
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
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


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

    def __init__(self, url: str, *, auto_upgrade_empty: bool = True) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
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
        """Run ``fn(session, *args)`` in a transaction on the store's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self.call, lambda session: fn(session, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()
