"""Template parameters and headers (gateway/templates/declare.py, catalog.py): pure logic."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import nbformat
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellgate.gateway.templates.catalog import parse
from cellgate.gateway.templates.declare import Param, TemplateError, ValueRefused, check_value, check_values, declare

SQL = """-- ---
-- description: Close a refund that was paid twice
-- groups: [support]
-- targets: [payments]
-- parameters:
--   refund_id: {type: integer, required: true, help: the refund's id}
--   day: {type: date, default: 2024-05-01}
--   reason: {type: select, options: [duplicate, fraud], default: duplicate}
--   note: {type: text, pattern: "[a-z ]*", help: lower case}
--   ratio: {type: number, default: 0.5}
--   dry_run: {type: boolean, default: true}
-- ---
UPDATE refunds SET reason = {{ reason }}, note = {{note}} WHERE id = {{ refund_id }} AND day = {{ day }};
"""


def test_a_sql_template_declares_who_where_and_typed_parameters() -> None:
    t = parse("fixes/refund.sql", SQL.encode())
    assert (t.name, t.kind, t.description, t.groups, t.targets, t.target_kinds) == \
        ("fixes/refund", "sql", "Close a refund that was paid twice", ("support",), ("payments",), ())
    assert [(p.name, p.type, p.default, p.required) for p in t.params.values()] == [
        ("refund_id", "integer", None, True), ("day", "date", dt.date(2024, 5, 1), False),
        ("reason", "select", "duplicate", False), ("note", "text", None, False), ("ratio", "number", 0.5, False),
        ("dry_run", "boolean", True, False)]
    assert t.body.startswith("UPDATE refunds") and "-- ---" not in t.body
    assert json.loads(json.dumps(t.as_json()))["parameters"][1] == {"name": "day", "type": "date", "required": False,
                                                                   "help": "", "default": "2024-05-01"}


def test_values_are_typed_defaults_filled_and_optional_ones_none() -> None:
    t = parse("r.sql", SQL.encode())
    assert check_values(t.params, {"refund_id": " 12 ", "reason": "fraud", "dry_run": "no", "ratio": "1e2"}) == {
        "refund_id": 12, "day": dt.date(2024, 5, 1), "reason": "fraud", "note": None, "ratio": 100.0, "dry_run": False}
    assert check_values(t.params, {"refund_id": 7, "day": "2024-02-29", "ratio": 3, "dry_run": True})["day"] == dt.date(2024, 2, 29)


@pytest.mark.parametrize(("values", "field", "reason"), [
    ({}, "refund_id", "is required (the refund's id)"),
    ({"refund_id": "12.0"}, "refund_id", "must be a whole number such as 42, not '12.0'"),
    ({"refund_id": "0x10"}, "refund_id", "must be a whole number"),
    ({"refund_id": True}, "refund_id", "must be a whole number"),
    ({"refund_id": "1" * 19}, "refund_id", "must be a whole number"),
    ({"refund_id": 1, "day": "2024-02-30"}, "day", "must be a date as YYYY-MM-DD, not '2024-02-30'"),
    ({"refund_id": 1, "day": "20240501"}, "day", "must be a date as YYYY-MM-DD"),
    ({"refund_id": 1, "reason": "Fraud"}, "reason", "must be one of duplicate, fraud, not 'Fraud'"),
    ({"refund_id": 1, "note": "DROP TABLE"}, "note", "must match [a-z ]*"),
    ({"refund_id": 1, "note": "ok\x00"}, "note", "contains a NUL character"),
    ({"refund_id": 1, "note": 5}, "note", "must be text, not int"),
    ({"refund_id": 1, "ratio": "nan"}, "ratio", "must be a number"),
    ({"refund_id": 1, "ratio": float("inf")}, "ratio", "must be a finite number"),
    ({"refund_id": 1, "dry_run": "maybe"}, "dry_run", "must be true or false, not 'maybe'"),
    ({"refund_id": 1, "extra": "x"}, "extra", "the template has no such parameter (it has: refund_id, day, reason, note, ratio, dry_run)"),
    ({"refund_id": 1, "note": "a" * 10_001}, "note", "longer than 10000 characters"),
])
def test_a_value_that_fails_its_declaration_is_refused_naming_the_field(values: dict[str, Any], field: str, reason: str) -> None:
    t = parse("r.sql", SQL.encode())
    with pytest.raises(ValueRefused) as info:
        check_values(t.params, values)
    assert info.value.field == field and info.value.reason.startswith(reason), info.value


@given(st.text(max_size=200))
def test_any_text_is_kept_verbatim_by_a_text_parameter(value: str) -> None:
    param = declare("v", {"type": "text"})
    if "\x00" in value:
        with pytest.raises(ValueRefused):
            check_value(param, value)
    else:
        assert check_value(param, value) == value


@given(st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1))
def test_integers_round_trip_as_text_and_as_json(n: int) -> None:
    param = declare("n", {"type": "integer"})
    assert check_value(param, str(n)) == n == check_value(param, n)


@pytest.mark.parametrize(("spec", "said"), [
    ({"type": "money"}, "type must be one of text, integer, number, boolean, date, select, not 'money'"),
    ({"type": "select"}, "a select lists its options"),
    ({"type": "text", "options": ["a"]}, "options are for type select only"),
    ({"type": "integer", "pattern": "[0-9]+"}, "pattern is for type text only"),
    ({"pattern": "("}, "pattern is not a regular expression"),
    ({"type": "integer", "default": "ten"}, "its default fails its own declaration: must be a whole number"),
    ({"type": "select", "options": ["a", "b"], "default": "c"}, "its default fails its own declaration: must be one of a, b"),
    ({"required": "yes"}, "required must be true or false"),
    ({"typ": "text"}, "unknown key 'typ'"),
    ("integer", "declare it as a mapping"),
])
def test_a_wrong_declaration_is_a_template_error_naming_the_parameter(spec: Any, said: str) -> None:
    with pytest.raises(TemplateError, match="^parameter x: " + said.replace("(", r"\(").replace("[", r"\[")):
        declare("x", spec)


def _sql(header: str, body: str = "SELECT 1;\n") -> bytes:
    return ("".join(f"-- {line}\n" if line else "--\n" for line in ["---", *header.splitlines(), "---"]) + body).encode()


@pytest.mark.parametrize(("data", "said"), [
    (b"SELECT 1;\n", "it must open with a header between two '-- ---' lines"),
    (b"-- ---\n-- groups: [a]\nSELECT 1;\n", "line 3: the header is comment lines"),
    (b"-- ---\n-- groups: [a]\n", "the header has no closing '-- ---' line"),
    (_sql("groups: [a"), "the header is not valid YAML"),
    (_sql("- a\n- b"), "the header must be keys and values"),
    (_sql("owner: me"), "unknown key 'owner'"),
    (_sql("groups: 5"), "groups must be a list of names"),
    (_sql("parameters: {a: {type: text}}", "SELECT {{ b }};"), "{{ b }} is used but not declared under parameters"),
    (_sql("parameters: {a: {type: text}}", "SELECT {{ a | upper }};"), "only {{ name }} of a declared parameter"),
    (_sql("parameters: {a: {type: text}}", "SELECT {{ a.__class__ }};"), "only {{ name }} of a declared parameter"),
    (_sql("", "SELECT '{{';"), "a '{{' without its closing '}}'"),
    (b"\xff\xfe", "not UTF-8 text"),
])
def test_a_template_that_cannot_be_offered_says_what_to_fix(data: bytes, said: str) -> None:
    with pytest.raises(TemplateError) as info:
        parse("t.sql", data)
    assert str(info.value).startswith("t.sql: ") and said in str(info.value), info.value


def test_scripts_take_a_shebang_then_a_hash_header() -> None:
    sh = parse("ops/rotate.sh", b"#!/bin/sh\n# ---\n# targets: [box]\n# parameters:\n#   host: {type: text}\n# ---\necho \"$1\"\n")
    assert (sh.kind, sh.targets, list(sh.params), sh.body) == ("shell", ("box",), ["host"], "#!/bin/sh\necho \"$1\"\n")
    py = parse("check.py", b"# ---\n# kinds: [python]\n# ---\nprint(1)\n")
    assert (py.kind, py.target_kinds, py.groups, py.params) == ("python", ("python",), (), {})


def _notebook(source: str, meta: dict[str, Any] | None = None, language: str = "python") -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3" if language == "python" else "cellgate-sql", "language": language,
                                 "display_name": language}
    if meta is not None:
        nb.metadata["cellgate"] = meta
    nb.cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
    nb.cells.append(nbformat.v4.new_code_cell("print(day, limit)"))
    return nbformat.writes(nb).encode()


def test_a_notebooks_parameters_come_from_its_parameters_cell_refined_by_its_metadata() -> None:
    data = _notebook("day = '2024-05-01'  # the day to report\nlimit: int = 10\nratio = 0.5\nverbose = False\n"
                     "region = 'eu'\nstarted = date.today()\n",
                     {"groups": ["analysts"], "kinds": ["python"], "description": "Daily report",
                      "parameters": {"day": {"type": "date"}, "region": {"type": "select", "options": ["eu", "us"]}}})
    t = parse("reports/daily.ipynb", data)
    assert (t.kind, t.groups, t.target_kinds, t.description) == ("notebook", ("analysts",), ("python",), "Daily report")
    assert {n: (p.type, p.default, p.help) for n, p in t.params.items()} == {
        "day": ("date", dt.date(2024, 5, 1), "the day to report"), "limit": ("integer", 10, ""),
        "ratio": ("number", 0.5, ""), "verbose": ("boolean", False, ""), "region": ("select", "eu", ""),
        "started": ("text", None, "")}


def test_a_notebooks_metadata_may_not_declare_what_its_cell_does_not_set() -> None:
    with pytest.raises(TemplateError, match="declares ghost, which the parameters cell does not set"):
        parse("n.ipynb", _notebook("a = 1\n", {"parameters": {"ghost": {"type": "text"}}}))


def test_a_sql_notebook_declares_its_parameters_in_its_metadata() -> None:
    t = parse("q.ipynb", _notebook("-- parameters\n", {"targets": ["payments"], "parameters": {"n": {"type": "integer"}}},
                                   language="sql"))
    assert list(t.params) == ["n"] and t.params["n"] == Param(name="n", type="integer")


def test_a_broken_notebook_is_a_template_error() -> None:
    with pytest.raises(TemplateError, match=r"^n\.ipynb: not a notebook nbformat can read"):
        parse("n.ipynb", b"{not json")
