"""The rules on a statement sqlglot parsed into a tree: what each statement type does, tables, effects.

:func:`_analyze_tree` classifies a parsed statement (reads, DML without WHERE or with a
tautological one, DDL, DCL, SET, COPY, PRAGMA…), collects its tables and checks every function it
calls and every write hidden in a CTE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlglot import exp
from sqlglot.tokens import Token, TokenType

from .text import _list, _on, _snippet
from .context import _Ctx, _function, _Node, _node_class, _Stmt, _STRING_TOKENS


_GRANTS = {c for c in (_node_class("Grant"), _node_class("Revoke")) if c}
_DML = tuple(c for c in (_node_class("Insert"), _node_class("Update"), _node_class("Delete"), _node_class("Merge")) if c)


class _Nodes:
    """The nodes of a tree the analysis looks at, collected in one walk."""

    def __init__(self, tree: exp.Expr) -> None:
        self.tables: list[exp.Table] = []
        self.ctes: list[exp.CTE] = []
        self.selects: list[exp.Select] = []
        self.funcs: list[exp.Func] = []
        self.dml: list[exp.Expr] = []
        for node in tree.dfs():
            if isinstance(node, exp.Table):
                self.tables.append(node)
            elif isinstance(node, exp.Select):
                self.selects.append(node)
            elif isinstance(node, exp.Func):
                self.funcs.append(node)
            elif isinstance(node, exp.CTE):
                self.ctes.append(node)
            elif isinstance(node, _DML) and node is not tree:
                self.dml.append(node)


def _analyze_tree(ctx: _Ctx, st: _Stmt, tree: exp.Expr, toks: list[Token]) -> None:
    nodes = _Nodes(tree)
    st.tables = _tables(tree, nodes)
    on = _on(st.tables)
    kind = st.kind
    if isinstance(tree, (exp.Select, exp.Subquery, exp.Values)) or kind == "SELECT":
        st.read_only = True
        _select_effects(st, nodes)
        if toks[0].text.upper() not in ("SELECT", "WITH", "(", "VALUES", "TABLE", "EXPLAIN", "DESC", "DESCRIBE",
                                         "ANALYZE", "REPLACE"):  # sqlglot also reads FROM t SELECT …
            st.read_only = False
            st.add("sql.unparseable", f"a query that does not start with SELECT, WITH or VALUES, which the server "
                   f"rejects: {_snippet(ctx.text(toks))}", "unparseable")
        if _dangling(toks[-1]):  # "SELECT 2 AS", "SELECT x IS": sqlglot reads them, servers do not
            st.read_only = False
            st.add("sql.unparseable", f"a query that ends in {toks[-1].text.upper()}, which the server rejects: "
                   f"{_snippet(ctx.text(toks))}", "unparseable")
        if any(isinstance(star.parent, exp.Binary) for star in tree.find_all(exp.Star)):  # sqlglot reads "* / 1"
            st.read_only = False
            st.add("sql.unparseable", f"* used as a value, which the server rejects: {_snippet(ctx.text(toks))}",
                   "unparseable")
        hidden = _reserved_alias(ctx, tree)
        if hidden:  # "SELECT 1 DELETE FROM t": sqlglot reads an alias, MySQL/SQLite a statement keyword
            st.read_only = False
            st.add("sql.unparseable", f"the reserved word {hidden} stands where sqlglot reads a name (an alias) and "
                   f"{ctx.name} a keyword: {_snippet(ctx.text(toks))}", "unparseable")
        if any(not select.expressions for select in nodes.selects):  # sqlglot accepts a bare SELECT, servers do not
            st.read_only = False
            st.add("sql.unparseable", f"a SELECT without a select list, which the server rejects: "
                   f"{_snippet(ctx.text(toks))}", "unparseable")
    elif isinstance(tree, exp.Insert):
        _insert(ctx, st, tree, toks)
    elif isinstance(tree, (exp.Update, exp.Delete)):
        _update_delete(st, tree, top=True)
        st.explain.append(ctx.text(toks))
        st.no_explain = ctx.sg == "mysql" and bool(nodes.selects or tree.find(exp.Subquery))
    elif kind == "MERGE":
        st.add("sql.dml", f"MERGE into {_target(tree)} adds, changes or deletes rows it matches", "write")
    elif kind == "CREATE":
        _create(ctx, st, tree)
    elif kind == "DROP":
        _drop(st, tree)
    elif kind == "ALTER":
        _alter(st, tree)
    elif kind == "TRUNCATE":
        st.add("sql.truncate", f"TRUNCATE{on}: every row is deleted at once, without a WHERE clause",
               "truncate", "write")
    elif kind in ("GRANT", "REVOKE"):
        st.add("sql.dcl", f"{kind}{on or ''} changes who may do what: {_snippet(ctx.text(toks))}", "dcl")
    elif kind == "SET":
        _set(st, tree)
    elif kind == "USE":
        st.add("sql.session_change", f"USE {tree.name or ''} switches the database of this session".replace("  ", " "),
               "session_change")
    elif kind in ("BEGIN", "COMMIT", "ROLLBACK"):
        st.add("sql.transaction_control", f"{kind} controls the transaction", "transaction_control")
    elif kind in ("SHOW", "DESCRIBE"):
        st.read_only = True
    elif kind == "COPY":
        _copy(st, tree)
    elif kind == "PRAGMA":
        _pragma(st, tree)
    elif kind == "ATTACH":
        st.add("sql.file_write", "ATTACH DATABASE opens (and creates, if missing) a database file on the server, "
               "which later statements can write", "file_write", "session_change")
    elif kind == "DETACH":
        st.add("sql.session_change", "DETACH DATABASE closes an attached database", "session_change")
    elif kind == "ANALYZE":
        st.add("sql.maintenance", f"ANALYZE{on} updates planner statistics")
    elif kind == "KILL":
        st.add("sql.server_access", f"KILL ends another connection or its query: {_snippet(ctx.text(toks))}",
               "side_effect_function")
    elif kind == "COMMENT":
        st.add("sql.ddl", f"COMMENT ON changes the schema's documentation{on}", "ddl")
    _functions_in_tree(st, nodes)
    _writes_in_ctes(st, nodes)


_DANGLING_WORDS = {"AS", "IS", "NOT", "AND", "OR", "XOR", "LIKE", "IN", "BY", "ON", "JOIN", "SELECT", "FROM", "WHERE",
                   "HAVING", "LIMIT", "OFFSET", "UNION", "EXCEPT", "INTERSECT", "BETWEEN", "CASE", "WHEN", "THEN",
                   "ELSE", "DISTINCT", "ESCAPE", "COLLATE", "INTERVAL", "REGEXP", "RLIKE", "GLOB", "DIV"}
_DANGLING_TYPES = {t for t in (getattr(TokenType, n, None) for n in (
    "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "PLUS", "DASH", "SLASH", "MOD", "L_PAREN", "L_BRACKET", "DOT", "COMMA",
    "COLON", "CARET", "AMP", "PIPE", "DPIPE", "NULLSAFE_EQ", "COLON_EQ", "TILDA", "LSHIFT", "RSHIFT")) if t is not None}


#: words MySQL/MariaDB and SQLite reserve: never an unquoted alias there (PostgreSQL is read by its own parser)
_RESERVED = {"mysql": frozenset({"DELETE", "UPDATE", "INSERT", "REPLACE", "DROP", "CREATE", "ALTER", "GRANT", "REVOKE",
                                 "RENAME", "CALL", "LOAD", "LOCK", "UNLOCK", "SET", "SELECT", "WITH", "VALUES", "INTO",
                                 "FROM", "WHERE"}),
             "sqlite": frozenset({"DELETE", "UPDATE", "INSERT", "DROP", "CREATE", "SELECT", "VALUES", "INTO", "FROM",
                                  "WHERE"})}


def _reserved_alias(ctx: _Ctx, tree: exp.Expr) -> str | None:
    """An unquoted alias the server would read as a reserved keyword (the analysis cannot know what follows)."""
    reserved = _RESERVED.get(ctx.sg, frozenset())
    for node in tree.find_all(exp.Alias, exp.TableAlias):
        alias = node.args.get("alias") if isinstance(node, exp.Alias) else node.args.get("this")
        if isinstance(alias, exp.Identifier) and not alias.quoted and alias.name.upper() in reserved:
            return alias.name.upper()
    return None


def _dangling(tok: Token) -> bool:
    """Whether a statement cannot end with this token (an operator, AS, IS…)."""
    if tok.token_type in _STRING_TOKENS or tok.token_type in (TokenType.IDENTIFIER, TokenType.VAR, TokenType.NUMBER):
        return False
    return tok.token_type in _DANGLING_TYPES or tok.text.upper() in _DANGLING_WORDS


def _select_effects(st: _Stmt, nodes: _Nodes) -> None:
    for select in nodes.selects:
        into = select.args.get("into")
        if into is not None:
            target = into.this
            if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
                name = _table_name(target)
                st.read_only = False
                st.add("sql.select_into", f"SELECT … INTO {name} creates table {name}", "select_into", "write", "ddl")
            else:
                st.read_only = False
                st.add("sql.session_change", "SELECT … INTO a variable sets session variables", "session_change")
        locks = select.args.get("locks") or []
        if locks:
            mode = "FOR UPDATE" if any(lock.args.get("update") for lock in locks) else "FOR SHARE"
            st.read_only = False
            st.add("sql.lock", f"SELECT … {mode} locks the rows it reads{_on(_tables(select))} until the "
                   "transaction ends", "lock")


def _insert(ctx: _Ctx, st: _Stmt, tree: exp.Insert, toks: list[Token]) -> None:
    target = _target(tree)
    verb = "REPLACE" if toks[0].text.upper() == "REPLACE" else "INSERT"
    conflict = tree.args.get("conflict")
    source = tree.expression
    detail = ""
    if verb == "REPLACE" or str(tree.args.get("alternative") or "").upper() == "REPLACE":
        detail = " (rows with the same key are deleted first)"
    elif conflict is not None:
        action = "ON DUPLICATE KEY UPDATE" if conflict.args.get("duplicate") else f"ON CONFLICT {conflict.args.get('action') or ''}".strip()
        if "UPDATE" in action.upper():
            detail = f" with {action}: adds or changes rows"
    if isinstance(source, (exp.Select, exp.SetOperation, exp.Subquery)):
        sources = _tables(source)
        detail += f" from a SELECT{_on(sources)}" if sources else " from a SELECT"
    st.add("sql.dml", f"{verb} into {target}{detail}", "write")


def _update_delete(st: _Stmt, node: exp.Expr, top: bool) -> None:
    verb = "UPDATE" if isinstance(node, exp.Update) else "DELETE"
    target = _target(node)
    where = node.args.get("where")
    consequence = "every row changes" if verb == "UPDATE" else "every row is deleted"
    if where is None:
        flag = "update_without_where" if verb == "UPDATE" else "delete_without_where"
        st.add(f"sql.{flag}", f"{verb} on {target} has no WHERE clause: {consequence}", flag, "write")
        return
    why = _always_true(where.this)
    if why:
        st.add("sql.tautological_where", f"{verb} on {target} has a WHERE clause that is always true ({why}): "
               f"{consequence}", "tautological_where", "write")
        return
    if top:
        st.add("sql.dml", f"{verb} on {target} changes the rows its WHERE clause matches" if verb == "UPDATE"
               else f"{verb} on {target} deletes the rows its WHERE clause matches", "write")


def _create(ctx: _Ctx, st: _Stmt, tree: exp.Expr) -> None:
    kind = str(tree.args.get("kind") or "").upper()
    name = _object_name(tree.this)
    props = tree.args.get("properties")
    temporary = bool(props and any(isinstance(p, exp.TemporaryProperty) for p in props.expressions))
    materialized = bool(props and any(isinstance(p, exp.MaterializedProperty) for p in props.expressions))
    with_data = (kind == "TABLE" or materialized) and isinstance(tree.expression, (exp.Select, exp.SetOperation, exp.Subquery))
    if kind in ("USER", "ROLE"):
        st.add("sql.dcl", f"CREATE {kind} {name} adds an account", "dcl", "ddl")
    elif kind == "TABLE" and temporary:
        flags = ("ddl", "write") if with_data else ("ddl",)
        st.add("sql.temp_table", f"CREATE TEMPORARY TABLE {name}: visible to this session only", *flags)
    elif kind == "INDEX":
        name = tree.this.name.lower() if isinstance(tree.this, exp.Index) and tree.this.name else name
        table = _list(sorted(st.tables)) or "a table"
        how = ("" if tree.args.get("concurrently") or ctx.sg != "postgres"
               else " (without CONCURRENTLY it blocks writes to the table while it builds)")
        st.add("sql.ddl", f"CREATE INDEX {name} on {table}{how}", "ddl")
    else:
        what = f"CREATE {'MATERIALIZED ' if materialized else ''}{kind} {name}".rstrip() if kind else "CREATE"
        detail = " from a SELECT, writing its rows" if with_data else ""
        flags = ("ddl", "write") if with_data else ("ddl",)
        st.add("sql.ddl", f"{what} changes the schema{detail}", *flags)


def _drop(st: _Stmt, tree: exp.Expr) -> None:
    kind = str(tree.args.get("kind") or "").upper()
    if tree.args.get("materialized"):
        kind = f"MATERIALIZED {kind}"
    names = _list([_object_name(t) for t in tree.args.get("tables") or []]) or "?"
    if kind in ("USER", "ROLE"):
        st.add("sql.dcl", f"DROP {kind} {names} removes an account", "dcl", "drop", "ddl")
        return
    what = {"TABLE": "the table and its data are gone", "DATABASE": "the database and all its data are gone",
            "SCHEMA": "the schema and everything in it are gone"}.get(kind, "it is gone")
    st.add("sql.drop", f"DROP {kind} {names}: {what}".replace("  ", " "), "drop", "ddl", "write")


def _alter(st: _Stmt, tree: exp.Expr) -> None:
    kind = str(tree.args.get("kind") or "TABLE").upper()
    name = _object_name(tree.this)
    if kind in ("USER", "ROLE"):
        st.add("sql.dcl", f"ALTER {kind} {name} changes an account", "dcl", "alter", "ddl")
        return
    drops = [a for a in tree.args.get("actions") or [] if isinstance(a, exp.Drop)]
    lost = [str(a.args.get("kind") or "").upper() for a in drops
            if str(a.args.get("kind") or "").upper() in ("COLUMN", "PARTITION", "")]
    if lost:
        st.add("sql.drop", f"ALTER {kind} {name} drops a {lost[0].lower() or 'column'}: its data is gone",
               "drop", "alter", "ddl", "write")
    else:
        st.add("sql.alter", f"ALTER {kind} {name} changes the schema", "alter", "ddl")


def _set(st: _Stmt, tree: exp.Expr) -> None:
    server_wide = False
    for item in tree.expressions:
        kind = str(item.args.get("kind") or "").upper()
        if kind in ("GLOBAL", "PERSIST", "PERSIST_ONLY"):
            server_wide = True
        for param in item.find_all(exp.SessionParameter):
            if str(param.args.get("kind") or "").lower() in ("global", "persist", "persist_only"):
                server_wide = True
    if server_wide:
        st.add("sql.server_setting", "SET GLOBAL changes a setting for every session on the server", "session_change")
    else:
        st.add("sql.session_change", "SET changes a setting of this session", "session_change")


def _copy(st: _Stmt, tree: exp.Expr) -> None:
    into_table = bool(tree.args.get("kind"))  # True: COPY … FROM (into the table)
    files = tree.args.get("files") or []
    names = [f.name.upper() for f in files if isinstance(f, exp.Identifier)]
    on = _on(st.tables)
    if into_table:
        st.flags.add("write")
    if "PROGRAM" in names:
        st.add("sql.server_access", f"COPY{on} {'FROM' if into_table else 'TO'} PROGRAM runs a shell command on "
               "the database server", "copy", "side_effect_function")
    elif any(isinstance(f, exp.Literal) and f.is_string for f in files):
        if into_table:
            st.add("sql.server_access", f"COPY{on} FROM a file reads a file on the database server into the table",
                   "copy", "write")
        else:
            st.add("sql.file_write", f"COPY{on} TO a file writes a file on the database server", "copy", "file_write")
    else:
        verb = "loads rows from the client into the table" if into_table else "streams rows to the client"
        st.add("sql.copy", f"COPY{on} {verb}", "copy", *(("write",) if into_table else ()))


_PRAGMA_READ_ARG = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
                    "foreign_key_check", "integrity_check", "quick_check", "table_list"}
_PRAGMA_READ = {"database_list", "collation_list", "function_list", "module_list", "pragma_list", "compile_options",
                "user_version", "schema_version", "application_id", "page_count", "page_size", "freelist_count",
                "encoding", "journal_mode", "foreign_keys", "data_version", "max_page_count", "cache_size",
                "busy_timeout", "auto_vacuum", "synchronous", "temp_store", "recursive_triggers", "secure_delete",
                "automatic_index", "cell_size_check", "defer_foreign_keys", "ignore_check_constraints",
                "locking_mode", "mmap_size", "query_only", "read_uncommitted", "reverse_unordered_selects",
                "threads", "trusted_schema", "wal_autocheckpoint", "legacy_alter_table", "case_sensitive_like",
                "hard_heap_limit", "soft_heap_limit", "analysis_limit", "cache_spill", "checkpoint_fullfsync",
                "fullfsync", "journal_size_limit"} | _PRAGMA_READ_ARG
_PRAGMA_UNSAFE = {"writable_schema", "schema_version", "trusted_schema", "journal_mode", "locking_mode",
                  "synchronous", "ignore_check_constraints", "foreign_keys", "query_only"}


def _pragma(st: _Stmt, tree: exp.Expr) -> None:
    body = tree.this
    value = None
    if isinstance(body, exp.EQ):
        body, value = body.this, body.expression
    name = (body.expression if isinstance(body, exp.Dot) else body).name.lower() if body is not None else ""
    if (value is None and name in _PRAGMA_READ) or name in _PRAGMA_READ_ARG:
        st.read_only = True
        if name in _PRAGMA_READ_ARG and isinstance(value, (exp.Column, exp.Identifier, exp.Literal)):
            st.tables.add(value.name.lower())
        return
    if name in _PRAGMA_UNSAFE:
        st.add("sql.server_setting", f"PRAGMA {name} = … changes how the database file is read or written", "session_change")
    elif name in ("optimize", "wal_checkpoint", "incremental_vacuum", "shrink_memory"):
        st.add("sql.maintenance", f"PRAGMA {name} performs maintenance")
    else:
        st.add("sql.session_change", f"PRAGMA {name or '?'} changes a setting", "session_change")


def _functions_in_tree(st: _Stmt, nodes: _Nodes) -> None:
    for node in nodes.funcs:
        name = node.name if isinstance(node, exp.Anonymous) else node.sql_name()
        if isinstance(name, str):
            _function(st, name)


def _writes_in_ctes(st: _Stmt, nodes: _Nodes) -> None:
    for node in nodes.dml:
        if node.find_ancestor(exp.CTE) is None:
            continue
        verb = type(node).__name__.upper()
        st.read_only = False
        st.add("sql.write_in_cte", f"{verb} on {_target(node)} inside WITH: the statement writes although it "
               "ends in a SELECT", "write_in_cte", "write")
        if isinstance(node, (exp.Update, exp.Delete)):
            _update_delete(st, node, top=False)


def _tables(tree: exp.Expr, nodes: _Nodes | None = None) -> set[str]:
    nodes = nodes or _Nodes(tree)
    ctes = {cte.alias_or_name.lower() for cte in nodes.ctes}
    skip: set[int] = set()
    kind = str(tree.args.get("kind") or "").upper()
    if isinstance(tree, exp.Drop) and kind not in ("TABLE", "VIEW"):
        skip.update(id(t) for t in tree.args.get("tables") or [])
    if isinstance(tree, exp.Create) and kind not in ("TABLE", "VIEW", "INDEX", "TRIGGER", "") and isinstance(tree.this, _Node):
        skip.update(id(t) for t in tree.this.find_all(exp.Table))
    if type(tree) in _GRANTS and kind not in ("", "TABLE"):
        securable = tree.args.get("securable")
        if securable is not None:
            skip.add(id(securable))
    if isinstance(tree, exp.Delete):  # MySQL DELETE o, i FROM orders o JOIN items i: o and i are aliases
        aliases = {t.alias.lower() for t in nodes.tables if t.alias}
        skip.update(id(t) for t in tree.args.get("tables") or [] if isinstance(t, exp.Table) and t.name.lower() in aliases)
    out: set[str] = set()
    for table in nodes.tables:
        if id(table) in skip or not isinstance(table.this, exp.Identifier):
            continue
        name = _table_name(table)
        if "." not in name and name in ctes:
            continue
        out.add(name)
    return out


def _table_name(table: exp.Table) -> str:
    parts = [table.args.get("catalog"), table.args.get("db"), table.this]
    return ".".join(p.name.lower() for p in parts if isinstance(p, _Node) and p.name)


def _object_name(node: Any) -> str:
    if isinstance(node, exp.Table):
        return _table_name(node) or "?"
    if isinstance(node, _Node):
        inner = node.find(exp.Table)
        if inner is not None and _table_name(inner):
            return _table_name(inner)
        return node.name.lower() or "?"
    return "?"


def _target(node: exp.Expr) -> str:
    target = node.this
    if isinstance(target, exp.Schema):
        target = target.this
    if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
        return _table_name(target)
    tables = node.args.get("tables") or []  # MySQL multi-table DELETE t1, t2 FROM …
    aliases = {t.alias.lower(): _table_name(t) for t in node.find_all(exp.Table) if t.alias}
    names = [aliases.get(_table_name(t), _table_name(t)) for t in tables if isinstance(t, exp.Table)]
    return _list(names) if names else "?"


_TAUTOLOGY_OPS: dict[type[exp.Expr], Callable[[Any, Any], bool]] = {
    exp.EQ: lambda a, b: a == b, exp.NEQ: lambda a, b: a != b, exp.GT: lambda a, b: a > b,
    exp.GTE: lambda a, b: a >= b, exp.LT: lambda a, b: a < b, exp.LTE: lambda a, b: a <= b}
_NULLSAFE_EQ = _node_class("NullSafeEQ")


def _const(node: exp.Expr) -> Any:
    """The value of a literal (number, string, boolean), or a sentinel when it is not one."""
    if isinstance(node, exp.Paren):
        return _const(node.this)
    if isinstance(node, exp.Boolean):
        return bool(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return node.this
        try:
            return float(node.this)
        except ValueError:
            return _NOT_CONST
    if isinstance(node, exp.Neg):
        value = _const(node.this)
        return -value if isinstance(value, float) else _NOT_CONST
    return _NOT_CONST


_NOT_CONST = object()


def _always_true(node: exp.Expr | None) -> str | None:
    """Why a WHERE condition holds for every row (e.g. ``1 = 1``), or None."""
    if node is None:
        return None
    if isinstance(node, exp.Paren):
        return _always_true(node.this)
    if isinstance(node, exp.Or):  # long OR chains nest deeply: walk them without recursion
        return next(filter(None, map(_always_true, _operands(node, exp.Or))), None)
    if isinstance(node, exp.And):
        parts = [_always_true(part) for part in _operands(node, exp.And)]
        return " AND ".join(parts) if all(parts) else None  # type: ignore[arg-type]
    if isinstance(node, exp.Not):
        return f"NOT {node.this.sql()}" if _always_false(node.this) else None
    value = _const(node)
    if value is not _NOT_CONST:
        return node.sql() if (value is True or (isinstance(value, float) and value != 0)) else None
    op = type(node)
    if op in _TAUTOLOGY_OPS or (_NULLSAFE_EQ is not None and op is _NULLSAFE_EQ):
        left, right = node.this, node.expression
        if op in (exp.EQ, exp.GTE, exp.LTE, _NULLSAFE_EQ) and left == right and not left.find(exp.Func):
            return node.sql()
        a, b = _const(left), _const(right)
        if a is not _NOT_CONST and b is not _NOT_CONST and type(a) is type(b):
            compare = _TAUTOLOGY_OPS.get(op, _TAUTOLOGY_OPS[exp.EQ])
            try:
                return node.sql() if compare(a, b) else None
            except TypeError:
                return None
    if (isinstance(node, exp.Like) and isinstance(node.expression, exp.Literal) and node.expression.is_string
            and node.expression.this and set(node.expression.this) == {"%"}):
        return node.sql()
    return None


def _operands(node: exp.Expr, kind: type[exp.Expr]) -> list[exp.Expr]:
    """The operands of a chain of ``kind`` (a OR b OR c …), parentheses included, left to right."""
    out: list[exp.Expr] = []
    stack = [node]
    while stack:
        current = stack.pop()
        while isinstance(current, exp.Paren) and isinstance(current.this, kind):
            current = current.this
        if isinstance(current, kind):
            stack.extend((current.expression, current.this))
        else:
            out.append(current)
    return out


def _always_false(node: exp.Expr) -> bool:
    if isinstance(node, exp.Paren):
        return _always_false(node.this)
    if isinstance(node, exp.Not):
        return _always_true(node.this) is not None
    value = _const(node)
    if value is not _NOT_CONST:
        return value is False or value == 0.0
    op = type(node)
    if op in _TAUTOLOGY_OPS:
        a, b = _const(node.this), _const(node.expression)
        if a is not _NOT_CONST and b is not _NOT_CONST and type(a) is type(b):
            try:
                return not _TAUTOLOGY_OPS[op](a, b)
            except TypeError:
                return False
    return False
