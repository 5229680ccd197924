"""The keyword/token fallback for statements without a usable tree (sqlglot cannot parse them).

A statement is classified by its first keywords; its tokens (or, when even the tokenizer fails,
the words of its text) can only add risk: a DROP, a file write, a function with effects is
reported wherever it appears. Also the function names called in a statement's tokens.
"""

from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from .text import _error_line, _list, _on, _snippet
from .functions import _function_rule, known_function
from .context import _chunks, _closing_paren, _Ctx, _function, _Stmt, _STRING_TOKENS, _unknown


#: statement keywords reported as such when a statement is classified from its tokens
_KEYWORD_TYPES = {
    "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE", "VALUES", "TABLE", "CREATE",
    "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE", "SET", "RESET", "SHOW", "EXPLAIN", "DESCRIBE",
    "BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "CALL", "DO", "EXECUTE", "PREPARE",
    "DEALLOCATE", "COPY", "LOAD", "LOCK", "UNLOCK", "USE", "VACUUM", "ANALYZE", "CHECKPOINT",
    "CLUSTER", "REINDEX", "OPTIMIZE", "REPAIR", "CHECK", "CHECKSUM", "REFRESH", "FLUSH", "KILL",
    "LISTEN", "UNLISTEN", "NOTIFY", "DISCARD", "PRAGMA", "ATTACH", "DETACH", "COMMENT", "HANDLER",
    "RENAME", "DECLARE", "FETCH", "MOVE", "CLOSE", "XA", "SHUTDOWN", "RESTART", "INSTALL", "UNINSTALL",
    "REASSIGN",
}
_KEYWORD_ALIASES = {"DESC": "DESCRIBE", "END": "COMMIT", "ABORT": "ROLLBACK", "EXEC": "EXECUTE",
                    "WITH": "SELECT", "TABLE": "SELECT"}


def _tokens_or_text(ctx: _Ctx, st: _Stmt, code: str) -> None:
    """What a cell nothing can read seems to do: its tokens if sqlglot reads them, else its words."""
    try:
        tokens = ctx.tokenize()
    except Exception:  # fail closed: the words are all there is
        _scan_text(st, code)
        return
    for chunk in _chunks(tokens):
        _scan_tokens(st, chunk)
    _scan_text(st, code)


