"""Rendering a template with a run's values (gateway/templates/render.py): values stay data."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellgate.gateway.templates.catalog import parse
from cellgate.gateway.templates.declare import TemplateError, check_values
from cellgate.gateway.templates.render import render_python, render_sql
from cellgate.kernels.sql.params import for_driver, values_from
from cellgate.kernels.sql.split import split_statements

SQL = b"""-- ---
-- targets: [payments]
-- parameters:
--   id: {type: integer, required: true}
--   note: {type: text}
--   day: {type: date, default: 2024-05-01}
-- ---
UPDATE refunds SET note = {{ note }} WHERE id = {{ id }} AND day >= {{day}};
SELECT count(*) FROM refunds WHERE note LIKE '50%';
"""

PY = b"""# ---
# kinds: [python]
# parameters:
#   name: {type: text}
#   n: {type: integer, default: 3}
#   when: {type: date, default: 2024-05-01}
#   ok: {type: boolean, default: false}
#   maybe: {type: number}
# ---
result = ({{ name }}, {{n}}, {{ when }}, {{ ok }}, {{ maybe }})
"""

HOSTILE = ["'; DROP TABLE t; --", '"); __import__("os").system("id"); ("', "\\", "a\nb", "{{ n }}", "__cg_param_n__",
           "🙂\u2028\x0c", "'''", '"""', "# not a comment", "\r\n"]


@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
def test_sql_values_travel_beside_the_code(dialect: str) -> None:
    t = parse("fix.sql", SQL)
    values = check_values(t.params, {"id": "7", "note": "x'); DROP TABLE refunds; --"})
    rendered = render_sql(t, values, dialect)
    assert "DROP" not in rendered.code and "__cg_param_note__" in rendered.code and "'50%'" in rendered.code
    assert rendered.parameters == [{"name": "id", "type": "integer", "value": 7},
                                   {"name": "note", "type": "text", "value": "x'); DROP TABLE refunds; --"},
                                   {"name": "day", "type": "date", "value": "2024-05-01"}]
    # what the kernel makes of it: the value is a parameter, the statement's text never holds it
    bound = values_from(rendered.parameters)
    assert bound["day"] == dt.date(2024, 5, 1)
    statements = split_statements(rendered.code, dialect)
    assert len(statements) == 2
    text, params = for_driver(statements[0], dialect, bound)
    assert "DROP" not in text and params is not None
    sent = params if isinstance(params, list) else [params[name] for name in ("note", "id", "day")]  # MariaDB: in order
    assert sent[0] == "x'); DROP TABLE refunds; --" and sent[1] == 7


@pytest.mark.parametrize("body", [
    "SELECT '{{ id }}';", "SELECT 1 -- {{ id }}\n;", 'SELECT "{{ id }}";', "SELECT 1 /* {{ id }} */;",
    "SELECT 'a''{{ id }}';", "SELECT x{{ id }};",
])
@pytest.mark.parametrize("dialect", ["postgresql", "mariadb", "sqlite"])
def test_a_sql_placeholder_where_no_value_can_be_bound_is_refused(body: str, dialect: str) -> None:
    t = parse("t.sql", b"-- ---\n-- parameters: {id: {type: integer}}\n-- ---\n" + body.encode())
    with pytest.raises(TemplateError, match="inside a string, a comment or a quoted name"):
        render_sql(t, {"id": 1}, dialect)


def test_the_marker_text_itself_may_not_appear_in_a_template() -> None:
    t = parse("t.sql", b"-- ---\n-- ---\nSELECT __cg_param_x__;\n")
    with pytest.raises(TemplateError, match="may not contain '__cg_param_'"):
        render_sql(t, {}, "postgresql")


@given(st.text(max_size=80))
def test_python_values_are_literals_whatever_they_hold(value: str) -> None:
    t = parse("p.py", PY)
    if "\x00" in value:
        return
    rendered = render_python(t, check_values(t.params, {"name": value}))
    scope: dict[str, Any] = {}
    exec(compile(rendered.code, "p.py", "exec"), scope)  # the rendered code: literals only
    assert scope["result"] == (value, 3, "2024-05-01", False, None)


@pytest.mark.parametrize("value", HOSTILE)
def test_python_hostile_values_stay_data(value: str) -> None:
    t = parse("p.py", PY)
    rendered = render_python(t, check_values(t.params, {"name": value, "maybe": "1.5"}))
    scope: dict[str, Any] = {}
    exec(compile(rendered.code, "p.py", "exec"), scope)  # the rendered code: literals only
    assert scope["result"] == (value, 3, "2024-05-01", False, 1.5) and set(scope) == {"__builtins__", "result"}


@pytest.mark.parametrize("body", [
    'print("hello {{ name }}")', "print('{{ name }}')", "# {{ name }}\n", 'print(f"{ {{ name }} }")',
    'x = """\n{{ name }}\n"""',
])
def test_a_python_placeholder_inside_a_string_or_comment_is_refused(body: str) -> None:
    t = parse("p.py", b"# ---\n# parameters: {name: {type: text}}\n# ---\n" + body.encode())
    with pytest.raises(TemplateError, match="inside a string or a comment"):
        render_python(t, {"name": "x"})


SH_HEAD = b"#!/bin/sh\n# ---\n# kinds: [python]\n# parameters:\n#   name: {type: text}\n#   n: {type: integer, default: 3}\n# ---\n"


def _shell(body: bytes) -> Any:
    from cellgate.gateway.templates.render import render_shell
    template = parse("ops/t.sh", SH_HEAD + body)
    return template, render_shell


@given(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40))
def test_shell_values_reach_the_script_verbatim_as_one_word(value: str) -> None:
    import contextlib
    import io

    template, render = _shell(b'printf "[%s]" {{ name }} "in quotes: {{ name }}" "$1"\n')
    code = render(template, check_values(template.params, {"name": value})).code
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "<shell>", "exec"), {})
    assert out.getvalue() == f"[{value}][in quotes: {value}][{value}]"


@pytest.mark.parametrize(("body", "said"), [
    (b"echo '{{ name }}'\n", "inside single quotes"), (b"echo $'{{ name }}'\n", "inside single quotes"),
    (b"echo x # {{ name }}\n", "in a comment"), (b"echo `echo {{ name }}`\n", "in a backquoted command"),
    (b"echo \\{{ name }}\n", "after a backslash"), (b"cat <<EOF\n{{ name }}\nEOF\n", "here-document"),
    (b"eval echo {{ name }}\n", "eval"),
])
def test_a_shell_placeholder_where_the_value_would_not_be_one_word_of_data_is_refused(body: bytes, said: str) -> None:
    template, render = _shell(body)
    with pytest.raises(TemplateError, match=said):
        render(template, check_values(template.params, {"name": "x"}))


def test_a_quote_in_a_comment_or_an_escaped_quote_does_not_hide_a_placeholder() -> None:
    from cellgate.gateway.templates.catalog import PLACEHOLDER
    from cellgate.gateway.templates.shell import shell_with_expansions
    script, used = shell_with_expansions("# it's a comment\necho \\' {{ name }} \"a\\\"b {{ n }}\"\n", "t.sh", PLACEHOLDER)
    assert script == "# it's a comment\necho \\' \"${CG_NAME}\" \"a\\\"b ${CG_N}\"\n" and used == ["name", "n"]
