"""How findings name things in their sentences: lists, "on <tables>", snippets, error lines."""

from __future__ import annotations

import re


def _on(tables: set[str] | list[str]) -> str:
    return f" on {_list(sorted(tables))}" if tables else ""


def _list(items: list[str], limit: int = 3) -> str:
    seen = list(dict.fromkeys(items))
    if len(seen) > limit:
        return ", ".join(seen[:limit]) + f" and {len(seen) - limit} more"
    return ", ".join(seen)


def _snippet(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_line(exc: Exception) -> str:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    first = re.sub(r"\x1b\[[0-9;]*m", "", first)
    first = re.sub(r"<Token token_type: [^,]*, text: ([^,]*),[^>]*>", r"'\1'", first)
    return _snippet(first.rstrip(". "), 100)
