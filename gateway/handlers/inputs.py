"""What the gateway accepts from a request, checked once, before any handler logic or the store sees it.

Input the database or Python cannot take is refused here with 400, never passed on to fail as a
500 deeper down:

- **JSON bodies** (:func:`parse_json`): valid JSON, nested at most ``MAX_DEPTH`` deep (a
  100,000-deep array would exhaust the parser's recursion), no NUL character and no lone UTF-16
  surrogate in any string or key (PostgreSQL's text cannot hold NUL; a lone surrogate cannot be
  encoded as UTF-8 at all).
- **Path and query values** (:func:`check_text`, applied by ``APIHandler.decode_argument`` to every
  one of them): no NUL.
- **Numbers in paths and queries** (:class:`Query`, :func:`integer`, :func:`number`): integers in
  range, numbers finite. Ids and output sequence numbers are compared with the store's ``INTEGER``
  columns (32-bit on PostgreSQL, which refuses a larger parameter with an error), so they must fit
  ``COLUMN_MIN``..``COLUMN_MAX``; other integers a signed 64-bit one; ``limit`` is at least 0.
  Path groups that are ids (``ID_PARAMS``) are checked for every route that has them.

Each handler declares the query arguments it reads (``Operation.query``, next to the handler) and
reads them through that declaration (``APIHandler.argument``), so the checks and the API document
(``/api/v1/openapi.json``, ``gateway/openapi.py``) come from the same place.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from ..errors import BadRequest

#: deepest nesting of arrays and objects accepted in a JSON body (a notebook is about 6 deep)
MAX_DEPTH = 64
#: a signed 64-bit integer (PostgreSQL BIGINT, what SQLite's INTEGER holds)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: the store's ``INTEGER`` columns (``models.py``: every id, ``task_outputs.seq``): 32-bit on PostgreSQL.
#: Widen these with the columns (a migration to BIGINT), never past INT64.
COLUMN_MIN, COLUMN_MAX = -(2**31), 2**31 - 1
#: path groups that are database ids: 0..COLUMN_MAX
ID_PARAMS = frozenset({"task_id", "token_id"})

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None. (A valid surrogate pair in JSON decodes to one code
    point, so any surrogate left in a str is a lone one.)"""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    return "a NUL character" if found.group() == "\x00" else f"a lone UTF-16 surrogate (\\u{ord(found.group()):04x})"


def check_text(value: str, where: str) -> str:
    """``value`` unchanged, or 400 saying what in it cannot be accepted."""
    why = _unstorable(value)
    if why is not None:
        raise BadRequest(f"{where} contains {why}, which the gateway does not accept")
    return value


def parse_json(raw: bytes | str, what: str = "the request body") -> Any:
    """``raw`` parsed as JSON, or 400: not JSON, nested deeper than ``MAX_DEPTH``, or holding a string
    the store cannot take (:func:`check_text`)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest(f"{what} is nested too deep: at most {MAX_DEPTH} levels of arrays and objects") from None
    except ValueError as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    check_tree(data, what)
    return data


def check_tree(data: Any, what: str) -> None:
    """400 unless ``data`` (decoded JSON) is at most ``MAX_DEPTH`` deep and every string and key in it storable."""
    todo: list[tuple[Any, int, str]] = [(data, 0, "")]
    while todo:
        node, depth, path = todo.pop()
        if isinstance(node, str):
            check_text(node, f"{what} (at {path or 'the top'})")
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise BadRequest(f"{what} is nested too deep: at most {MAX_DEPTH} levels of arrays and objects")
        if isinstance(node, dict):
            for key, value in node.items():
                check_text(key, f"a key of {what} (at {path or 'the top'})")
                todo.append((value, depth + 1, f"{path}.{key}" if path else key))
        else:
            todo.extend((value, depth + 1, f"{path}[{i}]") for i, value in enumerate(node))


def integer(text: str, name: str, minimum: int = INT64_MIN, maximum: int = INT64_MAX) -> int:
    """``text`` as an integer within ``minimum``..``maximum``, or 400 naming ``name`` and the range."""
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest(f"{name} must be an integer, not {text[:40]!r}") from None
    if not minimum <= value <= maximum:
        raise BadRequest(f"{name} must be an integer from {minimum} to {maximum}, not {text[:40]}")
    return value


def number(text: str, name: str, minimum: float, maximum: float) -> float:
    """``text`` as a finite number within ``minimum``..``maximum``, or 400."""
    try:
        value = float(text.strip())
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {text[:40]!r}") from None
    if not (math.isfinite(value) and minimum <= value <= maximum):
        raise BadRequest(f"{name} must be a number from {minimum:g} to {maximum:g}, not {text[:40]}")
    return value


def path_id(text: str, name: str) -> int:
    """A path id (``ID_PARAMS``): what the route matched (digits), within the store's id column."""
    return integer(text, name, 0, COLUMN_MAX)


@dataclass(frozen=True)
class Query:
    """One query argument a handler reads: its type (``str``, ``int``, ``float``), range or choices,
    default, and what it means (the API document's description)."""

    name: str
    kind: type = str
    help: str = ""
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def parse(self, text: str | None) -> Any:
        if text is None or text == "":
            return self.default
        if self.kind is int:
            low = INT64_MIN if self.minimum is None else int(self.minimum)
            high = INT64_MAX if self.maximum is None else int(self.maximum)
            return integer(text, self.name, low, high)
        if self.kind is float:
            return number(text, self.name, -math.inf if self.minimum is None else self.minimum,
                          math.inf if self.maximum is None else self.maximum)
        if self.choices and text not in self.choices:
            raise BadRequest(f"{self.name} must be one of {', '.join(self.choices)}, not {text[:40]!r}")
        return text

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": {int: "integer", float: "number"}.get(self.kind, "string")}
        if self.kind is int:
            out["minimum"] = INT64_MIN if self.minimum is None else int(self.minimum)
            out["maximum"] = INT64_MAX if self.maximum is None else int(self.maximum)
        elif self.kind is float:
            out.update({k: v for k, v in (("minimum", self.minimum), ("maximum", self.maximum)) if v is not None})
        if self.choices:
            out["enum"] = list(self.choices)
        return out


@dataclass(frozen=True)
class Operation:
    """What one method of a handler takes besides its path: query arguments and a JSON body (a JSON
    Schema object; None: no body). Declared next to the handler, in its ``api`` mapping."""

    query: tuple[Query, ...] = ()
    body: dict[str, Any] | None = None
    summary: str = ""

    def argument(self, name: str) -> Query:
        for q in self.query:
            if q.name == name:
                return q
        raise LookupError(f"query argument {name!r} is read but not declared in the handler's `api`")


def obj(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema object with ``properties`` (more are allowed: handlers ignore unknown fields)."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


STRING: dict[str, Any] = {"type": "string"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
OBJECT: dict[str, Any] = {"type": "object"}
