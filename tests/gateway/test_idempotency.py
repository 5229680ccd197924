"""Idempotent submission (gateway/idempotency.py): a key gives one task, per user; another request under it is refused."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from gateway_harness import Seed, ident, race, reviewed_target
from sqlalchemy import func, select

from cellgate.gateway import analysis, idempotency
from cellgate.gateway.app import Parts, assemble
from cellgate.gateway.errors import BadRequest, Unprocessable
from cellgate.gateway.models import Task
from cellgate.gateway.store import Store

ROUTE = "POST /api/v1/tasks"


@pytest.fixture
def service(store: Store, seed: Seed) -> Iterator[Parts]:
    reviewed_target(store)
    analyser = analysis.Analyser(processes=False)
    yield assemble(store, "http://gw.test", analyser=analyser)
    analyser.close()


def _submit(service: Parts, who: int, code: str, key: str | None) -> Task:
    idem = idempotency.from_request(key, ROUTE, {"target": "prod", "code": code}) if key else None
    return asyncio.run(service.flow.submit(ident(who), "prod", code, kind="script", idem=idem))


def _count(store: Store) -> int:
    return store.call(lambda s: s.execute(select(func.count()).select_from(Task)).scalar_one())


def test_a_repeat_with_the_same_key_returns_the_first_task(service: Parts, store: Store, seed: Seed) -> None:
    dev = seed.user("dev", ["dev"])
    first = _submit(service, dev, "UPDATE accounts SET x = 1 WHERE id = 2", "k-1")
    again = _submit(service, dev, "UPDATE accounts SET x = 1 WHERE id = 2", "k-1")
    assert (first.replayed, again.replayed) == (False, True)
    assert again.id == first.id and again.status == "pending_review"
    assert _count(store) == 1


def test_the_same_key_with_another_request_is_a_422_that_names_the_task(service: Parts, store: Store, seed: Seed) -> None:
    dev = seed.user("dev", ["dev"])
    first = _submit(service, dev, "SELECT 1", "k-2")
    with pytest.raises(Unprocessable, match=rf"used for another request \(task {first.id}\).*new key"):
        _submit(service, dev, "SELECT 2", "k-2")
    assert _count(store) == 1


def test_keys_are_per_user_and_optional(service: Parts, store: Store, seed: Seed) -> None:
    dev, other = seed.user("dev", ["dev"]), seed.user("other", ["dev"])
    assert _submit(service, dev, "SELECT 1", "shared").id != _submit(service, other, "SELECT 1", "shared").id
    assert _submit(service, dev, "SELECT 1", None).id != _submit(service, dev, "SELECT 1", None).id
    assert _count(store) == 4


def test_repeats_that_race_make_one_task(service: Parts, store: Store, seed: Seed) -> None:
    dev = seed.user("dev", ["dev"])
    results = race(4, lambda _: _submit(service, dev, "UPDATE accounts SET x = 1 WHERE id = 2", "k-race"))
    assert all(kind == "ok" for kind, _ in results), results
    assert len({task.id for _, task in results}) == 1
    assert sum(not task.replayed for _, task in results) == 1
    assert _count(store) == 1


@pytest.mark.parametrize("key", ["", "has space", "x" * 201, "é"])
def test_a_malformed_key_is_refused_with_what_is_allowed(key: str) -> None:
    with pytest.raises(BadRequest, match="printable ASCII"):
        idempotency.from_request(key, ROUTE, {})


def test_the_fingerprint_ignores_key_order() -> None:
    assert idempotency.fingerprint(ROUTE, {"a": 1, "b": 2}) == idempotency.fingerprint(ROUTE, {"b": 2, "a": 1})
    assert idempotency.fingerprint(ROUTE, {"a": 1}) != idempotency.fingerprint(ROUTE, {"a": 2})
