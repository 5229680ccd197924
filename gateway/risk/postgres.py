"""PostgreSQL's reading of a cell (pglast): statements, decoded names, and what sqlglot must agree with.

PostgreSQL's own parser splits the cell and gives the decoded names of functions, operators,
casts and tables; a pure query is read from its tree alone, other statements by sqlglot (one at
a time, so one statement it cannot read does not hide what the others do), checked against
what the parser says.
"""

from __future__ import annotations

import json
from typing import Any

from cellgate.kernels.sql.split import split_postgres
from .model import Findings, Risk
from .text import _snippet
from .functions import _function_rule, known_function, known_operator, known_type
from .context import _Ctx, _function, _Stmt, _unknown
from .keywords import _first_word_type, _tokens_or_text
from .lexical import _pg_doubts, _pg_version_doubts
from .statements import _sqlglot_statements
from .cell import _check_time, _multiple, _risk


def _analyze_postgres(code: str, ctx: _Ctx, deadline: float | None) -> Risk:
    """PostgreSQL: PostgreSQL's own parser for the statements and names, sqlglot for the rest."""
    cell = Findings()
    pg = split_postgres(code)
    _check_time(deadline, pg.texts)
    if pg.error is not None:
        cell.add("sql.unparseable", f"PostgreSQL's parser rejects the cell: {_snippet(pg.error, 100)}", "unparseable")
    if not pg.scanned:
        st = _Stmt(_first_word_type(code))
        _tokens_or_text(ctx, st, code)
        return _risk(cell, [st], texts=pg.texts)
    _pg_version_doubts(code, cell)
    statements: list[_Stmt] = []
    functions: set[str] = set()
    normalized: list[str] = []
    for i, text in enumerate(pg.texts):
        _check_time(deadline, pg.texts)
        tree = pg.trees[i] if pg.trees is not None else _pg_parse_alone(text)
        sub = _Ctx(text, "postgres")
        facts = _pg_facts(tree) if tree is not None else None
        if facts is not None and tree is not None and facts.pure_query():
            # a query without INTO, FOR UPDATE or a write inside: PostgreSQL's own reading says all there is
            found = [_Stmt("VALUES" if _pg_is_values(tree) else "SELECT")]
            found[0].read_only = True
        else:
            found = _sqlglot_statements(sub, text)
        if facts is not None and tree is not None:  # facts come from a tree
            functions.update(facts.function_names())
            for st in found:
                _pg_apply(st, facts, tree)
            _pg_agree(found, facts, sub)
        elif pg.trees is None:
            for st in found:
                st.add("sql.unparseable", f"PostgreSQL's parser rejects this statement: {_snippet(text)}", "unparseable")
        statements.extend(found)
        normalized.append(_pg_normalized(text))
        _pg_doubts(text, cell)
    _multiple(cell, statements)
    return _risk(cell, statements, texts=pg.texts, functions=functions, normalized=normalized)


def _pg_parse_alone(text: str) -> dict[str, Any] | None:
    """The parser's tree of one statement of a cell the parser rejected, or None when it rejects it too."""
    from pglast import parser

    try:
        stmts = json.loads(parser.parse_sql_json(text)).get("stmts", [])
    except Exception:  # the statement the parser rejects
        return None
    return stmts[0].get("stmt", {}) if len(stmts) == 1 else None


_PG_WRITES = {"InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"}
_PG_READ_STATEMENTS = {"SelectStmt", "ExplainStmt", "VariableShowStmt"}
_PG_TABLE_OBJECTS = {"OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW", "OBJECT_FOREIGN_TABLE", "OBJECT_SEQUENCE"}


class _PgFacts:
    """What PostgreSQL's parser says one statement contains (names decoded as the server decodes them)."""

    def __init__(self) -> None:
        self.kind = ""
        self.funcs: list[tuple[str, ...]] = []
        self.ops: list[tuple[str, ...]] = []
        self.types: list[tuple[str, ...]] = []
        self.tables: set[str] = set()
        self.ctes: set[str] = set()
        self.writes: set[str] = set()
        self.clauses: set[str] = set()     # intoClause, lockingClause
        self.explain_analyze = False
        self.ranges: set[str] = set()      # names a FROM item is known by (alias, or the table's own name)
        self.row_uses: list[tuple[str, str]] = []  # (where, name): a bare name passed to a function, cast, operator

    def pure_query(self) -> bool:
        """A SELECT (or VALUES) without INTO, FOR UPDATE/SHARE or a write inside: a read, to the parser."""
        return self.kind == "SelectStmt" and not self.clauses and not self.writes

    def function_names(self) -> set[str]:
        return {".".join(name).lower() for name in self.funcs}


def _pg_is_values(tree: dict[str, Any]) -> bool:
    return bool(tree.get("SelectStmt", {}).get("valuesLists"))


def _pg_names(items: Any) -> tuple[str, ...]:
    out = []
    for item in items or ():
        value = item.get("String", {}).get("sval") if isinstance(item, dict) else None
        if isinstance(value, str):
            out.append(value)
    return tuple(out)


