"""What a template file says about itself: kind, description, who may run it where, its parameters.

Kinds by file name: ``.ipynb`` (a papermill notebook), ``.sql``, ``.py``, ``.sh``. A text template
opens (after a ``#!`` line, for a script) with a header of comment lines between two ``---`` lines,
in YAML::

    -- ---
    -- description: Close a refund that was paid twice
    -- groups: [support]             # who may run it (an admin always may)
    -- targets: [payments]           # by name; or kinds: [sql]
    -- parameters:
    --   refund_id: {type: integer, required: true, help: the refund's id}
    --   reason: {type: select, options: [duplicate, fraud], default: duplicate}
    -- ---
    UPDATE refunds SET status = 'reversed', reason = {{ reason }} WHERE id = {{ refund_id }};

Every ``{{ name }}`` in the body must be declared, and nothing else may stand between ``{{`` and
``}}``: a value is data (bound, quoted or passed as an argument when rendered), never template
logic. A notebook keeps the same keys in its metadata under ``cellgate``; its parameters are the
``parameters`` cell's variables (``papermill.inspect_notebook``), typed from their defaults and
refined by ``cellgate.parameters``. A template naming no group and no target runs for admins
only, nowhere else: what is not said is not allowed.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from .declare import NAME, Param, TemplateError, declare

KINDS = {".ipynb": "notebook", ".sql": "sql", ".py": "python", ".sh": "shell"}
COMMENT = {"sql": "--", "python": "#", "shell": "#"}
HEADER_KEYS = ("description", "groups", "targets", "kinds", "parameters")
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
#: the largest template file read (a template is a script, not data)
MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class Template:
    name: str                     # its path in the repository, without the extension
    path: str
    kind: str                     # notebook | sql | python | shell
    description: str = ""
    groups: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    target_kinds: tuple[str, ...] = ()
    params: dict[str, Param] = field(default_factory=dict)
    body: str = ""                # a text template's code after the header; a notebook's JSON
    language: str = ""            # a notebook's kernel language (python, sql): the kind of target it runs on

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "kind": self.kind, "description": self.description,
                "groups": list(self.groups), "targets": list(self.targets), "target_kinds": list(self.target_kinds),
                "parameters": [p.as_json() for p in self.params.values()]}


def kind_of(path: str) -> str | None:
    """The template kind a file's name gives, or None (not a template)."""
    return next((kind for ext, kind in KINDS.items() if path.endswith(ext)), None)


