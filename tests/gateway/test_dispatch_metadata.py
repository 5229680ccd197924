"""Relay.bind_to_task tells the kernel what to run: ``metadata.cellgate``, the gateway's alone (kernel helper)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_harness import Seed, ident, reviewed_target

from cellgate.gateway import analysis, jmsg
from cellgate.gateway.app import Parts, assemble
from cellgate.gateway.store import Store
from cellgate.kernels.sql.split import split_statements


@pytest.fixture
def service(store: Store, seed: Seed) -> Iterator[Parts]:
    reviewed_target(store)
    reviewed_target(store, "py", kind="python", dialect="")
    analyser = analysis.Analyser(processes=False)
    yield assemble(store, "http://gw.test", analyser=analyser)
    analyser.close()


def _bound(service: Parts, who: int, target: str, code: str, client_meta: Any) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        task = await service.flow.submit(ident(who), target, code, kind="script")
        msg = jmsg.make("execute_request", {"code": code}, None, "shell")
        msg["metadata"] = client_meta
        await service.relay.bind_to_task(msg, task)
        return {"task": task, "meta": msg["metadata"]}
    return asyncio.run(run())


@pytest.mark.parametrize(("code", "mode"), [
    ("SELECT * FROM accounts; SELECT 2", "read-only"),
    ("SELECT * FROM accounts WHERE id = __cg_param_id__", "read-only"),  # a marker, and no template: no values
    ("UPDATE accounts SET x = 1 WHERE id = 2", "read-write"),
])
def test_statements_and_mode_replace_what_the_client_sent(service: Parts, seed: Seed, code: str, mode: str) -> None:
    dev = seed.user("dev", ["dev"])
    spoof = {"cellgate": {"task_id": 999, "statements": ["DROP TABLE accounts"], "mode": "read-write",
                          "parameters": [{"name": "id", "type": "text", "value": "1; DROP TABLE accounts"}]}, "other": 1}
    got = _bound(service, dev, "prod", code, spoof)
    assert got["meta"]["cellgate"] == {"task_id": got["task"].id, "statements": split_statements(code, "postgresql"),
                                       "mode": mode}
    assert got["meta"]["other"] == 1


def test_python_targets_get_no_statements(service: Parts, seed: Seed) -> None:
    dev = seed.user("dev", ["dev"])
    got = _bound(service, dev, "py", "print(1)", "not a dict")
    assert got["meta"] == {"cellgate": {"task_id": got["task"].id, "statements": [], "mode": "read-write"}}
