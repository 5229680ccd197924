"""Reading a policy file (TOML) and pointing at the line of a bad field.

``tomllib`` keeps no positions, so :func:`locate` finds a dotted field path
(``targets.payments.review.mode``) in the text: the deepest ``[table]`` header that prefixes the
path, then the first ``key =`` for the next part of the path below it (inline tables included).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


class PolicyFileError(Exception):
    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")
        self.path, self.line, self.field, self.message = path, line, field, message


def load(path: str) -> tuple[str, dict[str, Any]]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyFileError(path, None, None, f"cannot read it: {exc.strerror}") from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise PolicyFileError(path, int(match.group(1)) if match else None, None, f"invalid TOML: {exc}") from None


def _key(part: str) -> str:
    return part.split("[", 1)[0]


def locate(text: str, field: str) -> int | None:
    """The 1-based line where ``field`` is set, or its closest enclosing table; None if unknown."""
    parts = [_key(p) for p in field.split(".") if p]
    lines = text.splitlines()
    headers = []
    for number, line in enumerate(lines, 1):
        match = HEADER.match(line)
        if match:
            headers.append((number, [p.strip().strip('"') for p in match.group(1).split(".")]))
    best_line, depth = None, 0
    for number, names in headers:
        if len(names) > depth and parts[: len(names)] == names:
            best_line, depth = number, len(names)
    rest = parts[depth:]
    if not rest:
        return best_line
    start = best_line or 0
    end = next((n for n, _ in headers if n > start), len(lines) + 1)
    key = re.compile(rf'^\s*"?{re.escape(rest[0])}"?\s*(=|\.)')
    for number in range(start + 1, end):
        if key.match(lines[number - 1]):
            return number
    return best_line