def parse(path: str, data: bytes) -> Template:
    """The template in file ``path`` (its bytes); ``TemplateError`` saying what to fix."""
    kind = kind_of(path)
    if kind is None:
        raise TemplateError(f"{path}: not a template (templates end in {', '.join(KINDS)})")
    if len(data) > MAX_BYTES:
        raise TemplateError(f"{path}: larger than {MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"{path}: not UTF-8 text") from None
    name = path.rsplit(".", 1)[0]
    try:
        if kind == "notebook":
            return _notebook(name, path, text)
        return _text(name, path, kind, text)
    except TemplateError as exc:
        raise TemplateError(f"{path}: {exc}") from None


def _text(name: str, path: str, kind: str, text: str) -> Template:
    lines = text.splitlines(keepends=True)
    start = 1 if kind == "shell" and lines and lines[0].startswith("#!") else 0
    prefix = COMMENT[kind]
    if len(lines) <= start or lines[start].strip() != f"{prefix} ---":
        raise TemplateError(f"it must open with a header between two '{prefix} ---' lines (see docs/templates.md)")
    header: list[str] = []
    for end in range(start + 1, len(lines)):
        line = lines[end].rstrip("\r\n")
        if line.strip() == f"{prefix} ---":
            break
        if not line.startswith(prefix):
            raise TemplateError(f"line {end + 1}: the header is comment lines ('{prefix} ...') up to a '{prefix} ---' line")
        header.append(line[len(prefix):].removeprefix(" "))
    else:
        raise TemplateError(f"the header has no closing '{prefix} ---' line")
    meta = _yaml("\n".join(header))
    body = "".join(lines[:start] + lines[end + 1:])
    template = _template(name, path, kind, meta, body, _declared(meta.get("parameters")))
    _check_placeholders(body, template.params)
    return template


def _notebook(name: str, path: str, text: str) -> Template:
    import nbformat

    try:
        nb = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - nbformat raises many kinds for a bad file
        raise TemplateError(f"not a notebook nbformat can read: {exc}") from None
    meta = nb.metadata.get("cellgate", {})
    if not isinstance(meta, Mapping):
        raise TemplateError("metadata.cellgate must be a mapping")
    meta = json.loads(json.dumps(meta))  # nbformat's NotebookNode → plain data
    language = nb.metadata.get("kernelspec", {}).get("language") or nb.metadata.get("language_info", {}).get("name")
    refined = meta.get("parameters", {})
    if not isinstance(refined, Mapping):
        raise TemplateError("metadata.cellgate.parameters must map names to declarations")
    params: dict[str, Param] = {}
    if language == "python":
        for p in _inspect(text).values():
            spec = {"type": _python_type(p["inferred_type_name"], p["default"]), "default": _literal(p["default"]),
                    "help": p["help"]}
            spec = {k: v for k, v in spec.items() if v not in (None, "")}
            params[p["name"]] = declare(p["name"], {**spec, **refined.get(p["name"], {})})
        extra = sorted(set(refined) - set(params))
        if extra:
            raise TemplateError(f"metadata.cellgate.parameters declares {extra[0]}, which the parameters cell does not set")
    else:  # a SQL notebook: the parameters are declared in the metadata only
        params = _declared(refined)
    return replace(_template(name, path, "notebook", meta, text, params), language=str(language or ""))


def _inspect(text: str) -> dict[str, dict[str, Any]]:
    """papermill's reading of the parameters cell: name, inferred_type_name, default (source), help."""
    import tempfile

    from papermill import inspect_notebook

    with tempfile.NamedTemporaryFile("w", suffix=".ipynb", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        try:
            found: dict[str, dict[str, Any]] = inspect_notebook(f.name)
        except Exception as exc:  # noqa: BLE001 - papermill's inspection of the parameters cell
            raise TemplateError(f"its parameters cell cannot be read: {exc}") from None
    return found


def _template(name: str, path: str, kind: str, meta: Mapping[str, Any], body: str, params: dict[str, Param]) -> Template:
    unknown = sorted(set(meta) - set(HEADER_KEYS))
    if unknown:
        raise TemplateError(f"unknown key {unknown[0]!r} (known: {', '.join(HEADER_KEYS)})")
    description = meta.get("description", "")
    if not isinstance(description, str):
        raise TemplateError("description must be text")
    return Template(name=name, path=path, kind=kind, description=description.strip(), groups=_names(meta, "groups"),
                    targets=_names(meta, "targets"), target_kinds=_names(meta, "kinds"), params=params, body=body)


def _yaml(text: str) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise TemplateError(f"the header is not valid YAML: {exc}") from None
    if not isinstance(meta, dict):
        raise TemplateError("the header must be keys and values (description:, groups:, targets:, parameters:)")
    return meta


def _declared(specs: Any) -> dict[str, Param]:
    if specs is None:
        return {}
    if not isinstance(specs, Mapping):
        raise TemplateError("parameters must map each name to its declaration")
    return {str(name): declare(str(name), spec) for name, spec in specs.items()}


def _names(meta: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = meta.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise TemplateError(f"{key} must be a list of names, e.g. {key}: [a, b]")
    return tuple(v.strip() for v in value)


def _check_placeholders(body: str, params: Mapping[str, Param]) -> None:
    for match in PLACEHOLDER.finditer(body):
        name = match.group(1).strip()
        if not NAME.fullmatch(name):
            raise TemplateError(f"{match.group(0)!r}: only {{{{ name }}}} of a declared parameter may stand between "
                                "{{ and }} (no expressions or filters: values are data)")
        if name not in params:
            raise TemplateError(f"{{{{ {name} }}}} is used but not declared under parameters")
    if "{{" in PLACEHOLDER.sub("", body):
        raise TemplateError("a '{{' without its closing '}}'")


def _literal(source: str | None) -> Any:
    if source is None:
        return None
    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None  # computed in the notebook (e.g. date.today()): no default to offer
    return value if isinstance(value, str | int | float | bool) else None


def _python_type(annotation: str | None, default: str | None) -> str:
    by_name = {"int": "integer", "float": "number", "bool": "boolean", "str": "text"}
    if annotation in by_name:
        return by_name[annotation]
    value = _literal(default)
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "text"
