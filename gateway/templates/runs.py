"""Running a template: one task of kind ``script``, its code the template rendered with the run's values.

Everything is checked before a task exists: the caller may run the template (else 404, as for
one that does not exist), the template runs on that target (403 naming where it runs), the caller
may submit there (the target's own rule: the task is ``denied`` and audited otherwise, as any
script), every value passes its declaration (400 naming the field), and the rendered code places
every value as data (400). The task records the template's name, path, the commit it was rendered
from and the values (``Task.template``; in the audit with the code), and then goes the way of every
script: policy and risk read the rendered code, reviewers see it with the values, the agent runs it.

Kinds that run today: ``sql`` templates on SQL targets and ``python`` templates on Python
targets. Notebooks and shell scripts are listed but not yet runnable (400 says so).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..access import template_allows_target
from ..auth import Identity
from ..errors import BadRequest, Forbidden, NotFound
from ..models import Target, Task
from ..scripts import Scripts
from ..store import Store
from .declare import TemplateError, ValueRefused, check_values
from .library import TemplateLibrary
from .render import render_python, render_sql

#: template kind → the target kind it runs on
RUNS_ON = {"sql": "sql", "python": "python"}


class TemplateValueRefused(BadRequest):
    """A value that fails its declaration: the message names the field; ``field`` is in the JSON."""

    def __init__(self, refused: ValueRefused) -> None:
        super().__init__(str(refused))
        self.field = refused.field


async def run_template(library: TemplateLibrary, scripts: Scripts, store: Store, ident: Identity, name: str,
                       target_name: str, values: Mapping[str, Any], why: str) -> Task:
    template = library.get(ident, name)
    commit = library.catalog.commit if library.catalog else ""
    target = await store.run(lambda s: s.get(Target, target_name))
    if target is None:
        raise NotFound(f"target {target_name!r} not found")
    if not template_allows_target(template.targets, template.target_kinds, target):
        where = ", ".join([*template.targets, *(f"any {k} target" for k in template.target_kinds)]) or "no target"
        raise Forbidden(f"template {name} runs on {where}, not on {target_name}")
    if template.kind not in RUNS_ON:
        raise BadRequest(f"template {name} is a {template.kind} template; running those is not available yet "
                         "(sql and python templates run)")
    if (target.kind or "") != RUNS_ON[template.kind]:
        raise BadRequest(f"template {name} is {template.kind} and target {target_name} is {target.kind or 'of unknown kind'}")
    try:
        checked = check_values(template.params, values)
    except ValueRefused as exc:
        raise TemplateValueRefused(exc) from None
    try:
        # the dialect's scanner and Python's tokenizer read up to a 1 MiB template: off the event loop
        rendered = await asyncio.to_thread(
            lambda: render_sql(template, checked, target.dialect) if template.kind == "sql" else render_python(template, checked))
    except TemplateError as exc:
        raise BadRequest(f"template {name} cannot be run: {exc}") from None
    record = {"name": template.name, "path": template.path, "commit": commit,
              "parameters": rendered.parameters or [{"name": k, "type": template.params[k].type, "value": v}
                                                    for k, v in _json(checked).items()]}
    return await scripts.submit(ident, target_name, rendered.code, why, template=record)


def _json(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}
