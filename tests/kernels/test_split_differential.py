"""Differential tests: the statements the analysis reports are the statements the server runs.

Cells are put together from fragments (SELECTs, string literals holding ``;``, quotes and
backslashes, dollar quotes, ``--``/``#``/``/* */`` comments, nested comments, non-ASCII spaces,
U& identifiers, semicolons). For every cell the analysis calls parsed, the real server must agree
with the split (``Risk.texts``, which is ``split_statements``):

- each piece is exactly one statement: it runs alone through a protocol call that refuses a
  second statement (psycopg's extended protocol, PyMySQL without CLIENT.MULTI_STATEMENTS,
  sqlite3's ``execute``);
- the whole text, sent through the protocol that does run several statements (PostgreSQL's
  simple query protocol, MariaDB with CLIENT.MULTI_STATEMENTS, SQLite's own
  ``sqlite3_prepare_v2`` tail stepping), gives as many results as there are pieces.

A statement that fails when it runs (an unknown column, an operator that does not exist) was
still read as one statement, so only syntax errors count as disagreement. For MariaDB and
SQLite, whose grammars sqlglot reads more leniently (``SELECT 'x' NULL``), a piece the server
rejects on its own ran nothing: what counts there is a piece holding a second statement, a
whole text the server rejects although every piece runs, or a different count.

Whenever the server and the split disagree, the analysis must have said unparseable. Only
read-only statements without tables are generated, so nothing on the servers changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sqlite3

import psycopg
import pymysql
import pytest
from databases import DATABASE, MARIADB_SERVER
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pymysql.constants import CLIENT

from cellgate.gateway.risk import analyze_sql
from cellgate.kernels.sql.split import split_statements

PG_DSN = f"host=127.0.0.1 port=5432 dbname={DATABASE} user=postgres connect_timeout=5"

#: CELLGATE_DIFFERENTIAL_EXAMPLES=5000 for a longer hunt; 150 keeps the suite fast
_SETTINGS = settings(max_examples=int(os.environ.get("CELLGATE_DIFFERENTIAL_EXAMPLES", "150")), deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])

_STATEMENTS = [
    "SELECT 1", "SELECT 'a;b'", "SELECT 'it''s;'", "SELECT 2 AS x", "SELECT 'a\\'", "SELECT 'a\\';'",
    "SELECT '--;'", "SELECT '/*;'", "SELECT 1 /* ; */", "SELECT 1 -- c;\n", "SELECT 1 --1", "SELECT 'x' || 'y'",
    "SELECT 1 + -1", "SELECT 'é;ü'", "SELECT 1 -- \r; SELECT 5", "SELECT\u00a01", "SELECT 1\u3000",
    "SELECT 3 --\u00a0; SELECT 4",
]
_SEPARATORS = [";", "; ", ";\n", " ; -- c;\n", ";/* ; */", " -- x\n;", "\n;\n", ";\t", "; --", ";\u00a0"]
_NOISE = [
    ";", ";;", " ", "\n", "\r", "-- c;\n", "--;\n", "--", "/* ; */", "/* /* ; */ */", "*/", "/*", "'", "''",
    "\\", "\u00a0", "\u2000", "\u200b", "\u3000", "\ufeff", "\u0085", "\u2028", "\x0b", "\x0c", "--\u00a0",
    "\u00a0--", '"',
]
_PG = (_STATEMENTS + [
    "SELECT $$a;b$$", "SELECT $x$;$x$", "SELECT $x$ $$ ; $x$", "SELECT E'\\';'", "SELECT E'a\\\\'",
    'SELECT 1 AS U&"\\0061"', "SELECT U&'\\0041;'", 'SELECT 1 AS "a;b"', "SELECT U&'!0041;' UESCAPE '!'",
    "SELECT 1 /* a /* b */ ; c */",
], _SEPARATORS + [";;"], _NOISE + ["$$", "$x$", "E'", "U&"])
_MY = (_STATEMENTS + [
    "SELECT 1 # c;\n", "SELECT `a;b` FROM (SELECT 1 AS `a;b`) s", "SELECT 'a\\\\'", 'SELECT "a;b"',
    "SELECT 1 /*! , 7 */", "SELECT 1 #\r; SELECT 6", "SELECT _utf8mb4'x;'", "SELECT N'x;'", "SELECT x'41'",
    "SELECT @@version_comment IS NULL", "SELECT 1 /* a /* b */",
], _SEPARATORS + ["; # x;\n"], _NOISE + ["#", "# x;\n", "/*!", "/*M!", "`"])
_LITE = (_STATEMENTS + [
    "SELECT [a;b] FROM (SELECT 1 AS [a;b])", "SELECT `a;b` FROM (SELECT 1 AS `a;b`)", 'SELECT "a;b"',
    "SELECT x'41'", "SELECT 1 /* ;",
], _SEPARATORS + [";;"], _NOISE + ["[", "`"])


def _insert(base: str, noise: list[tuple[int, str]]) -> str:
    """Drop fragments into ``base``, never inside a word (that tests sqlglot's grammar, not the split)."""
    for position, fragment in noise:
        at = position % (len(base) + 1)
        while 0 < at < len(base) and base[at - 1].isalnum() and base[at].isalnum():
            at += 1
        base = base[:at] + fragment + base[at:]
    return base


def _cells(pools: tuple[list[str], list[str], list[str]]) -> st.SearchStrategy[str]:
    """Statements and separators, with up to two noise fragments dropped in anywhere."""
    statements, separators, noise = pools
    pair = st.tuples(st.sampled_from(statements), st.sampled_from(separators))
    base = st.lists(pair, min_size=1, max_size=4).map(lambda pairs: "".join(a + b for a, b in pairs))
    extra = st.lists(st.tuples(st.integers(0, 400), st.sampled_from(noise)), max_size=2)
    return st.builds(_insert, base, extra)


def _agrees_postgres(conn: psycopg.Connection, text: str, pieces: list[str]) -> str | None:
    """Why PostgreSQL disagrees with the pieces, or None."""
    cur = conn.cursor()
    for piece in pieces:
        try:
            cur.execute(piece, prepare=True)  # the extended protocol refuses a second command
        except psycopg.errors.SyntaxError as exc:  # 42601, also "cannot insert multiple commands …"
            return f"piece {piece!r} does not run alone: {exc}"
        except psycopg.Error:  # one statement that fails on its own (an operator that does not exist)
            pass
    try:
        cur.execute(text)  # the simple protocol runs every statement
    except psycopg.errors.SyntaxError as exc:
        return f"the whole text fails: {exc}"
    except psycopg.Error:  # a statement failed when it ran: the text was read, nothing more to compare
        return None
    results = 1 if cur.pgresult is not None and cur.pgresult.status != 0 else 0  # 0: EMPTY_QUERY
    while cur.nextset():
        results += 1
    if results != len(pieces):
        return f"the server ran {results} statements, the split has {len(pieces)}"
    return None


def _second_statement(conn: pymysql.Connection, piece: str, exc: pymysql.MySQLError) -> bool:
    """Whether MariaDB's 1064 is about a second statement: the text it could not read follows a ";"
    and both sides of that ";" run on their own (a ";" in a comment does not end anything)."""
    message = str(exc.args[1]) if len(exc.args) > 1 else ""
    match = re.search(r"near '(.*)' at line \d+\Z", message, re.S)
    if not match or not match.group(1):
        return False
    at = piece.rfind(match.group(1))
    head = piece[:at].rstrip(" \t\r\n")
    if at <= 0 or not head.endswith(";"):
        return False
    with conn.cursor() as cur:
        for side in (head[:-1], piece[at:]):
            if not side.lstrip().upper().startswith("SELECT"):  # run nothing but reads on the server
                return True
            try:
                cur.execute(side)
                cur.fetchall()
            except pymysql.MySQLError as side_exc:
                if side_exc.args and side_exc.args[0] == 1064:  # not a statement of its own
                    return False
    return True


def _agrees_mariadb(conns: dict[str, pymysql.Connection], text: str, pieces: list[str]) -> str | None:
    rejected = False
    with conns["single"].cursor() as cur:
        for piece in pieces:
            try:
                cur.execute(piece)
                cur.fetchall()
            except pymysql.MySQLError as exc:
                if exc.args and exc.args[0] == 1064 and ";" in piece and _second_statement(conns["single"], piece, exc):
                    return f"piece {piece!r} holds a second statement: {exc}"
                rejected = True  # the server rejects the piece on its own (sqlglot's grammar is more lenient)
    if not pieces or rejected:
        return None
    results = 0
    with conns["multi"].cursor() as cur:
        try:
            cur.execute(text)
            results += cur.description is not None  # a comment after the last ";" comes back as an empty OK
            while cur.nextset():
                results += cur.description is not None
        except pymysql.MySQLError as exc:
            conns["multi"].close()
            conns["multi"] = pymysql.connect(client_flag=CLIENT.MULTI_STATEMENTS, **_MARIA)
            if exc.args and exc.args[0] == 1064:
                return f"the whole text fails where each piece runs: {exc}"
            return None  # a statement failed when it ran (an unknown column): nothing more to compare
    if results != len(pieces):
        return f"the server ran {results} statements, the split has {len(pieces)}"
    return None


def _sqlite_library() -> ctypes.CDLL:
    import _sqlite3

    lib = ctypes.CDLL(_sqlite3.__file__)  # the SQLite that Python's sqlite3 module is linked with
    for name in ("sqlite3_open", "sqlite3_prepare_v2", "sqlite3_finalize", "sqlite3_close"):
        if not hasattr(lib, name):
            lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
            break
    lib.sqlite3_prepare_v2.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                       ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_void_p)]
    lib.sqlite3_open.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
    lib.sqlite3_finalize.argtypes = [ctypes.c_void_p]
    lib.sqlite3_close.argtypes = [ctypes.c_void_p]
    return lib


