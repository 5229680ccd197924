"""The SQL analysis entry point: :func:`analyze_sql`, and the analysis of MySQL/MariaDB and SQLite cells.

SQL is split with kernels/sql/split.py, the splitter the kernel runs the cell with, so the
analysis reads exactly the statements that run (``Risk.texts``). PostgreSQL cells go to
:mod:`.postgres`; MySQL/MariaDB and SQLite are read by sqlglot, checked against the servers' own
lexical rules (:mod:`.lexical`). Dialects and their sqlglot names come from kernels/registry.py.
"""

from __future__ import annotations

from cellgate.kernels.registry import sqlglot_dialect, sqlglot_split_name
from cellgate.kernels.sql.split import split_statements, split_tokens
from .model import Findings, Risk
from .text import _error_line
from .context import _Ctx, _QUIET, _Stmt
from .keywords import _first_word_type, _scan_text, _token_functions
from .lexical import _token_doubts
from .statements import _analyze_guarded
from .cell import _check_time, _multiple, _OutOfTime, _risk
from .postgres import _analyze_postgres


def analyze_sql(code: str, dialect: str, *, deadline: float | None = None) -> Risk:
    """The risk of a cell of SQL in ``dialect`` (postgresql, mysql, mariadb or sqlite)."""
    sg = sqlglot_dialect(dialect)
    if sg is None:
        found = Findings()
        found.add("sql.unknown_dialect", f"SQL dialect {dialect!r} is not supported by the risk analysis",
                  "unparseable")
        return _risk(found, [])
    if "\x00" in code:  # PostgreSQL's parser (pglast) and libpq stop reading at a NUL: the rest is unseen
        found = Findings()
        found.add("sql.unparseable", "the SQL contains a NUL character: parsers and database drivers stop reading "
                  "there, so what runs cannot be told from what was analysed", "unparseable")
        return _risk(found, [], split_statements(code, sqlglot_split_name(sg)))  # the kernel's split, as always
    token = _QUIET.set(True)
    try:
        return _ANALYSERS[sg](code, _Ctx(code, sg), deadline)
    except _OutOfTime as late:
        return _timed_out(code, sg, late.texts)
    finally:
        _QUIET.reset(token)


def _timed_out(code: str, sg: str, texts: list[str] | None) -> Risk:
    found = Findings()
    found.add("sql.analysis_timeout", f"the analysis ran out of time on this {len(code.encode('utf-8'))}-byte cell; "
              "it is reviewed, never auto-approved", "analysis_timeout")
    if texts is None:
        try:
            texts = split_statements(code, sqlglot_split_name(sg))
        except Exception:  # the split is what the kernel runs: without it the kernel refuses the cell
            texts = []
    return Risk(level="high", reasons=found.reasons(), flags=("analysis_timeout",), statements=(), tables=(),
                read_only=False, parsed=False, texts=tuple(texts))


def _analyze_tokens(code: str, ctx: _Ctx, deadline: float | None) -> Risk:
    """MySQL/MariaDB and SQLite: sqlglot's tokenizer and parser, checked against the server's reading."""
    cell = Findings()
    try:
        texts, chunks, empty_at = split_tokens(code, ctx.sg)
    except Exception as exc:  # TokenError, or anything sqlglot raises: fail closed
        st = _Stmt(_first_word_type(code))
        st.add("sql.unparseable", f"the SQL could not be read as {ctx.name}: {_error_line(exc)}", "unparseable")
        _scan_text(st, code)
        kernel = split_statements(code, sqlglot_split_name(ctx.sg))
        return _risk(cell, [st], texts=kernel)
    if ctx.sg == "sqlite":
        kernel = split_statements(code, "sqlite")
        if kernel != texts:
            cell.add("sql.unparseable", f"SQLite reads {len(kernel)} statements where the analysis reads {len(texts)} "
                     "(a trigger body, or text the two read differently): the statements cannot be told apart "
                     "reliably", "unparseable")
        texts = kernel
    _check_time(deadline, texts)
    _token_doubts(ctx, [tok for chunk in chunks for tok in chunk], cell)
    if ctx.sg == "mysql" and empty_at is not None and code[empty_at:].strip(" \t\n\r;"):
        cell.add("sql.unparseable", "an empty statement (a ; with nothing before it) followed by more text: MariaDB "
                 "rejects the text there, the split drops it, so the two do not agree (remove the extra ;)",
                 "unparseable")
    statements: list[_Stmt] = []
    functions: set[str] = set()
    for chunk in chunks:
        _check_time(deadline, texts)
        st = _analyze_guarded(ctx, chunk)
        functions.update(_token_functions(ctx, st, chunk))
        statements.append(st)
    _multiple(cell, statements)
    normalized = [" ".join(code[t.start:t.end + 1] for t in chunk) for chunk in chunks]
    return _risk(cell, statements, texts=texts, functions=functions, normalized=normalized)


_ANALYSERS = {"postgres": _analyze_postgres, "mysql": _analyze_tokens, "sqlite": _analyze_tokens}
