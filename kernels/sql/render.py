"""Turn results into Jupyter outputs: ``text/plain``, ``text/html`` and Table Schema JSON.

Every value is made JSON-safe first (dates, decimals, UUIDs and bytes become strings), so the
three representations always agree and any frontend can read the bundle.
"""

from __future__ import annotations

import datetime as dt
import decimal
import html
import json
import math
import uuid
from typing import Any

from .dialects import ResultSet

MIMETYPE_TABLE = "application/vnd.dataresource+json"
MAX_TEXT_WIDTH = 80  # characters per cell in the text/plain table


def json_value(value: Any) -> Any:
    """A JSON-safe form of a database value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return "\\x" + raw[:1024].hex() + ("…" if len(raw) > 1024 else "")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (dict, list)):
        try:
            json.dumps(value)
            return value
        except (TypeError, ValueError):
            return str(value)
    return str(value)


_TYPES: list[tuple[type | tuple[type, ...], str]] = [
    (bool, "boolean"),
    (int, "integer"),
    ((float, decimal.Decimal), "number"),
    (dt.datetime, "datetime"),
    (dt.date, "date"),
    (dt.time, "time"),
    (dt.timedelta, "duration"),
    (dict, "object"),
    (list, "array"),
]


def field_type(values: list[Any]) -> str:
    """The Table Schema type of a column, from its first non-null value."""
    sample = next((v for v in values if v is not None), None)
    if sample is None:
        return "any"
    for kind, name in _TYPES:
        if isinstance(sample, kind):
            return name
    return "string"


def text_value(value: Any) -> str:
    if value is None:
        return "NULL"
    value = json_value(value)
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= MAX_TEXT_WIDTH else text[: MAX_TEXT_WIDTH - 1] + "…"


def footer(result: ResultSet) -> str:
    shown = len(result.rows)
    noun = "row" if shown == 1 else "rows"
    if not result.truncated:
        return f"({shown} {noun})"
    if result.more is not None:
        return f"({shown} {noun} shown; {result.more} more rows not shown)"
    return f"({shown} {noun} shown; more rows not shown (limit {shown}))"


def unique_names(columns: list[str]) -> list[str]:
    """Column names made unique (``?column?``, ``?column?_2``) so JSON rows keep every value."""
    seen: dict[str, int] = {}
    names = []
    for name in columns:
        name = name or "?column?"
        count = seen.get(name, 0) + 1
        seen[name] = count
        names.append(name if count == 1 else f"{name}_{count}")
    return names


def to_text(result: ResultSet) -> str:
    """An aligned table in the style of psql."""
    cells = [[text_value(v) for v in row] for row in result.rows]
    numeric = [field_type([r[i] for r in result.rows]) in {"integer", "number"} for i in range(len(result.columns))]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(result.columns)]
    header = " | ".join(c.center(w) for c, w in zip(result.columns, widths))
    rule = "-+-".join("-" * w for w in widths)
    lines = [header.rstrip(), rule]
    for row in cells:
        lines.append(" | ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(row, widths, numeric)).rstrip())
    lines.append(footer(result))
    return "\n".join(lines)


def to_html(result: ResultSet) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in result.columns)
    body = []
    for row in result.rows:
        tds = "".join(
            "<td><i>NULL</i></td>" if v is None else f"<td>{esc(text_value(v) if not isinstance(v, str) else v)}</td>"
            for v in row
        )
        body.append(f"<tr>{tds}</tr>")
    return (
        '<table class="cellgate-sql">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        f"<p>{esc(footer(result))}</p>"
    )


def to_table_schema(result: ResultSet) -> dict[str, Any]:
    names = unique_names(result.columns)
    fields = [{"name": n, "type": field_type([r[i] for r in result.rows])} for i, n in enumerate(names)]
    data = [{n: json_value(v) for n, v in zip(names, row)} for row in result.rows]
    return {"schema": {"fields": fields}, "data": data}


def bundle(result: ResultSet) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(data, metadata)`` for a ``display_data``/``execute_result`` message."""
    data = {"text/plain": to_text(result), "text/html": to_html(result), MIMETYPE_TABLE: to_table_schema(result)}
    metadata = {"cellgate": {"rows": len(result.rows), "truncated": result.truncated, "more_rows": result.more}}
    return data, metadata