def _sqlite_statements(lib: ctypes.CDLL, db: ctypes.c_void_p, text: str) -> int | None:
    """How many statements SQLite's own prepare/tail loop finds in ``text``; None when it rejects it."""
    data = text.encode("utf-8")
    buffer = ctypes.create_string_buffer(data)
    base = ctypes.addressof(buffer)
    offset, count = 0, 0
    while offset < len(data):
        stmt, tail = ctypes.c_void_p(), ctypes.c_void_p()
        rc = lib.sqlite3_prepare_v2(db, ctypes.c_char_p(base + offset), len(data) - offset, ctypes.byref(stmt),
                                    ctypes.byref(tail))
        if stmt.value:
            lib.sqlite3_finalize(stmt)
            count += 1
        if rc != 0:
            return None
        if not tail.value or tail.value - base <= offset:
            break
        offset = tail.value - base
    return count


def _agrees_sqlite(conn: sqlite3.Connection, counter: tuple[ctypes.CDLL, ctypes.c_void_p], text: str,
                   pieces: list[str]) -> str | None:
    for piece in pieces:
        try:
            conn.execute(piece).fetchall()
        except (sqlite3.ProgrammingError, sqlite3.Warning) as exc:  # "You can only execute one statement at a time"
            return f"piece {piece!r} does not run alone: {exc}"
        except sqlite3.Error:  # the engine rejects it (sqlglot is more lenient than SQLite): nothing ran
            pass
    count = _sqlite_statements(*counter, text)
    if count is None:  # SQLite's prepare rejects the whole text: no count to compare
        return None
    if count != len(pieces):
        return f"SQLite prepares {count} statements, the split has {len(pieces)}"
    return None


