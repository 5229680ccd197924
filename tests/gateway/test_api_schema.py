"""The API document describes every route, and no generated request gets a 5xx.

schemathesis reads ``/api/v1/openapi.json`` from a real gateway process on loopback (SQLite and
PostgreSQL stores) and sends, for every documented operation, a bounded number of requests built
from its declared parameters and body — valid ones and ones that break the declaration — with a
user token and with an admin token; the only check is ``not_a_server_error``. The gateway's log
must then hold no unhandled error.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from live_gateway import LiveGateway, live_gateway
from schemathesis.checks import not_a_server_error

from cellgate import __version__
from cellgate.gateway import openapi
from cellgate.gateway.app import routes
from cellgate.gateway.handlers.base import APIHandler

#: generated requests per operation, mode and token: the whole module stays well under a minute a store
EXAMPLES = 4
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    workdir = tmp_path_factory.mktemp(f"api-schema-{request.param}")
    db = f"sqlite:///{workdir}/gw.db" if request.param == "sqlite" else request.getfixturevalue("pg_database")
    with live_gateway(workdir, db) as gateway:
        yield gateway


def _protected(gw: LiveGateway, case: Any) -> bool:
    """Requests that would take the test's own identities away (revoke its tokens, deactivate its
    users): generated, then left out, so the rest of the run keeps its tokens."""
    params = case.path_parameters or {}
    if case.method.upper() == "DELETE" and case.path == "/api/v1/tokens/{token_id}":
        return bool(params.get("token_id") in gw.token_ids)
    if case.method.upper() == "DELETE" and case.path == "/api/v1/users/{name}":
        return bool(params.get("name") in ("admin", "user1"))
    return False


@pytest.mark.parametrize("who", ["user", "admin"])
def test_no_generated_request_gets_a_server_error(gw: LiveGateway, who: str) -> None:
    schema = schemathesis.openapi.from_url(f"{gw.url}/api/v1/openapi.json", timeout=10)
    token = gw.user_token if who == "user" else gw.admin_token
    headers = {"Authorization": f"token {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 60, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:
        for mode in MODES:
            if mode is schemathesis.GenerationMode.NEGATIVE and not (operation.query or operation.body
                                                                      or operation.path_parameters):
                continue  # nothing to break: a negative case cannot be generated

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                assume(not _protected(gw, case))
                response = case.call(base_url=gw.url, headers=headers, timeout=15)
                case.validate_response(response, checks=[not_a_server_error])

            try:
                run()
            except Exception as exc:  # noqa: BLE001 - every operation is tried; all failures are reported together
                failures.append(f"{operation.label} ({mode.value}, {who}): {str(exc)[:600]}")
    assert failures == [], "\n\n".join(failures)
    assert gw.unhandled() == [], "\n".join(gw.unhandled())
    gw.assert_alive()
    with httpx.Client(base_url=gw.url, headers=headers, timeout=10) as client:
        assert client.get("/api/v1/me").status_code == 200  # the token the run used still works


def test_every_route_is_in_the_document() -> None:
    doc = openapi.document(routes(), __version__)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for pattern, handler in routes():
        if pattern.endswith(".*"):
            continue
        path = openapi.path_template(pattern)[0]
        for method in handler.access:
            assert (path, method) in documented, f"{method} {pattern} ({handler.__name__}) is not in the API document"
    assert len(documented) == sum(len(h.access) for p, h in routes() if not p.endswith(".*"))


def test_every_handler_declares_what_it_reads() -> None:
    """A method that reads a JSON body declares its schema, one that reads query arguments declares
    them (reading an undeclared one is refused by ``Operation.argument``), and every declaration is
    for a method the handler has."""
    for _pattern, handler in routes():
        if not issubclass(handler, APIHandler):
            continue
        for method in handler.access:
            func = getattr(handler, method.lower(), None)
            if func is None:
                continue
            source = inspect.getsource(func)
            declared = handler.api.get(method)
            if "self.body()" in source:
                assert declared is not None and declared.body is not None, \
                    f"{handler.__name__}.{method.lower()} reads a JSON body: declare it in `api`"
            if "self.argument(" in source or "self.arg(" in source:
                assert declared is not None and declared.query, \
                    f"{handler.__name__}.{method.lower()} reads query arguments: declare them in `api`"
        assert set(handler.api) <= set(handler.access), f"{handler.__name__} declares `api` for a method it has not"


def test_path_parameters_come_from_the_route() -> None:
    doc = openapi.document(routes(), __version__)
    output = doc["paths"]["/api/v1/tasks/{task_id}/output"]["get"]
    by_name = {p["name"]: p for p in output["parameters"]}
    assert by_name["task_id"]["in"] == "path" and by_name["task_id"]["schema"]["type"] == "integer"
    assert by_name["after"]["in"] == "query" and by_name["wait"]["schema"] == {"type": "number", "minimum": 0.0}
    member = doc["paths"]["/api/v1/groups/{group}/members/{user}"]["put"]
    assert [p["name"] for p in member["parameters"]] == ["group", "user"]
    assert doc["paths"]["/api/v1/users"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]
    assert "security" not in doc["paths"]["/api/v1/login/token"]["post"]
