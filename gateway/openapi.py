"""``/api/v1/openapi.json``: the API document, built from the routes and what each handler declares.

Paths come from the route patterns (named groups become path parameters; ids, ``inputs.ID_PARAMS``,
are 64-bit integers), methods and their roles from each handler's ``access``, query arguments and
JSON bodies from its ``api`` (``handlers/inputs.py: Operation``), the same declarations the handler
reads its arguments through. Nothing is written twice, so the document cannot drift from the code;
``tests/gateway/test_api_schema.py`` checks every route is in it and runs schemathesis against it.
"""

from __future__ import annotations

import re
from typing import Any

from .handlers.inputs import COLUMN_MAX, ID_PARAMS, Operation

_GROUP = re.compile(r"\(\?P<(\w+)>((?:[^()]|\([^()]*\))*)\)")


def path_template(pattern: str) -> tuple[str, dict[str, str]]:
    """``/api/v1/tasks/(?P<task_id>\\d+)/?`` → ``/api/v1/tasks/{task_id}`` and its groups' patterns."""
    groups = {m.group(1): m.group(2) for m in _GROUP.finditer(pattern)}
    path = _GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern)
    path = path.replace("(\\d+)", "{id}").replace("/?", "")
    if "(\\d+)" in pattern:
        groups["id"] = "\\d+"
    return path, groups


def path_parameter(name: str, regex: str) -> dict[str, Any]:
    if name in ID_PARAMS or regex == "\\d+":
        schema: dict[str, Any] = {"type": "integer", "format": "int32", "minimum": 0, "maximum": COLUMN_MAX}
    else:
        schema = {"type": "string", "pattern": f"^(?:{regex})$"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def operation(rule: str, declared: Operation | None, path_params: list[dict[str, Any]]) -> dict[str, Any]:
    declared = declared or Operation()
    out: dict[str, Any] = {"x-cellgate-access": rule, "responses": {
        "default": {"description": 'JSON; errors are {"status": N, "message": "..."}'}}}
    if declared.summary:
        out["summary"] = declared.summary
    params = [*path_params, *({"name": q.name, "in": "query", "required": False, "schema": q.schema(),
                               **({"description": q.help} if q.help else {})} for q in declared.query)]
    if params:
        out["parameters"] = params
    if declared.body is not None:
        out["requestBody"] = {"required": False, "content": {"application/json": {"schema": declared.body}}}
    if rule != "anonymous":
        out["security"] = [{"token": []}]
    return out


def document(routes: list[tuple[str, type]], version: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``routes`` (the catch-all 404 routes, without ``access``, left out)."""
    paths: dict[str, Any] = {}
    for pattern, handler in routes:
        access: dict[str, str] = getattr(handler, "access", {})
        if not access or pattern.endswith(".*"):
            continue
        path, groups = path_template(pattern)
        path_params = [path_parameter(name, regex) for name, regex in groups.items()]
        api: dict[str, Operation] = getattr(handler, "api", {})
        paths[path] = {m.lower(): operation(rule, api.get(m), path_params) for m, rule in access.items()}
    return {"openapi": "3.0.3", "info": {"title": "cellgate gateway", "version": version},
            "components": {"securitySchemes": {"token": {
                "type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`token cg_…` (or `Bearer cg_…`)"}}},
            "paths": paths}