def _check(dialect: str, text: str, why: str | None) -> None:
    risk = analyze_sql(text, dialect)
    event(f"parsed, {len(risk.texts)} statement(s)" if risk.parsed else "unparseable")
    assert risk.texts == tuple(split_statements(text, dialect))
    if risk.parsed:
        assert why is None, f"parsed, but {why}: {text!r}"


@pytest.fixture(scope="module")
def pg() -> psycopg.Connection:
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL is not reachable ({exc}); start it, these tests never skip")
    yield conn
    conn.close()


_MARIA = {**MARIADB_SERVER, "database": DATABASE, "connect_timeout": 5}


@pytest.fixture(scope="module")
def maria() -> dict[str, pymysql.Connection]:
    try:
        conns = {"single": pymysql.connect(**_MARIA),
                 "multi": pymysql.connect(client_flag=CLIENT.MULTI_STATEMENTS, **_MARIA)}
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable ({exc}); start it, these tests never skip")
    yield conns
    for conn in conns.values():
        conn.close()


@pytest.fixture(scope="module")
def lite():
    conn = sqlite3.connect(":memory:")
    lib = _sqlite_library()
    db = ctypes.c_void_p()
    assert lib.sqlite3_open(b":memory:", ctypes.byref(db)) == 0
    yield conn, (lib, db)
    lib.sqlite3_close(db)
    conn.close()


