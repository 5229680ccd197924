"""Risk analysis of a cell before anyone reviews it: what it does, how bad it could be.

Pure logic, no I/O: :func:`analyze` takes the code of a cell, the target's kind (``sql`` or
``python``) and its SQL dialect, and returns a :class:`Risk` that policy decides on
(``read_only`` and ``parsed`` for auto-approval, ``statements``/``tables``/``level`` for deny
rules) and reviewers read (``reasons``, most serious first).

The analysis fails closed: whatever it cannot read, or the server might read differently, is
``unparseable`` (level high, never auto-approved); an unknown function is ``unknown_function``
(not read-only); the fallbacks used for unreadable statements (keywords, function names in the
tokens) can only add risk. Every rule and its level is in :data:`RULES`, the one table
docs/risk.md describes.

The package, each module depending only on those above it (no cycle; docs/risk.md):

- :mod:`.model`: levels, flags, :data:`RULES`, :class:`Risk`, :class:`Findings`;
- :mod:`.text`: how sentences name things; :mod:`.functions`: the SQL function allow-lists
  and the functions with effects;
- :mod:`.context`: the sqlglot dialect, one statement's findings;
- :mod:`.tree`: the rules on a parsed statement; :mod:`.keywords`: the keyword/token fallback;
  :mod:`.lexical`: the lexing doubts per dialect;
- :mod:`.statements`: one statement read by sqlglot; :mod:`.cell`: a cell's Risk from its statements;
- :mod:`.postgres`: PostgreSQL's reading (pglast); :mod:`.sql`: :func:`analyze_sql`;
- :mod:`.python`: the static scan of Python cells (it analyses SQL literals with :mod:`.sql`);
- this module: :func:`analyze`, which dispatches on the kind.
"""

from __future__ import annotations

from .model import FLAGS, LEVELS, PYTHON_FLAGS, RULES, Findings, Risk, combine
from .python import analyze_python
from .sql import analyze_sql

__all__ = [
    "FLAGS",
    "LEVELS",
    "PYTHON_FLAGS",
    "RULES",
    "Findings",
    "Risk",
    "analyze",
    "analyze_python",
    "analyze_sql",
    "combine",
]


def analyze(code: str, kind: str, dialect: str | None, *, deadline: float | None = None) -> Risk:
    """The risk of one cell: SQL in ``dialect``, Python, or a kind nobody analyses (high).

    ``deadline`` is a :func:`time.monotonic` value: a SQL analysis still running then stops and
    returns a high, not-parsed Risk flagged ``analysis_timeout``.
    """
    if kind == "sql":
        return analyze_sql(code, dialect or "", deadline=deadline)
    if kind == "python":
        return analyze_python(code)
    found = Findings()
    found.add("kind.unknown", f"cells of kind {kind!r} are not analysed", "unparseable")
    return Risk(level=found.level(), reasons=found.reasons(), flags=tuple(sorted(found.flags)),
                statements=(), tables=(), read_only=False, parsed=False)
