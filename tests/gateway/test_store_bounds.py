"""Every store call is bounded (gateway/store.py): a call the store does not answer in time, or
cannot take, raises StoreUnavailable (a request's 503) and is abandoned: it never commits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cellgate.gateway import auth
from cellgate.gateway.errors import StoreUnavailable
from cellgate.gateway.models import User
from cellgate.gateway.store import Store
from cellgate.gateway.timeouts import Timeouts


@pytest.fixture
def slow_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = Store(f"sqlite:///{tmp_path}/t.db", timeouts=Timeouts(store_call=0.3))
    yield store
    store.close()


def _names(store: Store) -> list[str]:
    return store.call(lambda s: list(s.execute(select(User.name)).scalars()))


def test_a_call_past_its_bound_answers_unavailable_and_never_commits(slow_store: Store) -> None:
    def slow_write(session: Session) -> None:
        auth.ensure_user(session, "late")
        session.flush()
        time.sleep(0.8)  # the store hangs past the bound

    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"the gateway's store did not answer within 0\.3 s; try again"):
            await slow_store.run(slow_write)
        assert time.monotonic() - t0 < 0.6  # answered at the bound, not when the store did
        await asyncio.sleep(1.0)  # the abandoned call reaches its end meanwhile
    asyncio.run(main())
    assert "late" not in _names(slow_store)  # rolled back, not committed behind the 503


def test_a_call_queued_past_its_bound_never_starts(slow_store: Store) -> None:
    started: list[str] = []

    async def main() -> None:
        first = asyncio.ensure_future(slow_store.run(lambda s: time.sleep(0.8)))
        await asyncio.sleep(0.05)  # it holds the store's one (SQLite) thread
        with pytest.raises(StoreUnavailable):
            await slow_store.run(lambda s: started.append("queued"))
        with pytest.raises(StoreUnavailable):
            await first
        await asyncio.sleep(1.0)
    asyncio.run(main())
    assert started == []


def test_run_unbounded_waits_as_long_as_the_store_takes(slow_store: Store) -> None:
    def slow_write(session: Session) -> None:
        auth.ensure_user(session, "patient")
        time.sleep(0.6)
    asyncio.run(slow_store.run_unbounded(slow_write))
    assert "patient" in _names(slow_store)


def test_an_unreachable_store_answers_unavailable(tmp_path: Path) -> None:
    import socket
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store(f"postgresql://postgres@127.0.0.1:{port}/nothing", auto_upgrade_empty=False)
    try:
        with pytest.raises(StoreUnavailable, match=r"cannot be reached .*\(OperationalError\); try again in a moment"):
            asyncio.run(store.run(lambda s: s.execute(select(1))))
    finally:
        store.close()


def test_an_error_of_the_call_itself_is_not_unavailable(slow_store: Store) -> None:
    def wrong(session: Session) -> None:
        raise ValueError("wrong")
    with pytest.raises(ValueError, match="wrong"):
        asyncio.run(slow_store.run(wrong))


@pytest.mark.postgres
def test_postgresql_connections_carry_the_statement_and_pool_timeouts() -> None:
    from databases import PG_URL
    from sqlalchemy import text

    store = Store(PG_URL, auto_upgrade_empty=False,
                  timeouts=Timeouts(store_statement=0.5, store_connect=3, store_pool=4, store_call=10))
    try:
        assert store.engine.pool.timeout() == 4
        shown = asyncio.run(store.run(lambda s: s.execute(text("SHOW statement_timeout")).scalar_one()))
        assert shown == "500ms"
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match=r"\(QueryCanceled\); try again"):
            asyncio.run(store.run(lambda s: s.execute(text("SELECT pg_sleep(5)"))))
        assert time.monotonic() - t0 < 3  # the server cut it at its statement_timeout
    finally:
        store.close()


@pytest.mark.postgres
def test_a_whole_table_read_gets_the_long_bound_for_its_statements_too() -> None:
    from databases import PG_URL
    from sqlalchemy import text

    store = Store(PG_URL, auto_upgrade_empty=False, timeouts=Timeouts(store_statement=0.5, store_long_call=20))
    try:
        shown = asyncio.run(store.run_long(lambda s: s.execute(text("SHOW statement_timeout")).scalar_one()))
        assert shown == "20s"
        asyncio.run(store.run_long(lambda s: s.execute(text("SELECT pg_sleep(1)"))))  # past the short one: not cut
        assert asyncio.run(store.run(lambda s: s.execute(text("SHOW statement_timeout")).scalar_one())) == "500ms"
    finally:
        store.close()
