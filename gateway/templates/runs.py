"""Running a template: one task (kind ``script``, or ``notebook``), its code the template rendered with the run's values.

Everything is checked before a task exists: the caller may run the template (else 404, as for
one that does not exist), the template runs on that target (403 naming where it runs), the caller
may submit there (the target's own rule: the task is ``denied`` and audited otherwise, as any
script), every value passes its declaration (400 naming the field), and the rendered code places
every value as data (400). The task records the template's name, path, the commit it was rendered
from and the values (``Task.template``; in the audit with the code), and then goes the way of every
script: policy and risk read the rendered code, reviewers see it with the values, the agent runs it.

Kinds that run today: ``sql`` templates on SQL targets, ``python`` templates on Python targets,
notebooks on targets of their kernel's language, shell scripts on Python targets (``shell.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..access import template_allows_target
from ..auth import Identity
from ..errors import BadRequest, Forbidden, NotFound
from ..idempotency import Idempotency
from ..models import Target, Task
from ..notebooks.document import NotebookError
from ..scripts import Scripts
from ..store import Store
from .catalog import Template, parse
from .declare import TemplateError, ValueRefused, check_values
from .library import TemplateLibrary
from .render import render_notebook, render_python, render_shell, render_sql

#: template kind → the target kind it runs on (a notebook: its kernel's language)
RUNS_ON = {"sql": "sql", "python": "python", "shell": "python"}  # a shell script runs in a Python target's kernel
RENDER = {"sql": render_sql, "python": lambda t, values, _dialect: render_python(t, values), "notebook": render_notebook,
          "shell": render_shell}


class TemplateValueRefused(BadRequest):
    """A value that fails its declaration: the message names the field; ``field`` is in the JSON."""

    def __init__(self, refused: ValueRefused) -> None:
        super().__init__(str(refused))
        self.field = refused.field


def target_kind(template: Template, shown: str | None = None) -> str:
    """The kind of target ``template`` runs on (``sql``, ``python``); 400 saying why when it runs on none."""
    shown = shown or template.name
    runs_on = RUNS_ON.get(template.kind) or (template.language if template.kind == "notebook" else None)
    if template.kind == "notebook" and not runs_on:
        raise BadRequest(f"notebook {shown} names no kernel language (metadata.kernelspec.language: python or sql), "
                         "so it runs on no target")
    if runs_on is None:
        raise BadRequest(f"template {shown} is a {template.kind} template, which runs nowhere "
                         "(sql, python, shell and notebook templates run)")
    return runs_on


@dataclass(frozen=True)
class Prepared:
    """A template rendered for a run, before any task: what the task will hold."""

    target: str
    kind: str                 # the task's: script | notebook
    code: str
    record: dict[str, Any]    # Task.template: name, path, commit, parameters


async def prepare_run(library: TemplateLibrary, store: Store, ident: Identity, name: str, target_name: str,
                      values: Mapping[str, Any]) -> Prepared:
    """Every check of a template run, and the rendering; raises as :func:`run_template` does."""
    template = library.get(ident, name)
    target = await _target(store, target_name)
    if not template_allows_target(template.targets, template.target_kinds, target):
        where = ", ".join([*template.targets, *(f"any {k} target" for k in template.target_kinds)]) or "no target"
        raise Forbidden(f"template {name} runs on {where}, not on {target_name}")
    commit = library.catalog.commit if library.catalog else ""
    return await _render(template, target, values, {"name": template.name, "path": template.path, "commit": commit})


async def run_template(library: TemplateLibrary, scripts: Scripts, store: Store, ident: Identity, name: str,
                       target_name: str, values: Mapping[str, Any], why: str, idem: Idempotency | None = None) -> Task:
    prepared = await prepare_run(library, store, ident, name, target_name, values)
    return await _submit(scripts, ident, prepared, why, idem)


async def run_notebook_file(scripts: Scripts, store: Store, ident: Identity, filename: str, text: str,
                            target_name: str, values: Mapping[str, Any], why: str, idem: Idempotency | None = None) -> Task:
    """``cellgate run -f report.ipynb -p day=…``: a notebook of the caller's own, run as one task
    with its parameters checked and injected as a template's are; who may run it where is the
    target's rule, as for any script. The task records the file's name, and no commit."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1] or "notebook.ipynb"
    try:
        template = parse(name if name.endswith(".ipynb") else f"{name}.ipynb", text.encode("utf-8", "surrogatepass"))
    except TemplateError as exc:
        raise BadRequest(f"{name} cannot be run: {exc}") from None
    target = await _target(store, target_name)
    prepared = await _render(template, target, values, {"name": None, "path": name, "commit": None})
    return await _submit(scripts, ident, prepared, why, idem)


async def _target(store: Store, name: str) -> Target:
    target: Target | None = await store.run(lambda s: s.get(Target, name))
    if target is None:
        raise NotFound(f"target {name!r} not found")
    return target


async def _submit(scripts: Scripts, ident: Identity, prepared: Prepared, why: str, idem: Idempotency | None = None) -> Task:
    return await scripts.submit(ident, prepared.target, prepared.code, why, template=prepared.record, kind=prepared.kind,
                                idem=idem)


async def _render(template: Template, target: Target, values: Mapping[str, Any], record: dict[str, Any]) -> Prepared:
    shown = template.name if record["name"] else template.path
    runs_on = target_kind(template, shown)
    if (target.kind or "") != runs_on:
        what = f"a {template.language or 'kernel-less'} notebook" if template.kind == "notebook" else template.kind
        raise BadRequest(f"template {shown} is {what} and target {target.name} is {target.kind or 'of unknown kind'}")
    try:
        checked = check_values(template.params, values)
    except ValueRefused as exc:
        raise TemplateValueRefused(exc) from None
    try:
        # the dialect's scanner and Python's tokenizer read up to a 1 MiB template: off the event loop
        rendered = await asyncio.to_thread(RENDER[template.kind], template, checked, target.dialect)
    except (TemplateError, NotebookError) as exc:
        raise BadRequest(f"template {shown} cannot be run: {exc}") from None
    record["parameters"] = rendered.parameters or [{"name": k, "type": template.params[k].type, "value": v}
                                                   for k, v in _json(checked).items()]
    return Prepared(target=target.name, kind="notebook" if template.kind == "notebook" else "script",
                    code=rendered.code, record=record)


def _json(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in values.items()}
