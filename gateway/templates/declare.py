"""Template parameters: what a template declares (``Param``) and checking the values a run gives.

A declaration says a parameter's type (``text``, ``integer``, ``number``, ``boolean``, ``date``,
``select`` with ``options``), ``default``, ``required``, ``pattern`` (text: the whole value must
match) and ``help``. :func:`declare` checks one declaration as written in a template (a bad one is
a :class:`TemplateError` naming the parameter); :func:`check_values` turns the values of a run
(text from the CLI or Slack, JSON from REST) into typed values, or refuses the first bad one with
a :class:`ValueRefused` naming the field and the reason, before any task exists.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TYPES = ("text", "integer", "number", "boolean", "date", "select")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: the longest text value accepted (a parameter is a value, not a payload)
MAX_TEXT = 10_000
_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,3})?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
KEYS = ("type", "default", "required", "pattern", "options", "help")

Value = str | int | float | bool | dt.date


class TemplateError(ValueError):
    """A template that cannot be offered as written; the message names what to fix."""


class ValueRefused(ValueError):
    """A run's value that fails its declaration: ``field`` and ``reason`` say which and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"parameter {field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Param:
    name: str
    type: str = "text"
    default: Value | None = None
    required: bool = False
    pattern: str | None = None
    options: tuple[str, ...] = ()
    help: str = ""
    _regex: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required, "help": self.help}
        if self.default is not None:
            data["default"] = self.default.isoformat() if isinstance(self.default, dt.date) else self.default
        if self.pattern is not None:
            data["pattern"] = self.pattern
        if self.options:
            data["options"] = list(self.options)
        return data


def declare(name: str, spec: Mapping[str, Any]) -> Param:
    """One parameter as declared; ``TemplateError`` when the declaration itself is wrong."""
    where = f"parameter {name}"
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TemplateError(f"{where}: a name is letters, digits and _, not starting with a digit")
    if not isinstance(spec, Mapping):
        raise TemplateError(f"{where}: declare it as a mapping, e.g. {{type: integer, required: true}}")
    unknown = sorted(set(spec) - set(KEYS))
    if unknown:
        raise TemplateError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    kind = spec.get("type", "text")
    if kind not in TYPES:
        raise TemplateError(f"{where}: type must be one of {', '.join(TYPES)}, not {kind!r}")
    required = spec.get("required", False)
    if not isinstance(required, bool):
        raise TemplateError(f"{where}: required must be true or false")
    help_text = spec.get("help", "")
    if not isinstance(help_text, str):
        raise TemplateError(f"{where}: help must be text")
    options = spec.get("options", ())
    if kind == "select":
        if not isinstance(options, list | tuple) or not options or not all(isinstance(o, str | int) for o in options):
            raise TemplateError(f"{where}: a select lists its options, e.g. options: [open, closed]")
        options = tuple(str(o) for o in options)
    elif options:
        raise TemplateError(f"{where}: options are for type select only")
    pattern, regex = spec.get("pattern"), None
    if pattern is not None:
        if kind != "text" or not isinstance(pattern, str):
            raise TemplateError(f"{where}: pattern is for type text only, as a regular expression")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise TemplateError(f"{where}: pattern is not a regular expression: {exc}") from None
    param = Param(name=name, type=kind, required=required, pattern=pattern, options=options, help=help_text, _regex=regex)
    default = spec.get("default")
    if default is not None:
        if isinstance(default, dt.datetime) or (isinstance(default, dt.date) and kind != "date"):
            default = str(default)  # YAML reads 2024-05-01 as a date; it is text for any other type
        try:
            default = check_value(param, default.isoformat() if isinstance(default, dt.date) else default)
        except ValueRefused as exc:
            raise TemplateError(f"{where}: its default fails its own declaration: {exc.reason}") from None
        param = Param(name=name, type=kind, default=default, required=required, pattern=pattern, options=options,
                      help=help_text, _regex=regex)
    return param


def check_value(param: Param, value: Any) -> Value:
    """``value`` (text, or a JSON scalar) as ``param``'s type; ``ValueRefused`` when it is not one."""
    refuse = _refuser(param.name)
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise refuse(f"longer than {MAX_TEXT} characters")
    if param.type == "text":
        if not isinstance(value, str):
            raise refuse(f"must be text, not {type(value).__name__}")
        if "\x00" in value:
            raise refuse("contains a NUL character")
        if param._regex is not None and not param._regex.fullmatch(value):
            raise refuse(f"must match {param.pattern}")
        return value
    if param.type == "integer":
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**18:
            return value
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value.strip())
        raise refuse(f"must be a whole number such as 42, not {_show(value)}")
    if param.type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
            number = float(value.strip())
        else:
            raise refuse(f"must be a number such as 2.5, not {_show(value)}")
        if not math.isfinite(number):
            raise refuse("must be a finite number")
        return number
    if param.type == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise refuse(f"must be true or false, not {_show(value)}")
    if param.type == "date":
        if isinstance(value, str) and _DATE.fullmatch(value.strip()):
            try:
                return dt.date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise refuse(f"must be a date as YYYY-MM-DD, not {_show(value)}")
    # select
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    if text not in param.options:
        raise refuse(f"must be one of {', '.join(param.options)}, not {_show(value)}")
    return text


def check_values(params: Mapping[str, Param], values: Mapping[str, Any]) -> dict[str, Value | None]:
    """Every declared parameter's value for one run: given, else its default, else None (SQL NULL,
    Python None) when it is optional; ``ValueRefused`` for a value that fails, a required one
    missing, or a name the template does not declare."""
    for name in values:
        if name not in params:
            known = ", ".join(params) or "none"
            raise ValueRefused(str(name)[:64], f"the template has no such parameter (it has: {known})")
    checked: dict[str, Value | None] = {}
    for name, param in params.items():
        if name in values and values[name] is not None:
            checked[name] = check_value(param, values[name])
        elif param.default is not None:
            checked[name] = param.default
        elif param.required:
            raise ValueRefused(name, "is required" + (f" ({param.help})" if param.help else ""))
        else:
            checked[name] = None
    return checked


def _refuser(name: str) -> Any:
    return lambda reason: ValueRefused(name, reason)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def json_schema(params: Mapping[str, Param]) -> dict[str, Any]:
    """The parameters as a JSON Schema object (forms are built from it: REST, the web, Slack)."""
    kinds = {"text": "string", "integer": "integer", "number": "number", "boolean": "boolean", "date": "string",
             "select": "string"}
    properties: dict[str, Any] = {}
    for p in params.values():
        prop: dict[str, Any] = {"type": kinds[p.type], "title": p.name}
        if p.help:
            prop["description"] = p.help
        if p.type == "date":
            prop["format"] = "date"
        if p.type == "text":
            prop["maxLength"] = MAX_TEXT
        if p.pattern is not None:
            prop["pattern"] = f"^(?:{p.pattern})$"
        if p.options:
            prop["enum"] = list(p.options)
        if p.default is not None:
            prop["default"] = p.as_json()["default"]
        properties[p.name] = prop
    return {"type": "object", "properties": properties, "required": [p.name for p in params.values() if p.required],
            "additionalProperties": False}
