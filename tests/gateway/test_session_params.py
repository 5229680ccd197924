"""A SQL notebook's parameters cell and its bound placeholders (gateway/session_params.py), and papermill's
SQL translator that writes one (cellgate/papermill_sql.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellgate.gateway.session_params import ParametersRefused, bind_placeholders, parameters_cell
from cellgate.papermill_sql import SQLParameters

CELL = "-- cellgate parameters\n-- day = \"2024-05-01\"\n-- limit = 10\n-- rate = 0.5\n-- on = true\n-- none = null\n"


def test_a_parameters_cell_gives_typed_values() -> None:
    assert parameters_cell(CELL) == [{"name": "day", "type": "text", "value": "2024-05-01"},
                                     {"name": "limit", "type": "integer", "value": 10},
                                     {"name": "rate", "type": "number", "value": 0.5},
                                     {"name": "on", "type": "boolean", "value": True},
                                     {"name": "none", "type": "text", "value": None}]


@pytest.mark.parametrize("code", [
    "SELECT 1", "-- parameters\n-- x = 1", "-- cellgate parameters\nSELECT 1", "-- cellgate parameters\n-- x = [1]",
    "-- cellgate parameters\n-- x = {\"a\": 1}", "-- cellgate parameters\n-- x = nope", "-- cellgate parameters\n-- 1x = 1",
    "-- cellgate parameters\n-- x = 1\nDELETE FROM t",
])
def test_anything_else_is_not_a_parameters_cell(code: str) -> None:
    assert parameters_cell(code) is None


def test_placeholders_become_markers_bound_to_the_values_set() -> None:
    known = {p["name"]: p for p in parameters_cell(CELL) or []}
    code, used = bind_placeholders("SELECT * FROM t WHERE day = {{ day }} LIMIT {{limit}} -- {{ day }}", known) or ("", [])
    assert code == "SELECT * FROM t WHERE day = __cg_param_day__ LIMIT __cg_param_limit__ -- __cg_param_day__"
    assert [p["name"] for p in used] == ["day", "limit"]
    assert bind_placeholders("SELECT 1", known) is None
    with pytest.raises(ParametersRefused, match=r"\{\{ other \}\} has no value on this kernel"):
        bind_placeholders("SELECT {{ other }}", known)
    with pytest.raises(ParametersRefused, match="marker"):
        bind_placeholders("SELECT __cg_param_day__, {{ day }}", known)


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
                       st.one_of(st.text(), st.integers(), st.booleans(), st.none(),
                                 st.floats(allow_nan=False, allow_infinity=False)), max_size=5))
def test_papermills_sql_cell_holds_any_values_as_comment_lines_that_read_back_exactly(values: dict[str, object]) -> None:
    cell = SQLParameters.codify(values)
    assert all(line.startswith("--") for line in cell.splitlines())  # nothing in it is SQL
    assert {p["name"]: p["value"] for p in parameters_cell(cell) or []} == values