def _analyze_keywords(ctx: _Ctx, toks: list[Token], error: Exception | None, tree: exp.Expr | None) -> _Stmt:
    """Statements sqlglot could not turn into a tree we know: classify by their leading keywords.

    Statements whose keywords say all they do (transaction control, SET, SHOW, VACUUM…) are
    classified without doubt. The others are ``unparseable``; their tokens are still scanned
    so the reasons say what they seem to do, and their level can only go up.
    """
    words = " ".join(t.text for t in toks[:5]).upper().split() + ["", "", "", ""]  # MySQL: "LOCK TABLES" is one token
    w0, w1, w2 = words[0], words[1], words[2]
    kind = _KEYWORD_ALIASES.get(w0, w0) if w0 in _KEYWORD_TYPES or w0 in _KEYWORD_ALIASES else "OTHER"
    st = _Stmt(kind)
    text = ctx.text(toks)
    snippet = _snippet(text)
    known = True

    if w0 in ("SHOW", "DESC", "DESCRIBE", "CHECKSUM"):
        st.read_only = True
        if w0 == "CHECKSUM":
            st.tables = _guess_tables(toks, all_names=True)
    elif w0 in ("BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE", "XA") or (w0 == "START" and w1 == "TRANSACTION"):
        st.kind = "BEGIN" if w0 == "START" else st.kind
        st.add("sql.transaction_control", f"{st.kind} controls the transaction", "transaction_control")
    elif w0 == "SET":
        if w1 == "PASSWORD":
            st.add("sql.dcl", "SET PASSWORD changes an account's password", "dcl")
        elif w1 in ("GLOBAL", "PERSIST", "PERSIST_ONLY") or w1.startswith("@@GLOBAL"):
            st.add("sql.server_setting", "SET GLOBAL changes a setting for every session on the server", "session_change")
        elif w1 == "ROLE" or (w1 in ("SESSION", "LOCAL") and w2 in ("ROLE", "AUTHORIZATION")):
            st.add("sql.session_change", f"{snippet} changes the privileges of every later statement in this session",
                   "session_change")
        else:
            st.add("sql.session_change", f"{snippet} changes a setting of this session", "session_change")
    elif w0 in ("RESET", "DISCARD", "USE", "PREPARE", "DEALLOCATE", "LISTEN", "UNLISTEN", "NOTIFY", "DECLARE",
                "FETCH", "MOVE", "CLOSE"):
        st.add("sql.session_change", f"{w0} changes the state of this session", "session_change")
    elif w0 in ("LOCK", "UNLOCK"):
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.lock", f"{snippet} {'locks' if w0 == 'LOCK' else 'releases locks on'} tables until the "
               "transaction or session ends", "lock")
    elif w0 in ("CALL", "DO", "EXECUTE", "EXEC"):
        st.add("sql.call", f"{kind} runs code whose effects are not visible here: {snippet}", "call")
    elif w0 == "VACUUM":
        st.tables = _guess_tables(toks, all_names=True)
        if w1 == "INTO" or "INTO" in words:
            st.add("sql.file_write", "VACUUM INTO writes a copy of the database to a file", "file_write")
        elif ctx.sg == "sqlite" or any(t.text.upper() == "FULL" for t in toks):
            st.add("sql.exclusive_maintenance", f"{snippet} rewrites the {'database' if ctx.sg == 'sqlite' else 'table'} "
                   "under an exclusive lock", "lock")
        else:
            st.add("sql.maintenance", f"{snippet} reclaims space and updates statistics")
    elif w0 in ("ANALYZE", "CHECKPOINT", "CHECK"):
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.maintenance", f"{w0} performs maintenance{_on(st.tables)}")
    elif w0 in ("CLUSTER", "REINDEX", "OPTIMIZE", "REPAIR", "REFRESH"):
        st.tables = _guess_tables(toks, all_names=True)
        write = ("write",) if w0 == "REFRESH" else ()
        if any(t.text.upper() == "CONCURRENTLY" for t in toks):
            st.add("sql.maintenance", f"{snippet} rebuilds without blocking readers", *write)
        else:
            st.add("sql.exclusive_maintenance", f"{snippet} rebuilds under an exclusive lock", "lock", *write)
    elif w0 == "FLUSH":
        flags = ("lock",) if any(t.text.upper() == "LOCK" for t in toks) else ()
        st.add("sql.server_setting", f"{snippet} acts on the whole server", *flags)
    elif w0 in ("SHUTDOWN", "RESTART") or (w0 in ("INSTALL", "UNINSTALL") and w1 in ("PLUGIN", "COMPONENT", "SONAME")):
        st.add("sql.server_access", f"{snippet} acts on the database server itself", "side_effect_function")
    elif (w0 == "ALTER" and w1 == "DEFAULT" and w2 == "PRIVILEGES") or (w0 == "REASSIGN" and w1 == "OWNED"):
        st.add("sql.dcl", f"{w0} {w1} {w2} changes who may do what: {snippet}", "dcl")
    elif w0 == "KILL":
        st.add("sql.server_access", f"KILL ends another connection or its query: {snippet}", "side_effect_function")
    elif w0 == "LOAD" and w1 in ("DATA", "XML"):
        known = False
        st.tables = _guess_tables(toks)
        if w2 == "LOCAL":
            st.add("sql.copy", f"LOAD {w1} LOCAL INFILE loads a client file into {_list(sorted(st.tables)) or 'a table'}",
                   "copy", "write")
        else:
            st.add("sql.server_access", f"LOAD {w1} INFILE reads a file on the database server into "
                   f"{_list(sorted(st.tables)) or 'a table'}", "copy", "write")
    elif w0 in ("GRANT", "REVOKE"):
        st.add("sql.dcl", f"{w0} changes who may do what: {snippet}", "dcl")
    elif w0 in ("CREATE", "ALTER", "DROP") and (w1 in ("USER", "ROLE", "GROUP", "LOGIN")
                                               or (w1 == "OR" and w2 == "REPLACE" and words[3] in ("USER", "ROLE"))):
        st.add("sql.dcl", f"{w0} {w1} changes accounts: {snippet}", "dcl", "ddl")
    elif w0 == "CREATE" and (w1 == "EXTENSION" or (w1 == "OR" and words[3] == "EXTENSION")):
        st.add("sql.server_access", f"CREATE EXTENSION loads code into the database server: {snippet}", "ddl")
    elif w0 == "RENAME":
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.alter", f"RENAME changes the schema: {snippet}", "alter", "ddl")
    elif w0 == "ALTER" and w1 == "SYSTEM":
        st.add("sql.server_setting", "ALTER SYSTEM changes the server configuration for every session",
               "alter", "session_change")
    elif w0 == "DROP":
        known = False
        st.tables = _guess_tables(toks)
        st.add("sql.drop", f"DROP {w1}: {snippet}", "drop", "ddl", "write")
    elif w0 == "TRUNCATE":
        known = False
        st.tables = _guess_tables(toks, all_names=True)
        st.add("sql.truncate", f"TRUNCATE{_on(st.tables)}: every row is deleted at once", "truncate", "write")
    elif w0 == "ALTER":
        known = False
        st.tables = _guess_tables(toks)
        st.add("sql.alter", f"ALTER {w1} changes the schema: {snippet}", "alter", "ddl")
    elif w0 in ("CREATE", "COMMENT"):
        known = False
        st.tables = _guess_tables(toks)
        st.add("sql.ddl", f"{w0} changes the schema: {snippet}", "ddl")
    else:
        known = False
        st.tables = _guess_tables(toks)

    _scan_tokens(st, toks)
    if not known:
        what = f"{kind} statement" if kind != "OTHER" else "statement"
        if error is not None:
            why = f"could not be parsed as {ctx.name} ({_error_line(error)})"
        elif isinstance(tree, exp.Command) or tree is None:
            why = f"uses {ctx.name} syntax the parser does not understand"
        else:
            why = "is not a statement the analysis recognises"
        st.add("sql.unparseable", f"{what} {why}: {snippet}", "unparseable")
    return st