def _pg_facts(tree: dict[str, Any]) -> _PgFacts:
    facts = _PgFacts()
    facts.kind = next(iter(tree), "")
    top = tree.get(facts.kind, {})
    if facts.kind == "ExplainStmt":
        facts.explain_analyze = any(opt.get("DefElem", {}).get("defname") == "analyze"
                                    for opt in top.get("options") or [])
    if facts.kind == "DropStmt" and top.get("removeType") in _PG_TABLE_OBJECTS:
        for obj in top.get("objects") or []:
            facts.tables.add(".".join(_pg_names(obj.get("List", {}).get("items"))).lower())
    relations: list[dict[str, Any]] = []
    stack: list[Any] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if "relname" in node:
            relations.append(node)
            facts.ranges.add(str((node.get("alias") or {}).get("aliasname") or node.get("relname")))
        for key, value in node.items():
            if key == "FuncCall":
                name = _pg_names(value.get("funcname"))
                facts.funcs.append(name)
                facts.row_uses.extend((f"{'.'.join(name)}()", arg) for arg in map(_bare_name, value.get("args") or ())
                                      if arg)
            elif key == "A_Expr":
                name = _pg_names(value.get("name"))
                facts.ops.append(name)
                facts.row_uses.extend((f"operator {'.'.join(name)}", arg) for arg in
                                      map(_bare_name, (value.get("lexpr"), value.get("rexpr"))) if arg)
            elif key == "TypeCast":
                name = _pg_names((value.get("typeName") or {}).get("names"))
                facts.types.append(name)
                arg = _bare_name(value.get("arg"))
                if arg:
                    facts.row_uses.append((f"a cast to {'.'.join(name)}", arg))
            elif key in ("RangeSubselect", "RangeFunction") and isinstance(value.get("alias"), dict):
                facts.ranges.add(str(value["alias"].get("aliasname")))
            elif key == "CommonTableExpr":
                facts.ctes.add(str(value.get("ctename", "")).lower())
            elif key in _PG_WRITES and node is not tree:
                facts.writes.add(key)
            elif key in ("intoClause", "lockingClause"):
                facts.clauses.add(key)
            if isinstance(value, (dict, list)):
                stack.append(value)
    for rel in relations:
        parts = [rel.get("catalogname"), rel.get("schemaname"), rel.get("relname")]
        table = ".".join(str(p) for p in parts if p).lower()
        if table and not ("." not in table and table in facts.ctes):
            facts.tables.add(table)
    return facts


def _bare_name(node: Any) -> str | None:
    """The name of a one-part column reference (``a``, ``a.*``), which may be a whole row."""
    ref = node.get("ColumnRef") if isinstance(node, dict) else None
    fields = (ref or {}).get("fields") or []
    if fields and (len(fields) == 1 or (len(fields) == 2 and "A_Star" in fields[1])):
        value = fields[0].get("String", {}).get("sval") if isinstance(fields[0], dict) else None
        return value if isinstance(value, str) else None
    return None


def _pg_apply(st: _Stmt, facts: _PgFacts, tree: dict[str, Any]) -> None:
    """Add what PostgreSQL's parser found: decoded tables and functions, operators and casts not built in."""
    if facts.tables:  # the parser's names are decoded (U&"\0061", "Quoted"): they replace sqlglot's guesses
        st.tables = set(facts.tables)
    for name in facts.funcs:
        written = ".".join(name)
        if not name:
            continue
        if _function_rule(name[-1]) is not None:
            _function(st, name[-1])
            continue
        schema = _schema_of(name)
        if not known_function(name[-1], "postgres", schema):
            _unknown(st, f"{written}() is not on the allow-list of PostgreSQL functions without side effects "
                     "(a user-defined function, or a built-in that changes or reaches something)")
    for name in facts.ops:
        schema = _schema_of(name)
        if name and not known_operator(name[-1], schema):
            _unknown(st, f"operator {'.'.join(name)} is not a built-in PostgreSQL operator: it calls a function "
                     "the analysis cannot see")
    for where, row in facts.row_uses:
        if row in facts.ranges:
            _unknown(st, f"the whole row {row} is passed to {where}: a user-defined function, operator or cast "
                     "for that row type may be the one that runs")
    for name in facts.types:
        schema = _schema_of(name)
        if name and not known_type(name[-1], schema):
            _unknown(st, f"a cast to type {'.'.join(name)}, which is not built in: its input function or domain "
                     "check may be user-defined")


def _schema_of(name: tuple[str, ...] | list[str]) -> str | None:
    """The schema of a qualified name: ``None`` when unqualified, ``""`` when it has a catalog too
    (never a built-in's: a three-part name is not what the allow-lists know)."""
    if len(name) == 2:
        return name[0]
    return "" if len(name) > 2 else None


def _pg_agree(found: list[_Stmt], facts: _PgFacts, ctx: _Ctx) -> None:
    """sqlglot must not call read-only what PostgreSQL's parser reads as anything else."""
    pure = facts.kind in _PG_READ_STATEMENTS and not facts.clauses and not facts.writes
    if facts.kind == "ExplainStmt" and not facts.explain_analyze:
        pure = True  # EXPLAIN plans the statement, it does not run it (functions are checked all the same)
    for st in found:
        if st.read_only and not pure:
            st.read_only = False
            st.add("sql.unparseable", f"sqlglot reads a pure read where PostgreSQL's parser reads {facts.kind}: "
                   f"{_snippet(ctx.code)}", "unparseable")


def _pg_normalized(text: str) -> str:
    from pglast import parser

    try:
        tokens = parser.scan(text)
    except Exception:  # cannot happen for a text the cell's scan read; keep the text as it is
        return text
    return " ".join(text[t.start:t.end + 1] for t in tokens if t.name not in ("SQL_COMMENT", "C_COMMENT"))
