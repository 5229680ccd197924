"""The lexing-doubt checks per dialect: text the server may read differently from the analysis.

MySQL/MariaDB and SQLite (sqlglot's tokens checked against the servers' own lexical rules: odd
characters, gaps between tokens, string escapes) and PostgreSQL (backslashes before quotes,
vertical tabs across server versions). A doubt makes the cell ``unparseable``.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

from sqlglot.tokens import Token, TokenType

from .model import Findings
from .text import _snippet
from .context import _Ctx, _STRING_TOKENS


_PG_LITERALS = {"SCONST", "USCONST", "BCONST", "XCONST"}


def _pg_version_doubts(code: str, cell: Findings) -> None:
    """Text the analysis's parser (libpg_query of PostgreSQL 17+) reads differently from older servers.

    PostgreSQL 16 made the vertical tab a space; PostgreSQL 15 rejects it outside a literal.
    """
    if "\x0b" not in code:
        return
    from pglast import parser

    try:
        tokens = parser.scan(code)
    except Exception:  # the split already reported it
        return
    at = code.index("\x0b")
    literal = [(t.start, t.end) for t in tokens if t.name in _PG_LITERALS]
    while at >= 0:
        if not any(a <= at <= b for a, b in literal):
            cell.add("sql.unparseable", "a vertical tab outside a string literal: PostgreSQL 16 and later read it as "
                     "a space, older servers reject it", "unparseable")
            return
        at = code.find("\x0b", at + 1)


_BACKSLASH_QUOTE = re.compile(r"(?<!\\)(?:\\\\)*\\'")


def _pg_doubts(text: str, cell: Findings) -> None:
    """A standard string with a backslash before a quote ends where standard_conforming_strings says."""
    if "\\" not in text:
        return
    from pglast import parser

    try:
        tokens = parser.scan(text)
    except Exception:  # the cell's scan read it; nothing to add
        return
    for tok in tokens:
        raw = text[tok.start:tok.end + 1]
        if tok.name == "SCONST" and raw[:1] in ("'", "N", "n") and _BACKSLASH_QUOTE.search(raw):
            cell.add("sql.unparseable", f"a string literal has a backslash before a quote ({_snippet(raw, 40)}): "
                     "where it ends depends on the server's standard_conforming_strings setting, so the statements "
                     "cannot be told apart reliably (write '' for a quote inside a string, or E'…')", "unparseable")
            return


_ASCII_ODD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_ODD_CATEGORIES = {"Zs", "Zl", "Zp", "Cf", "Cc", "Co", "Cs", "Cn"}


def _odd_char(text: str) -> str | None:
    """A character a server may read differently from the analysis: control, format, non-ASCII space."""
    match = _ASCII_ODD.search(text)
    if match:
        found: str = match.group(0)
        return found
    if not text.isascii():
        found_chars: set[str] = set(_NON_ASCII.findall(text))
        for ch in found_chars:
            if unicodedata.category(ch) in _ODD_CATEGORIES:
                return ch
    return None


def _token_doubts(ctx: _Ctx, tokens: list[Token], cell: Findings) -> None:
    """Places where MySQL/MariaDB or SQLite may read the text differently from sqlglot's tokenizer."""
    code, mysql = ctx.code, ctx.sg == "mysql"
    outside: list[str] = []
    gaps: list[tuple[int, int]] = []
    prev_string_end = prev_end = 0
    for tok in tokens:
        gaps.append((prev_end, tok.start))
        prev_end = tok.end + 1
        if tok.token_type in _STRING_TOKENS:
            outside.append(code[prev_string_end:tok.start])
            prev_string_end = tok.end + 1
            if mysql:
                _mysql_string_doubts(code[tok.start:tok.end + 1], cell)
                if tok.token_type in (TokenType.HEX_STRING, TokenType.BIT_STRING) and not _MYSQL_BINARY.fullmatch(
                        code[tok.start:tok.end + 1]):
                    cell.add("sql.unparseable", f"a hex or bit literal the server would reject: "
                             f"{_snippet(code[tok.start:tok.end + 1], 40)}", "unparseable")
    outside.append(code[prev_string_end:])
    gaps.append((prev_end, len(code)))
    if any(a.token_type == TokenType.STAR and b.token_type == TokenType.SLASH and b.start == a.end + 1
           for a, b in itertools.pairwise(tokens)):
        cell.add("sql.unparseable", "*/ outside a comment: a comment the analysis and the server may end in "
                 "different places", "unparseable")
    if mysql and any(a.text in ("@", "@@") and b.start != a.end + 1 for a, b in itertools.pairwise(tokens)):
        cell.add("sql.unparseable", "an @ not followed directly by a variable name: the analysis and MySQL/MariaDB "
                 "may read it differently", "unparseable")
    if mysql and any(a.token_type == b.token_type == TokenType.DASH and b.start == a.end + 1
                     for a, b in itertools.pairwise(tokens)):
        cell.add("sql.unparseable", "-- without a space after it: MySQL/MariaDB reads two minus signs, other tools a "
                 "comment, so the statements cannot be told apart reliably (write - -1, or -- with a space for a "
                 "comment)", "unparseable")
    for text in outside:
        odd = _odd_char(text)
        if odd is not None:
            cell.add("sql.unparseable", f"the SQL contains the character U+{ord(odd):04X} "
                     f"({unicodedata.name(odd, 'a control character')}) outside a string literal: {ctx.name} may read "
                     "it differently from the analysis (as a letter, or not as the end of a comment), so the "
                     "statements cannot be told apart reliably", "unparseable")
            break
        if mysql and "\\" in text:
            cell.add("sql.unparseable", "a backslash outside a string literal (\\N, \\G…): the analysis cannot tell "
                     "how MySQL/MariaDB or its client reads it", "unparseable")
            break
    lex = _mysql_gap if mysql else _sqlite_gap
    for start, end in gaps:
        if start < end:
            why = lex(code, start, end)
            if why:
                cell.add("sql.unparseable", f"{why}: the statements cannot be told apart reliably", "unparseable")
                break


