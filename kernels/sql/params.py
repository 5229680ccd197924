"""Template values in SQL: where they go (markers), and handing them to the driver as parameters.

A rendered SQL template holds one marker ``__cg_param_<name>__`` where its ``{{ name }}`` was: an
unquoted identifier to every dialect's scanner, so the gateway's splitter and risk analysis read
the statement as it will run, and the value never enters the text. The gateway checks with
:func:`marker_spans` that every marker is a whole token, not inside a string, a comment or a
quoted name; the kernel (gated) checks it again and runs the statement with the marker replaced
by a placeholder and the value passed beside it, bound by the server: psycopg ``%(name)s`` (so
the statement's own ``%`` is doubled; extended protocol), MariaDB/MySQL ``?`` in a server-side
prepared statement (``PREPARE``/``EXECUTE … USING``), sqlite3 ``:name``.

Values travel as ``{"name", "type", "value"}`` with the template's types (``date`` as
``YYYY-MM-DD``, which becomes a ``datetime.date``); :func:`values_from` checks them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

from ..registry import sqlglot_dialect
from .split import tokenizer

PREFIX = "__cg_param_"
MARKER = re.compile(r"__cg_param_([A-Za-z_][A-Za-z0-9_]{0,62})__")
TYPES = ("text", "integer", "number", "boolean", "date", "select")


class MarkerError(ValueError):
    """A marker where a value cannot be bound (inside a string, comment or quoted name)."""


def marker(name: str) -> str:
    return f"{PREFIX}{name}__"


def marker_spans(statement: str, dialect: str) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of each marker in ``statement``, end exclusive; ``MarkerError`` when a
    marker's text stands anywhere but as a whole unquoted identifier token."""
    reading = sqlglot_dialect(dialect.lower())
    if reading is None:
        raise MarkerError(f"cannot place template values in SQL of dialect {dialect!r}")
    spans = [(a, b, m) for a, b, m in _identifier_tokens(statement, reading) if MARKER.fullmatch(m)]
    texts = list(MARKER.finditer(statement))
    if len(texts) != len(spans) or any(t.start() != s[0] for t, s in zip(texts, spans)):
        raise MarkerError("a template value is placed inside a string, a comment or a quoted name, where it cannot "
                          "be bound as a parameter: put {{ name }} where a value goes (e.g. WHERE id = {{ id }}), "
                          "with no quotes around it")
    return [(a, b, MARKER.fullmatch(m).group(1)) for a, b, m in spans]  # type: ignore[union-attr]


def _identifier_tokens(statement: str, reading: str) -> list[tuple[int, int, str]]:
    if reading == "postgres":
        from pglast import parser

        try:
            tokens = parser.scan(statement)
        except Exception:  # noqa: BLE001 - pglast.parser.ParseError: the scanner cannot read it
            return []
        return [(t.start, t.end + 1, statement[t.start:t.end + 1]) for t in tokens if t.name == "IDENT"]
    try:
        tokens = tokenizer(reading)(dialect=Dialect.get_or_raise(reading)).tokenize(statement)
    except Exception:  # noqa: BLE001 - sqlglot's TokenError: the tokenizer cannot read it
        return []
    return [(t.start, t.end + 1, statement[t.start:t.end + 1]) for t in tokens if t.token_type == TokenType.VAR]


def values_from(raw: Any) -> dict[str, Any]:
    """The values of ``metadata.cellgate.parameters`` as Python values; ``ValueError`` saying what is wrong."""
    if not isinstance(raw, list):
        raise ValueError("metadata.cellgate.parameters must be a list of {name, type, value}")
    values: dict[str, Any] = {}
    for item in raw:
        if not isinstance(item, Mapping) or set(item) != {"name", "type", "value"}:
            raise ValueError("each of metadata.cellgate.parameters is {name, type, value}")
        name, kind, value = item["name"], item["type"], item["value"]
        if not isinstance(name, str) or not MARKER.fullmatch(marker(name)) or name in values:
            raise ValueError(f"metadata.cellgate.parameters: bad or repeated name {name!r}")
        if kind not in TYPES:
            raise ValueError(f"metadata.cellgate.parameters: {name} has unknown type {kind!r}")
        values[name] = _typed(name, kind, value)
    return values


def _typed(name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    ok = {"text": isinstance(value, str), "select": isinstance(value, str),
          "integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, int | float) and not isinstance(value, bool),
          "boolean": isinstance(value, bool), "date": isinstance(value, str)}[kind]
    if not ok:
        raise ValueError(f"metadata.cellgate.parameters: {name} is not a {kind}")
    if kind == "date":
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"metadata.cellgate.parameters: {name} is not a date YYYY-MM-DD") from None
    if kind == "text" and "\x00" in value:
        raise ValueError(f"metadata.cellgate.parameters: {name} contains a NUL character")
    return value


#: a statement's parameters as its driver takes them: by name (psycopg, sqlite3) or in order (MariaDB)
Params = dict[str, Any] | list[Any]


def for_driver(statement: str, dialect: str, values: Mapping[str, Any]) -> tuple[str, Params | None]:
    """The statement as the driver takes it, and its parameters (None when it has no marker: then
    the text goes to the driver raw, as every statement without a template value does).

    PostgreSQL: ``%(name)s`` (the statement's own ``%`` doubled), bound by the server. SQLite:
    ``:name``. MySQL/MariaDB: ``?`` and the values in order, for a server-side prepared statement
    (``PREPARE … FROM``, ``EXECUTE … USING``: PyMySQL itself only interpolates escaped literals).
    """
    if PREFIX not in statement:  # every cell passes here: no scan for the many without a template value
        return statement, None
    spans = marker_spans(statement, dialect)
    if not spans:
        return statement, None
    missing = sorted({name for _, _, name in spans} - set(values))
    if missing:
        raise MarkerError(f"no value for {{{{ {missing[0]} }}}}: the task carries no such parameter")
    reading = sqlglot_dialect(dialect.lower())
    pieces: list[str] = []
    at = 0
    for start, end, name in spans:
        text = statement[at:start]
        pieces.append(text.replace("%", "%%") if reading == "postgres" else text)
        pieces.append({"postgres": f"%({name})s", "mysql": "?"}.get(reading or "", f":{name}"))
        at = end
    tail = statement[at:]
    pieces.append(tail.replace("%", "%%") if reading == "postgres" else tail)
    if reading == "mysql":
        return "".join(pieces), [values[name] for _, _, name in spans]
    if reading == "sqlite":  # SQLite has no date type: a date is its ISO text (sqlite3's own adapter is deprecated)
        return "".join(pieces), {name: _iso(values[name]) for _, _, name in spans}
    return "".join(pieces), {name: values[name] for _, _, name in spans}


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value
