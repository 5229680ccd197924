"""The sqlglot side of reading SQL: dialect and tokenizer, one statement's findings, helpers on them.

:class:`_Ctx` is one text read in one sqlglot dialect (tokenize, parse, slice); :class:`_Stmt`
is what one statement does (findings, tables, read-only). sqlglot's "falling back to Command"
warnings are silenced while an analysis runs (:data:`_QUIET`).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator

from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, Tokenizer, TokenType

from cellgate.kernels.registry import sqlglot_display
from .model import Findings
from .functions import _function_rule


_Node = getattr(exp, "Expr", None) or exp.Expression  # sqlglot ≥ 30 names the base class Expr
_DIALECT_CACHE: dict[str, tuple[Dialect, type[Tokenizer]]] = {}


# sqlglot logs a warning each time it falls back to exp.Command; those statements are handled
# here, so the warning is noise. A filter on its logger drops records only while we analyse.
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("cellgate_risk_quiet", default=False)


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


_sqlglot_logger = logging.getLogger("sqlglot")
if not any(isinstance(f, _QuietFilter) for f in _sqlglot_logger.filters):
    _sqlglot_logger.addFilter(_QuietFilter())


def _dialect(name: str) -> tuple[Dialect, type[Tokenizer]]:
    """The sqlglot dialect and a tokenizer for it that never folds a statement into one string.

    sqlglot's tokenizer turns everything after a "command" keyword (EXPLAIN, CALL, VACUUM, SHOW,
    LOCK, REPLACE…) into a single string token, so neither the parser nor the checks here would
    see the statement's own tokens. Statement boundaries are the same either way: the folded
    text is scanned with the same rules and stops at the same semicolon.
    """
    cached = _DIALECT_CACHE.get(name)
    if cached is None:
        dialect = Dialect.get_or_raise(name)
        tokenizer: type[Tokenizer] = type(f"{type(dialect).__name__}RiskTokenizer", (dialect.tokenizer_class,), {"COMMANDS": set()})
        cached = _DIALECT_CACHE[name] = (dialect, tokenizer)
    return cached


def _node_class(name: str) -> type | None:
    return getattr(exp, name, None)


class _Stmt:
    """What one statement does."""

    def __init__(self, kind: str = "OTHER") -> None:
        self.kind = kind
        self.found = Findings()
        self.tables: set[str] = set()
        self.read_only = False
        self.explain: list[str] = []
        self.no_explain = False  # MariaDB's EXPLAIN evaluates constant subqueries: not for the agent to run

    def understood(self) -> bool:
        """Parsed, no function the allow-list does not hold, no function with effects."""
        return self.parsed and not self.no_explain and not (self.flags & {"unknown_function", "side_effect_function"})

    def add(self, rule: str, sentence: str, *flags: str) -> None:
        self.found.add(rule, sentence, *flags)

    @property
    def flags(self) -> set[str]:
        return self.found.flags

    @property
    def parsed(self) -> bool:
        return "unparseable" not in self.found.flags


class _Ctx:
    def __init__(self, code: str, sg: str) -> None:
        self.code = code
        self.sg = sg
        self.dialect, self.tokenizer_class = _dialect(sg)
        self.name = sqlglot_display(sg)

    def tokenize(self) -> list[Token]:
        return self.tokenizer_class(dialect=self.dialect).tokenize(self.code)

    def text(self, toks: list[Token]) -> str:
        return self.code[toks[0].start: toks[-1].end + 1]

    def parse(self, toks: list[Token]) -> exp.Expr | None:
        trees = self.dialect.parser().parse(toks, self.code)
        return trees[0] if trees else None


def _chunks(tokens: list[Token]) -> Iterator[list[Token]]:
    chunk: list[Token] = []
    for tok in tokens:
        if tok.token_type == TokenType.SEMICOLON:
            if chunk:
                yield chunk
            chunk = []
        else:
            chunk.append(tok)
    if chunk:
        yield chunk


def _unknown(st: _Stmt, sentence: str) -> None:
    st.read_only = False
    st.add("sql.unknown_function", sentence, "unknown_function")


def _function(st: _Stmt, name: str) -> None:
    found = _function_rule(name)
    if found is None:
        return
    rule, flags, what = found
    st.read_only = False
    st.add(rule, f"{name.lower()}() {what}", "side_effect_function", *flags)


_STRING_TOKENS = {t for t in (getattr(TokenType, n, None) for n in (
    "STRING", "NATIONAL_STRING", "HEX_STRING", "BIT_STRING", "BYTE_STRING", "RAW_STRING", "HEREDOC_STRING",
    "UNICODE_STRING")) if t is not None}


def _closing_paren(toks: list[Token], at: int) -> int:
    """Index of the parenthesis that closes the one at ``at`` (``len(toks)`` when none does)."""
    depth = 0
    for j in range(at, len(toks)):
        if toks[j].token_type == TokenType.L_PAREN:
            depth += 1
        elif toks[j].token_type == TokenType.R_PAREN:
            depth -= 1
            if depth == 0:
                return j
    return len(toks)
