"""From the statements of a cell to its :class:`Risk`: multiple statements, summary, deadline checks."""

from __future__ import annotations

import time

from .model import Findings, Risk
from .text import _list
from .context import _Stmt


class _OutOfTime(Exception):
    """The deadline passed while the analysis was running (``texts``: the cell's split, if done)."""

    def __init__(self, texts: list[str] | None) -> None:
        super().__init__("the risk analysis ran out of time")
        self.texts = texts


def _check_time(deadline: float | None, texts: list[str]) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise _OutOfTime(texts)


def _multiple(cell: Findings, statements: list[_Stmt]) -> None:
    if len(statements) > 1:
        writes = [st.kind for st in statements if "write" in st.flags]
        if writes:
            cell.add("sql.multiple_statements_with_write",
                     f"{len(statements)} statements in one cell, including {_list(writes)}: they run one after "
                     "another and a failure part-way leaves the earlier ones done", "multiple_statements")
        else:
            cell.add("sql.multiple_statements", f"{len(statements)} statements in one cell", "multiple_statements")


def _risk(cell: Findings, statements: list[_Stmt], texts: list[str] | tuple[str, ...] = (),
          functions: set[str] | None = None, normalized: list[str] | None = None) -> Risk:
    found = Findings()
    for st in statements:
        found.extend(st.found)
    found.extend(cell)
    parsed = "unparseable" not in found.flags
    read_only = parsed and all(st.read_only for st in statements) and not cell.flags - {"multiple_statements"}
    tables = sorted({t for st in statements for t in st.tables})
    if statements and all(rule in ("sql.read", "sql.multiple_statements") for rule, _ in found.items):
        summary = f"read-only: {_list([st.kind for st in statements])}" + (f" on {_list(tables)}" if tables else "")
        found.items.insert(0, ("sql.read", summary))
    elif not statements and not found.items:
        found.items.append(("sql.read", "the cell has no SQL statements"))
    return Risk(
        level=found.level(),
        reasons=found.reasons(),
        flags=tuple(sorted(found.flags)),
        statements=tuple(st.kind for st in statements),
        tables=tuple(tables),
        read_only=read_only,
        parsed=parsed,
        explain=tuple(text for st in statements if parsed and st.understood() for text in st.explain),
        texts=tuple(texts),
        functions=tuple(sorted(functions or ())),
        normalized=tuple(normalized or ()),
    )
