"""Parameters of a SQL notebook run cell by cell (JupyterLab, papermill, nbclient): bound, never pasted.

A SQL notebook's parameters cell is comment lines only, so it runs as a cell that does nothing::

    -- cellgate parameters
    -- day = "2024-05-01"
    -- limit = 10

(papermill writes one with ``-p``: ``cellgate.papermill_engine.SQLParameters``; each value is JSON,
ASCII-escaped, so no value can end its comment line). Once such a cell has run on a kernel, the
gate remembers the values for that kernel; a later cell's ``{{ name }}`` then becomes the marker
the SQL kernel binds the value to (``kernels/sql/params.py``), the values travelling with the task
(``Task.template``) as a template run's do: reviewers see the markers and the values, the driver
binds them, nothing is pasted into the SQL. A ``{{ name }}`` no parameters cell has set is refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..kernels.sql.params import PREFIX, marker
from .templates.catalog import PLACEHOLDER

HEADER = "-- cellgate parameters"
LINE = re.compile(r"^--\s*([A-Za-z_][A-Za-z0-9_]{0,62})\s*=\s*(.+?)\s*$")
#: JSON value type → the parameter type the SQL kernel binds it as
TYPES = {str: "text", bool: "boolean", int: "integer", float: "number"}


class ParametersRefused(ValueError):
    """A cell whose ``{{ name }}`` cannot be bound; the message says why and what to do."""


def parameters_cell(code: str) -> list[dict[str, Any]] | None:
    """The ``[{name, type, value}]`` a parameters cell sets, or None when ``code`` is not one."""
    lines = [line.strip() for line in code.strip().splitlines() if line.strip()]
    if not lines or lines[0].lower() != HEADER:
        return None
    found: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        m = LINE.match(line)
        if m is None:
            return None
        try:
            value = json.loads(m.group(2))
        except ValueError:
            return None
        kind = "text" if value is None else TYPES.get(type(value))
        if kind is None:  # a list or an object: not a value a driver binds
            return None
        found[m.group(1)] = {"name": m.group(1), "type": kind, "value": value}
    return list(found.values())


def bind_placeholders(code: str, known: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, Any]]] | None:
    """``code`` with each ``{{ name }}`` as its marker and the values it uses; None without placeholders."""
    names = [m.group(1).strip() for m in PLACEHOLDER.finditer(code)]
    if not names:
        return None
    if PREFIX in code:
        raise ParametersRefused(f"this cell may not contain {PREFIX!r} (cellgate's marker for values)")
    unknown = sorted({n for n in names if n not in known})
    if unknown:
        raise ParametersRefused(
            f"{{{{ {unknown[0]} }}}} has no value on this kernel: run the notebook's parameters cell first "
            f"(a cell of comment lines `{HEADER}` then `-- {unknown[0]} = <JSON value>`; papermill -p writes one)")
    rendered = PLACEHOLDER.sub(lambda m: marker(m.group(1).strip()), code)
    return rendered, [known[n] for n in dict.fromkeys(names)]