def _scan_tokens(st: _Stmt, toks: list[Token]) -> None:
    """What a statement without a usable tree seems to do, from its tokens: only adds risk."""
    ups = [t.text.upper() for t in toks]
    for i, tok in enumerate(toks[:-1]):
        if toks[i + 1].token_type == TokenType.L_PAREN and tok.token_type not in (TokenType.STRING, TokenType.IDENTIFIER):
            _function(st, tok.text)
    for i, up in enumerate(ups[:-1]):
        if up == "INTO" and ups[i + 1] in ("OUTFILE", "DUMPFILE"):
            st.add("sql.file_write", f"SELECT … INTO {ups[i + 1]} writes a file on the database server",
                   "file_write", "select_into")
        if up == "FOR" and ups[i + 1] in ("UPDATE", "SHARE") and st.kind == "SELECT":
            st.add("sql.lock", f"SELECT … FOR {ups[i + 1]} locks the rows it reads", "lock")
    if st.kind in ("SELECT", "OTHER") and ups and ups[0] == "WITH":
        for up in ups[1:]:
            if up in ("INSERT", "UPDATE", "DELETE", "MERGE"):
                st.add("sql.write_in_cte", f"{up} inside WITH: the statement writes", "write_in_cte", "write")
                break
    if st.kind in ("INSERT", "UPDATE", "DELETE", "MERGE", "REPLACE"):
        st.add("sql.dml", f"{st.kind}{_on(st.tables)} writes rows", "write")