@pytest.mark.postgres
@_SETTINGS
@given(text=_cells(_PG))
def test_postgres_split_agrees_with_the_server(pg: psycopg.Connection, text: str) -> None:
    if "\x00" in text:
        return
    pieces = split_statements(text, "postgresql")
    _check("postgresql", text, _agrees_postgres(pg, text, pieces) if analyze_sql(text, "postgresql").parsed else None)


@pytest.mark.mariadb
@_SETTINGS
@given(text=_cells(_MY))
def test_mariadb_split_agrees_with_the_server(maria: dict[str, pymysql.Connection], text: str) -> None:
    pieces = split_statements(text, "mariadb")
    why = _agrees_mariadb(maria, text, pieces) if analyze_sql(text, "mariadb").parsed else None
    _check("mariadb", text, why)


@_SETTINGS
@given(text=_cells(_LITE))
def test_sqlite_split_agrees_with_the_engine(lite, text: str) -> None:
    pieces = split_statements(text, "sqlite")
    why = _agrees_sqlite(*lite, text, pieces) if analyze_sql(text, "sqlite").parsed else None
    _check("sqlite", text, why)


@pytest.mark.postgres
@pytest.mark.parametrize("text", [
    "SELECT 1 --\u00a0; SELECT 2", "SELECT $x$;$x$; SELECT E'\\';'", 'SELECT 1 AS U&"\\0061"; SELECT 2',
    "SELECT 1 /* /* ; */ */; SELECT 2", "SELECT 1 -- \r; SELECT 5",
])
def test_postgres_tricky_cells_agree(pg: psycopg.Connection, text: str) -> None:
    risk = analyze_sql(text, "postgresql")
    assert risk.parsed, risk.reasons
    assert _agrees_postgres(pg, text, list(risk.texts)) is None


@pytest.mark.mariadb
@pytest.mark.parametrize("text", ["SELECT 1; -- c;\nSELECT 2", "SELECT 1; # c;\nSELECT 2", "SELECT '--;'; SELECT 2",
                                  "SELECT 1 /* ; */; SELECT `a;b` FROM (SELECT 1 AS `a;b`) s"])
def test_mariadb_tricky_cells_agree(maria: dict[str, pymysql.Connection], text: str) -> None:
    risk = analyze_sql(text, "mariadb")
    assert risk.parsed, risk.reasons
    assert _agrees_mariadb(maria, text, list(risk.texts)) is None
