"""Measure the two PostgreSQL readers of the risk analysis: sqlglot and pglast (libpg_query).

Run from the repository: ``.venv/bin/python benchmarks/risk_parsers.py`` (needs the PostgreSQL
server on 127.0.0.1:5432 for the "server" column). Prints, for tricky cells, how many statements
each reader sees and the function names it reports, then the time per statement of each reader
and of the whole analysis. docs/risk.md quotes its output.
"""

from __future__ import annotations

import json
import logging
import time

import psycopg
from pglast import parser
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import TokenType

from cellgate.gateway.risk import analyze_sql

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # its "falling back to Command" notes

TRICKY = [
    "SELECT 1 --\u00a0; DROP TABLE t",
    "SELECT U&\"\\0064blink_exec\"('h', 'x')",
    "SELECT E'\\';'; SELECT 2",
    "SELECT 1 -- c\r; SELECT 2",
    "SELECT 1 /* /* ; */ */; SELECT 2",
    "SELECT $a$;$a$; SELECT 2",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END",
    "SELECT \"lower\"('A'), \"Lower\"('A')",
]


def _sqlglot(cell: str) -> tuple[int | str, list[str]]:
    pg = Dialect.get_or_raise("postgres")
    try:
        tokens = pg.tokenize(cell)
    except Exception as exc:
        return f"error ({type(exc).__name__})", []
    count = sum(1 for a, b in zip([None, *tokens], tokens) if b.token_type != TokenType.SEMICOLON
                and (a is None or a.token_type == TokenType.SEMICOLON))
    try:
        names = [f.name if isinstance(f, exp.Anonymous) else f.sql_name()
                 for tree in pg.parse(cell) if tree is not None for f in tree.find_all(exp.Func)]
    except Exception as exc:
        names = [f"parse error ({type(exc).__name__})"]
    return count, names


def _pglast(cell: str) -> tuple[int | str, list[str]]:
    try:
        stmts = json.loads(parser.parse_sql_json(cell))["stmts"]
    except Exception as exc:
        return f"error ({type(exc).__name__})", []
    names: list[str] = []
    stack: list[object] = [stmts]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "FuncCall" in node:
                names.append(".".join(n["String"]["sval"] for n in node["FuncCall"]["funcname"]))
            stack.extend(node.values())
    return len(stmts), names


def _server(conn: psycopg.Connection, cell: str) -> int | str:
    cur = conn.cursor()
    try:
        cur.execute("BEGIN")
        cur.execute(cell)
        count = 1
        while cur.nextset():
            count += 1
        return count
    except psycopg.Error as exc:
        return f"error ({type(exc).__name__})"
    finally:
        conn.rollback()


def _per_call(fn, n: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    conn = psycopg.connect("host=127.0.0.1 port=5432 dbname=test user=postgres", autocommit=False)
    print("| cell | sqlglot: statements, functions | pglast: statements, functions | server: statements |")
    print("|---|---|---|---|")
    for cell in TRICKY:
        (sc, sn), (pc, pn) = _sqlglot(cell), _pglast(cell)
        print(f"| `{cell!r}` | {sc}, {sn} | {pc}, {pn} | {_server(conn, cell)} |")
    conn.close()
    simple = "SELECT * FROM accounts WHERE id = 1"
    join = ("SELECT a.id, lower(o.name), count(*) FROM public.accounts a JOIN orders o ON o.account_id = a.id "
            "WHERE o.total > 10 AND o.created_at > now() - interval '1 day' GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 10")
    pg = Dialect.get_or_raise("postgres")
    print()
    print("| statement | sqlglot parse | pglast parse_sql_json + json.loads | pglast scan | pglast parse_sql (objects) |"
          " whole analysis |")
    print("|---|---|---|---|---|---|")
    for name, sql in (("SELECT 1", "SELECT 1"), ("simple WHERE", simple), ("join/group", join)):
        row = [_per_call(lambda: pg.parse(sql), 300), _per_call(lambda: json.loads(parser.parse_sql_json(sql)), 2000),
               _per_call(lambda: parser.scan(sql), 2000), _per_call(lambda: parser.parse_sql(sql), 2000),
               _per_call(lambda: analyze_sql(sql, "postgresql"), 300)]
        print(f"| {name} | " + " | ".join(f"{v:.3f} ms" for v in row) + " |")
    print()
    print("| dialect | SELECT 1 | simple WHERE | join/group | 20,000 × `SELECT 1;` (200 kB) | one 1 MiB string literal |")
    print("|---|---|---|---|---|---|")
    big, literal = "SELECT 1;\n" * 20000, "SELECT '" + "x" * (1 << 20) + "'"
    for dialect in ("postgresql", "mysql", "sqlite"):
        row = [_per_call(lambda: analyze_sql(q, dialect), 300) for q in ("SELECT 1", simple, join)]
        start = time.perf_counter()
        analyze_sql(big, dialect)
        many = time.perf_counter() - start
        start = time.perf_counter()
        analyze_sql(literal, dialect)
        one = time.perf_counter() - start
        print(f"| {dialect} | " + " | ".join(f"{v:.2f} ms" for v in row) + f" | {many:.1f} s | {one:.2f} s |")


if __name__ == "__main__":
    main()