_TEXT_WORDS = re.compile(r"\b(DROP|TRUNCATE|GRANT|REVOKE|DELETE|UPDATE|INSERT|ALTER|OUTFILE|DUMPFILE|PROGRAM)\b", re.I)


def _scan_text(st: _Stmt, code: str) -> None:
    """SQL that could not even be tokenized: name the dangerous words it contains."""
    words = sorted({m.group(1).upper() for m in _TEXT_WORDS.finditer(code)})
    if not words:
        return
    flags = {"DROP": ("drop",), "TRUNCATE": ("truncate",), "GRANT": ("dcl",), "REVOKE": ("dcl",),
             "OUTFILE": ("file_write",), "DUMPFILE": ("file_write",)}
    rule = "sql.unparseable"
    extra: set[str] = set()
    for word in words:
        extra.update(flags.get(word, ()))
    if extra & {"drop", "truncate", "dcl", "file_write"}:
        rule = "sql.drop" if "drop" in extra else "sql.truncate" if "truncate" in extra else (
            "sql.dcl" if "dcl" in extra else "sql.file_write")
    st.add(rule, f"the unreadable SQL mentions {_list(words)}", *sorted(extra))


#: words followed by "(" that are not function calls
_NOT_CALLS = set("""
    IN VALUES VALUE AS ON USING EXISTS OVER FILTER WITHIN FROM JOIN SELECT INTO WHERE AND OR NOT XOR BY WHEN THEN
    ELSE CASE IS LIKE GLOB REGEXP RLIKE MATCH AGAINST BETWEEN ALL ANY SOME UNION EXCEPT INTERSECT MINUS RETURNING
    TABLE KEY INDEX PRIMARY UNIQUE FOREIGN REFERENCES CHECK CONSTRAINT PARTITION PARTITIONS SUBPARTITION WITH
    LATERAL DISTINCT LIMIT OFFSET HAVING GROUP ORDER SET ROW ROWS RECURSIVE DEFAULT ESCAPE WINDOW RANGE DIV ASC
    DESC NULL TRUE FALSE COLUMNS DO DECIMAL NUMERIC DEC FIXED FLOAT DOUBLE REAL INT INTEGER BIGINT SMALLINT TINYINT
    MEDIUMINT VARCHAR NCHAR NVARCHAR VARBINARY BINARY BIT DATETIME BLOB TEXT ENUM SIGNED UNSIGNED RAISE
""".split())


#: words after which a name followed by "(" is a table or index (INSERT INTO t (a, b)), not a call
_TARGET_INTRO = {"INTO", "TABLE", "UPDATE", "INDEX", "KEY", "REFERENCES", "TRIGGER", "VIEW", "EXISTS", "PROCEDURE",
                 "FUNCTION", "AS", "CALL"}
_NAME_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*\Z")


def _token_functions(ctx: _Ctx, st: _Stmt, toks: list[Token]) -> set[str]:
    """MySQL/SQLite: every name followed by "(" is a call; those not allow-listed make the statement unknown."""
    if not toks or toks[0].text.upper() == "PRAGMA":
        return set()
    names: set[str] = set()
    n = len(toks)
    for i in range(n - 1):
        if toks[i + 1].token_type != TokenType.L_PAREN:
            continue
        tok = toks[i]
        quoted = tok.token_type == TokenType.IDENTIFIER
        if not quoted and (tok.token_type in _STRING_TOKENS or not _NAME_TOKEN.match(tok.text)
                           or tok.text.upper() in _NOT_CALLS):
            continue
        prev = toks[i - 1] if i else None
        qualified = prev is not None and prev.token_type == TokenType.DOT and i >= 2
        if not qualified and prev is not None and prev.text.upper() in _TARGET_INTRO:
            continue
        if _cte_columns(toks, i + 1):
            continue
        name = tok.text.lower()
        written = f"{toks[i - 2].text.lower()}.{name}" if qualified else name
        names.add(written)
        if _function_rule(name) is not None:
            _function(st, name)
        elif qualified or not known_function(name, ctx.sg):
            _unknown(st, f"{written}() is not on the allow-list of {ctx.name} functions without side effects "
                     "(a user-defined function, or a built-in that changes or reaches something)")
    if ctx.sg == "mysql" and toks[0].text.upper() != "SET" and any(t.token_type == TokenType.COLON_EQ for t in toks):
        st.read_only = False
        st.add("sql.session_change", "@variable := … assigns a user variable of this session", "session_change")
    return names


