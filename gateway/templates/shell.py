"""Shell templates: values reach the script as environment variables and arguments, never as shell text.

A ``.sh`` template runs on a Python target (its kernel, as the kernel's own uid, with the target's
environment): the rendered task is Python that runs the script with ``/bin/sh -c SCRIPT`` (a
literal) and the values as **environment variables** ``CG_<NAME>`` and as **positional arguments**
``$1 …`` in declaration order, after ``--``. Each ``{{ name }}`` in the script becomes a parameter
expansion of that variable, ``"${CG_NAME}"`` (inside double quotes: ``${CG_NAME}``): the shell
expands it to the value as one word and never reads the value as code (no word splitting, no
globbing, no command substitution of the value).

Where the expansion would not be one word of data the placeholder is refused, as in SQL: inside
single quotes or ``$'…'`` (it would not expand), in a comment, in a backquoted command or after a
backslash; and a script that has a here-document (``<<``) or ``eval`` anywhere is refused when it
has placeholders (the value could be read again as shell text).
"""

from __future__ import annotations

import re
from typing import Any

from .declare import TemplateError, Value

SENTINEL = "\x00CG{}\x00"
WORD_START = set(" \t\n;&|()<>")


def variable(name: str) -> str:
    return f"CG_{name.upper()}"


def _scan(script: str) -> list[tuple[int, str]]:
    """``(position, context)`` for each ``\\x00``-delimited placeholder sentinel: ``plain``, ``double``,
    ``single``, ``comment``, ``backquote`` or ``escaped``."""
    found: list[tuple[int, str]] = []
    i, state, backquote = 0, "plain", False
    while i < len(script):
        c = script[i]
        if c == "\x00":
            context = "backquote" if backquote else state
            if i > 0 and script[i - 1] == "\\" and state in ("plain", "double"):
                context = "escaped"
            found.append((i, context))
            i = script.index("\x00", i + 1) + 1
            continue
        escapes = c == "\\" and script[i + 1:i + 2] != "\x00"  # (a backslash before a placeholder: refused above)
        if state == "plain":
            if escapes:
                i += 2
                continue
            if c == "'":
                state = "single"
            elif c == "$" and script[i + 1:i + 2] == "'":
                state, i = "single", i + 1
            elif c == '"':
                state = "double"
            elif c == "`":
                backquote = not backquote
            elif c == "#" and (i == 0 or script[i - 1] in WORD_START):
                state = "comment"
        elif state == "single":
            if c == "'":
                state = "plain"
            elif c == "\\" and script[i + 1:i + 2] == "'":  # only inside $'…'; harmless to skip in '…' too: refused anyway
                i += 2
                continue
        elif state == "double":
            if escapes:
                i += 2
                continue
            if c == '"':
                state = "plain"
            elif c == "`":
                backquote = not backquote
        elif state == "comment" and c == "\n":
            state = "plain"
        i += 1
    return found


def shell_with_expansions(body: str, path: str, placeholder: re.Pattern[str]) -> tuple[str, list[str]]:
    """The script with each ``{{ name }}`` as a quoted expansion, and the names in the order used."""
    names = [m.group(1).strip() for m in placeholder.finditer(body)]
    if not names:
        return body, []
    if "\x00" in body:
        raise TemplateError(f"{path}: a NUL character in a shell script")
    if re.search(r"<<|\beval\b", body):
        raise TemplateError(f"{path}: a script with a here-document (<<) or eval cannot take values from "
                            "{{ name }} (the value could be read again as shell text); use $1 … or \"$CG_NAME\"")
    marked = placeholder.sub(lambda m: SENTINEL.format(m.group(1).strip()), body)
    pieces, at = [], 0
    for pos, context in _scan(marked):
        end = marked.index("\x00", pos + 1) + 1
        name = marked[pos + 3:end - 1]
        if context not in ("plain", "double"):
            raise TemplateError(f"{path}: {{{{ {name} }}}} stands {_WHERE[context]}, where a value cannot be placed as "
                                "data: put it where a word goes (cmd {{ name }}) or inside double quotes")
        pieces += [marked[at:pos], f"${{{variable(name)}}}" if context == "double" else f"\"${{{variable(name)}}}\""]
        at = end
    pieces.append(marked[at:])
    return "".join(pieces), list(dict.fromkeys(names))


_WHERE = {"single": "inside single quotes", "comment": "in a comment", "backquote": "in a backquoted command",
          "escaped": "after a backslash"}


def shell_program(script: str, values: dict[str, Value | None], order: list[str]) -> str:
    """The Python a Python target's kernel runs: the script with ``/bin/sh``, its values as data."""
    env = {variable(k): _text(v) for k, v in values.items()}
    args = [_text(values.get(k)) for k in order]
    return (
        "import os as _os, subprocess as _subprocess, sys as _sys\n"
        f"_script = {script!r}\n"
        f"_values = {env!r}\n"
        f"_done = _subprocess.run(['/bin/sh', '-c', _script, 'template', *{args!r}], env={{**_os.environ, **_values}},\n"
        "                         stdin=_subprocess.DEVNULL, capture_output=True)\n"
        "print(_done.stdout.decode('utf-8', 'replace'), end='')\n"
        "print(_done.stderr.decode('utf-8', 'replace'), end='', file=_sys.stderr)\n"
        "if _done.returncode:\n"
        "    raise RuntimeError(f'the script exited with status {_done.returncode}')\n")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
