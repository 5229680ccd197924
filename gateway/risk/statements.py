"""One statement read by sqlglot: its tree when it has one, else the keyword fallback; EXPLAIN.

A statement whose analysis raises (nesting too deep, a bug) is unparseable, never a crash.
"""

from __future__ import annotations

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from .text import _error_line, _snippet
from .context import _chunks, _closing_paren, _Ctx, _node_class, _Stmt
from .tree import _analyze_tree
from .keywords import _analyze_keywords, _first_word_type, _guess_tables, _scan_text, _scan_tokens


#: parsed statement node → statement type; anything else at the top is not a statement we know
_STATEMENT_TYPES: dict[type, str] = {
    cls: kind
    for name, kind in (
        ("Select", "SELECT"), ("SetOperation", "SELECT"), ("Subquery", "SELECT"), ("Values", "VALUES"),
        ("Insert", "INSERT"), ("Update", "UPDATE"), ("Delete", "DELETE"), ("Merge", "MERGE"),
        ("Create", "CREATE"), ("Drop", "DROP"), ("Alter", "ALTER"), ("TruncateTable", "TRUNCATE"),
        ("Grant", "GRANT"), ("Revoke", "REVOKE"), ("Set", "SET"), ("Use", "USE"),
        ("Transaction", "BEGIN"), ("Commit", "COMMIT"), ("Rollback", "ROLLBACK"), ("Show", "SHOW"),
        ("Describe", "DESCRIBE"), ("Copy", "COPY"), ("Pragma", "PRAGMA"), ("Attach", "ATTACH"),
        ("Detach", "DETACH"), ("Analyze", "ANALYZE"), ("Kill", "KILL"), ("Comment", "COMMENT"),
    )
    if (cls := _node_class(name)) is not None
}


def _statement_type(tree: exp.Expr | None) -> str | None:
    for cls in type(tree).__mro__:  # Union → SetOperation
        if cls in _STATEMENT_TYPES:
            return _STATEMENT_TYPES[cls]
    return None


#: tokens that start the statement an EXPLAIN explains
_STATEMENT_START = {"SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "VALUES", "TABLE",
                    "CREATE", "EXECUTE", "DECLARE"}


def _sqlglot_statements(ctx: _Ctx, text: str) -> list[_Stmt]:
    """sqlglot's reading of one statement text: one _Stmt, or several when sqlglot splits it (then unparseable)."""
    try:
        tokens = ctx.tokenize()
    except Exception as exc:  # TokenError, or anything sqlglot raises: fail closed
        st = _Stmt(_first_word_type(text))
        st.add("sql.unparseable", f"the statement could not be read as {ctx.name}: {_error_line(exc)}", "unparseable")
        _scan_text(st, text)
        return [st]
    chunks = list(_chunks(tokens))
    found = [_analyze_guarded(ctx, chunk) for chunk in chunks]
    if len(found) != 1:
        st = found[0] if found else _Stmt("OTHER")
        st.add("sql.unparseable", f"sqlglot reads {len(found)} statements where {ctx.name} reads one: "
               f"{_snippet(text)}", "unparseable")
        if not found:
            found = [st]
    return found


def _analyze_guarded(ctx: _Ctx, toks: list[Token]) -> _Stmt:
    """A statement whose analysis fails (nesting too deep for the parser, a bug) is unparseable."""
    try:
        return _analyze_statement(ctx, toks)
    except Exception as exc:  # RecursionError included: fail closed, never crash the submission
        st = _Stmt(_first_word_type(ctx.text(toks)))
        st.add("sql.unparseable", f"the statement could not be analysed ({type(exc).__name__}): "
               f"{_snippet(ctx.text(toks))}", "unparseable")
        _scan_tokens(st, toks)
        return st


def _analyze_statement(ctx: _Ctx, toks: list[Token]) -> _Stmt:
    first = toks[0].text.upper().split()[0]
    second = toks[1].text.upper() if len(toks) > 1 else ""
    if first == "EXPLAIN" or (first in ("DESC", "DESCRIBE", "ANALYZE") and ctx.sg == "mysql"
                              and second not in ("TABLE", "NO_WRITE_TO_BINLOG", "LOCAL")
                              and _explained_start(toks) is not None):
        return _explain(ctx, toks)  # MariaDB's ANALYZE <statement> runs it, like EXPLAIN ANALYZE

    replace = first == "REPLACE" and ctx.sg in ("mysql", "sqlite")
    parse_toks = toks
    if replace:  # MySQL/SQLite REPLACE INTO: sqlglot has no tree for it; read it as the INSERT it extends
        head = toks[0]
        parse_toks = [Token(TokenType.INSERT, "INSERT", head.line, head.col, head.start, head.end), *toks[1:]]

    error: Exception | None = None
    try:
        tree = ctx.parse(parse_toks)
    except Exception as exc:  # ParseError, or anything else sqlglot raises: fail closed
        tree, error = None, exc

    kind = _statement_type(tree)
    if tree is not None and kind is not None:
        st = _Stmt(kind)
        _analyze_tree(ctx, st, tree, toks)
        if replace:
            st.kind = "REPLACE"
        return st
    return _analyze_keywords(ctx, toks, error, tree)


def _explained_start(toks: list[Token]) -> int | None:
    """Index of the statement an EXPLAIN/DESCRIBE/ANALYZE explains, or None."""
    i, n = 1, len(toks)
    while i < n:
        tok = toks[i]
        up = tok.text.upper()
        if tok.token_type == TokenType.L_PAREN:
            nxt = toks[i + 1].text.upper() if i + 1 < n else ""
            if nxt in _STATEMENT_START or nxt == "(":
                return i
            i = _closing_paren(toks, i)  # a PostgreSQL option list: (ANALYZE, BUFFERS)
        elif (up in _STATEMENT_START and tok.token_type not in (TokenType.VAR, TokenType.IDENTIFIER)) or up == "REPLACE":
            return i
        i += 1
    return None


def _explain(ctx: _Ctx, toks: list[Token]) -> _Stmt:
    start = _explained_start(toks)
    options = {t.text.upper() for t in toks[1:start]}
    runs = bool(options & {"ANALYZE", "ANALYSE"}) or toks[0].text.upper() == "ANALYZE"
    if start is None:  # EXPLAIN t (MySQL: DESCRIBE), EXPLAIN FOR CONNECTION n
        st = _Stmt("EXPLAIN" if toks[0].text.upper() == "EXPLAIN" else "DESCRIBE")
        st.tables = _guess_tables(toks, first_name=True)
        if runs:
            st.add("sql.unparseable", f"EXPLAIN ANALYZE of something the analysis cannot read: {_snippet(ctx.text(toks))}",
                   "unparseable")
        else:
            st.read_only = True
        return st
    inner = _analyze_statement(ctx, toks[start:])
    if runs:
        # EXPLAIN ANALYZE executes the statement: what runs is the inner statement
        inner.add("sql.read", f"EXPLAIN ANALYZE executes the {inner.kind} it explains")
        return inner
    st = _Stmt("EXPLAIN")
    st.tables = inner.tables
    if inner.parsed:
        st.read_only = True
    else:
        st.add("sql.unparseable", f"the statement EXPLAIN explains could not be parsed as {ctx.name}", "unparseable")
    return st