def _cte_columns(toks: list[Token], at: int) -> bool:
    """Whether the parenthesis at ``at`` is a column list followed by AS ( — WITH x(a, b) AS (…)."""
    j, n = _closing_paren(toks, at), len(toks)
    return j + 2 < n and toks[j + 1].text.upper() == "AS" and toks[j + 2].token_type == TokenType.L_PAREN


def _first_word_type(code: str) -> str:
    stripped = re.sub(r"(--[^\n]*|#[^\n]*|/\*.*?\*/|\s)+", " ", code, flags=re.S).strip()
    match = re.match(r"[A-Za-z]+", stripped)
    word = match.group(0).upper() if match else ""
    if word in _KEYWORD_ALIASES:
        return _KEYWORD_ALIASES[word]
    return word if word in _KEYWORD_TYPES else "OTHER"


_NAME_TOKENS = (TokenType.VAR, TokenType.IDENTIFIER)
_TABLE_INTRO = {"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "TABLES", "ONLY", "EXISTS"}
_NOT_TABLES = {"OUTFILE", "DUMPFILE", "FULL", "VERBOSE", "FREEZE", "READ", "WRITE", "LOCAL", "LOW_PRIORITY",
               "IN", "MODE", "ACCESS", "SHARE", "EXCLUSIVE", "ROW", "NOWAIT", "CONCURRENTLY", "INDEX", "SCHEMA",
               "DATABASE", "SYSTEM", "NO_WRITE_TO_BINLOG", "QUICK", "EXTENDED", "USE_FRM", "MATERIALIZED",
               "VIEW", "TABLE", "TABLES", "ONLY", "CASCADE", "RESTRICT", "SKIP_LOCKED", "DISABLE_PAGE_SKIPPING",
               "INDEX_CLEANUP", "PROCESS_TOAST", "TRUNCATE", "PARALLEL", "WITH", "DATA", "NO", "INTO", "ALL",
               "UPDATE", "MEDIUM", "CHANGED", "FOR", "UPGRADE", "ANALYZE", "IF", "NOT", "CONNECTION", "TO"}


def _read_name(toks: list[Token], i: int) -> tuple[str | None, int]:
    if i >= len(toks) or toks[i].token_type not in _NAME_TOKENS or toks[i].text.upper() in _NOT_TABLES:
        return None, i + 1
    parts = [toks[i].text.lower()]
    i += 1
    while i + 1 < len(toks) and toks[i].token_type == TokenType.DOT and toks[i + 1].token_type in _NAME_TOKENS:
        parts.append(toks[i + 1].text.lower())
        i += 2
    return ".".join(parts), i


def _guess_tables(toks: list[Token], all_names: bool = False, first_name: bool = False) -> set[str]:
    """Table names from tokens, for statements without a tree: best effort, for reviewers."""
    out: set[str] = set()
    i = 1
    while i < len(toks):
        up = toks[i].text.upper()
        intro = (toks[i].token_type not in _NAME_TOKENS and up in _TABLE_INTRO)
        if all_names or first_name:
            if up in ("USING", "ON", "TO", "AS"):  # CLUSTER t USING index, RENAME TABLE a TO b: skip what follows
                i += 1 if up == "TO" else 2
                continue
            name, j = _read_name(toks, i)
            if name:
                out.add(name)
                if first_name:
                    return out
                i = j
                continue
            i += 1
            continue
        if intro:
            name, j = _read_name(toks, i + 1)
            if name:
                out.add(name)
                i = j
                continue
        i += 1
    return out
