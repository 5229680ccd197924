"""A template with a run's values, as the code a task runs: values stay data in every kind.

- SQL (``render_sql``): each ``{{ name }}`` becomes the marker ``__cg_param_<name>__`` and the
  values travel beside the code as parameters (``kernels/sql/params.py``), bound by the driver
  when the kernel runs the statement. Every marker must be a whole token for the target's dialect
  (not inside a string, comment or quoted name), checked here before any task exists.
- Python (``render_python``): each ``{{ name }}`` becomes the value's Python literal (``repr`` of
  a str, int, float, bool or None; a date as its ``'YYYY-MM-DD'`` text), only where Python's own
  tokenizer reads it as a whole name: a placeholder inside a string or comment is refused (a
  literal pasted into a string would end it, and the rest of the value would be code).

- Shell (``render_shell``): Python that runs the script with ``/bin/sh``, the values as
  environment variables and arguments, each ``{{ name }}`` a quoted expansion (``shell.py``).
- Notebooks (``render_notebook``): papermill's injected-parameters cell for Python (each value
  written by ``repr``); a SQL notebook's cells as SQL templates are, bound by the driver.

The rendered code is what policy, risk analysis and reviewers see, and what the approval binds.
"""

from __future__ import annotations

import datetime as dt
import io
import tokenize
from dataclasses import dataclass
from typing import Any

from ...kernels.sql.params import MARKER, PREFIX, MarkerError, marker, marker_spans
from ...kernels.sql.split import split_statements
from ..notebooks import document
from .catalog import PLACEHOLDER, Template
from .declare import TemplateError, Value
from .shell import shell_program, shell_with_expansions


@dataclass(frozen=True)
class Rendered:
    code: str
    #: SQL: ``[{name, type, value}]`` for ``metadata.cellgate.parameters``; Python: empty
    parameters: list[dict[str, Any]]


def render_sql(template: Template, values: dict[str, Value | None], dialect: str) -> Rendered:
    """``TemplateError`` when a value would not be bound (a marker inside a string or comment)."""
    code = sql_with_markers(template.body, template.path, dialect)
    return Rendered(code=code, parameters=bound(template, values, PLACEHOLDER.findall(template.body)))


def sql_with_markers(text: str, where: str, dialect: str) -> str:
    """SQL text with each ``{{ name }}`` as its marker, every marker checked to be a whole token."""
    if PREFIX in text:
        raise TemplateError(f"{where}: its text may not contain {PREFIX!r} (cellgate's marker for values)")
    code = PLACEHOLDER.sub(lambda m: marker(m.group(1).strip()), text)
    try:
        for statement in split_statements(code, dialect):
            marker_spans(statement, dialect)
    except MarkerError as exc:
        raise TemplateError(f"{where}: {exc}") from None
    return code


def bound(template: Template, values: dict[str, Value | None], placeholders: list[str]) -> list[dict[str, Any]]:
    """``[{name, type, value}]`` of the parameters the placeholders use, in declaration order."""
    used = {p.strip() for p in placeholders}
    return [{"name": name, "type": template.params[name].type, "value": _json(values.get(name))}
            for name in template.params if name in used]


def render_shell(template: Template, values: dict[str, Value | None], _dialect: str = "") -> Rendered:
    """Python that runs the script with ``/bin/sh``, each value an environment variable and an
    argument, each ``{{ name }}`` a quoted expansion of its variable (``shell.py``)."""
    script, _used = shell_with_expansions(template.body, template.path, PLACEHOLDER)
    return Rendered(code=shell_program(script, values, list(template.params)), parameters=[])


def render_notebook(template: Template, values: dict[str, Value | None], dialect: str) -> Rendered:
    """A notebook with the run's values: papermill's injected-parameters cell for Python (literals
    written by ``repr``); for SQL, every code cell with markers the driver binds (nothing pasted in)."""
    nb = document.load(template.body)
    if document.language(nb) == "sql":
        placeholders = []
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                placeholders += PLACEHOLDER.findall(cell.source)
                cell.source = sql_with_markers(cell.source, f"{template.path}, cell {i + 1}", dialect)
        nb.metadata["papermill"] = {"parameters": {k: _json(v) for k, v in values.items()}}
        return Rendered(code=document.canonical(nb), parameters=bound(template, values, placeholders))
    return Rendered(code=document.canonical(document.inject_python(nb, {k: _json(v) for k, v in values.items()})),
                    parameters=[])


def render_python(template: Template, values: dict[str, Value | None]) -> Rendered:
    """``TemplateError`` when a placeholder is not where an expression can stand."""
    if PREFIX in template.body:
        raise TemplateError(f"{template.path}: its text may not contain {PREFIX!r} (cellgate's marker for values)")
    code = PLACEHOLDER.sub(lambda m: marker(m.group(1).strip()), template.body)
    lines = io.StringIO(code).readlines()  # the lines as the tokenizer reads them (split at \n only)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    try:
        names = [t for t in tokenize.generate_tokens(io.StringIO(code).readline)
                 if t.type == tokenize.NAME and MARKER.fullmatch(t.string)]
    except (tokenize.TokenError, SyntaxError) as exc:
        raise TemplateError(f"{template.path}: Python's tokenizer cannot read it: {exc}") from None
    if len(names) != len(MARKER.findall(code)):
        raise TemplateError(f"{template.path}: a {{{{ name }}}} stands inside a string or a comment, where a value "
                            "cannot be placed as data: put it where an expression goes (x = {{ name }})")
    pieces, at = [], 0
    for tok in names:
        start = starts[tok.start[0] - 1] + tok.start[1]
        end = starts[tok.end[0] - 1] + tok.end[1]
        pieces += [code[at:start], repr(_json(values.get(MARKER.fullmatch(tok.string).group(1))))]  # type: ignore[union-attr]
        at = end
    pieces.append(code[at:])
    return Rendered(code="".join(pieces), parameters=[])


def _json(value: Value | None) -> str | int | float | bool | None:
    return value.isoformat() if isinstance(value, dt.date) else value
