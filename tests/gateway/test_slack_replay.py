"""Slack replay protection in the store (gateway/slack/verify.py): it survives restarts and replicas.

On SQLite and PostgreSQL: a signature accepted once is refused by a verifier built after a
"restart" (a new Store on the same database) and by a second verifier on the same store (a
replica); expired rows are purged by later inserts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import pytest
from sqlalchemy import func, select

from cellgate.gateway.errors import Unauthorized
from cellgate.gateway.models import SlackSeenRequest
from cellgate.gateway.slack import verify
from cellgate.gateway.slack.verify import WINDOW, RequestVerifier
from cellgate.gateway.store import Store

SECRET = "replay-test-secret"


def sign(body: str, timestamp: int) -> dict[str, str]:
    mac = hmac.new(SECRET.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": f"v0={mac}",
            "Content-Type": "application/x-www-form-urlencoded"}


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def rows(store: Store) -> int:
    return store.call(lambda s: s.execute(select(func.count()).select_from(SlackSeenRequest)).scalar_one())


def test_a_replay_is_refused_after_a_restart(store: Store) -> None:
    clock = Clock()
    body = "payload=%7B%22a%22%3A1%7D"
    headers = sign(body, int(clock.now))
    asyncio.run(RequestVerifier(SECRET, clock, store=store).verify(body.encode(), headers))
    stored = store.call(lambda s: s.execute(select(SlackSeenRequest)).scalars().one())
    assert stored.signature == hashlib.sha256(headers["X-Slack-Signature"].encode()).hexdigest()
    assert headers["X-Slack-Signature"] not in stored.signature  # the hash, never the signature itself
    # the gateway restarts: a new Store (new engine, new pool) on the same database, a new verifier
    again = Store(store.url)
    try:
        with pytest.raises(Unauthorized, match=r"already received \(a replay\)"):
            asyncio.run(RequestVerifier(SECRET, clock, store=again).verify(body.encode(), headers))
    finally:
        again.close()
    # a new request (new timestamp, new signature) is fine
    asyncio.run(RequestVerifier(SECRET, clock, store=store).verify(body.encode(), sign(body, int(clock.now) - 1)))
    assert rows(store) == 2


def test_a_replay_is_refused_by_another_replica(store: Store) -> None:
    clock = Clock()
    first, second = RequestVerifier(SECRET, clock, store=store), RequestVerifier(SECRET, clock, store=store)
    body = "text=help"
    headers = sign(body, int(clock.now))
    first.check(body.encode(), headers)
    with pytest.raises(Unauthorized, match="replay"):
        second.check(body.encode(), headers)
    with pytest.raises(Unauthorized, match="replay"):
        asyncio.run(first.verify(body.encode(), headers))
    # the refused replays left nothing behind and the store is still usable
    assert rows(store) == 1
    second.check(b"text=tasks", sign("text=tasks", int(clock.now)))
    assert rows(store) == 2


def test_expired_rows_are_purged_by_later_inserts(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify, "PURGE_EVERY", 1)
    clock = Clock()
    verifier = RequestVerifier(SECRET, clock, store=store)
    for i in range(3):
        verifier.check(f"n={i}".encode(), sign(f"n={i}", int(clock.now)))
    assert rows(store) == 3
    clock.now += WINDOW + 2  # those three are stale: the timestamp check refuses them anyway
    verifier.check(b"n=new", sign("n=new", int(clock.now)))
    assert rows(store) == 1
    # a stale replay is refused as stale, whether or not its row is still there
    with pytest.raises(Unauthorized, match="5 minutes"):
        verifier.check(b"n=0", sign("n=0", int(clock.now) - WINDOW - 2))


def test_forged_requests_never_reach_the_store(store: Store) -> None:
    clock = Clock()
    verifier = RequestVerifier(SECRET, clock, store=store)
    body = "text=help"
    forged = {**sign(body, int(clock.now)), "X-Slack-Signature": "v0=" + "0" * 64}
    with pytest.raises(Unauthorized, match="signature is invalid"):
        verifier.check(body.encode(), forged)
    assert rows(store) == 0