#: the hex and bit literals MySQL/MariaDB accept (X'…' only with whole bytes: X'4' is an error)
_MYSQL_BINARY = re.compile(r"[xX]'(?:[0-9a-fA-F]{2})*'|0x[0-9a-fA-F]+|[bB]'[01]*'|0b[01]+")


def _mysql_string_doubts(raw: str, cell: Findings) -> None:
    quote = raw[-1:]
    if quote == '"':
        cell.add("sql.unparseable", f"a \"double-quoted\" string ({_snippet(raw, 40)}): with the server's ANSI_QUOTES "
                 "mode it is an identifier, so the analysis cannot tell what runs (write 'single quotes')",
                 "unparseable")
    elif quote == "'" and re.search(r"(?<!\\)(?:\\\\)*\\'", raw):
        cell.add("sql.unparseable", f"a string literal has a backslash before a quote ({_snippet(raw, 40)}): "
                 "where it ends depends on the server's NO_BACKSLASH_ESCAPES setting, so the statements cannot "
                 "be told apart reliably (write '' for a quote inside a string)", "unparseable")


def _mysql_gap(code: str, i: int, end: int) -> str | None:
    """Why the text between two tokens is not only whitespace and comments to MySQL/MariaDB, or None."""
    while i < end:
        c = code[i]
        if c in " \t\n\r;":  # ";" is the statement separator, a token of its own
            i += 1
        elif c == "#":
            nl = code.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif code.startswith("--", i) and (i + 2 == len(code) or code[i + 2] in " \t\n\r"):
            nl = code.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif code.startswith("/*", i):
            if code.startswith("/*!", i) or code.startswith("/*M!", i):
                return "a MySQL executable comment /*! … */: the server runs what is inside, the analysis cannot see it"
            close = code.find("*/", i + 2, end)
            if close < 0:
                return "a /* comment whose end the analysis and the server may not agree on"
            i = close + 2
        else:
            return (f"text the analysis reads as a comment or space but MySQL/MariaDB may not "
                    f"({_snippet(code[i:min(end, i + 20)], 20)!r})")
    return None


def _sqlite_gap(code: str, i: int, end: int) -> str | None:
    """Why the text between two tokens is not only whitespace and comments to SQLite, or None."""
    while i < end:
        c = code[i]
        if c in " \t\n\f\r;":
            i += 1
        elif code.startswith("--", i):
            nl = code.find("\n", i, end)
            i = end if nl < 0 else nl + 1
        elif code.startswith("/*", i):
            close = code.find("*/", i + 2, end)
            i = end if close < 0 else close + 2
        else:
            return f"text the analysis reads as a comment or space but SQLite may not ({_snippet(code[i:min(end, i + 20)], 20)!r})"
    return None
