"""The contract every database dialect fulfils, and the dialect module for a target (kernels/registry.py).

A dialect knows how to open one connection (with the statement timeout set on the server),
run one statement on it with one protocol call that cannot carry a second statement, and
cancel that statement from another thread. With ``settings.readonly`` it opens the connection
in the server's read-only mode (the read-only credential is the first layer, this the second). It knows nothing
about Jupyter: :mod:`.session` drives it, :mod:`.render` turns its results into outputs.
"""

from __future__ import annotations

import abc
import importlib
import re
from dataclasses import dataclass
from typing import Any

from ..registry import kernel_module
from .params import Params
from .target import Settings


@dataclass
class ResultSet:
    """Rows of one statement, capped at the row limit.

    ``more`` is how many rows were not fetched: an exact count, or ``None`` when the
    dialect stopped reading and does not know (``truncated`` is then True).
    """

    columns: list[str]
    rows: list[tuple[Any, ...]]
    truncated: bool = False
    more: int | None = None


@dataclass
class Status:
    """The outcome of a statement without a result set, e.g. ``UPDATE 3``."""

    text: str


Result = ResultSet | Status


class Dialect(abc.ABC):
    """One database family. Methods other than :meth:`cancel` run on the session's worker thread.

    Errors are the driver's own exceptions; the kernel shows their class name and message.
    """

    name: str = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.target = settings.target
        self.readonly = settings.readonly

    @abc.abstractmethod
    def connect(self) -> Any:
        """Open an autocommit connection with the statement timeout applied."""

    @abc.abstractmethod
    def execute(self, conn: Any, statement: str, params: Params | None = None) -> Result:
        """Run one statement, in one protocol call that the server refuses if the text holds a
        second statement. Without ``params`` the text goes to the driver raw (no parameters, no
        interpolation); with them it is in the driver's paramstyle (``params.for_driver``).

        Fetch at most ``row_limit + 1`` rows to decide whether the result was truncated.
        """

    @abc.abstractmethod
    def cancel(self, conn: Any) -> None:
        """Cancel the statement running on ``conn``. Called from another thread."""

    def recover(self, conn: Any) -> None:  # noqa: B027 - a hook: nothing to do unless a dialect says so
        """Bring ``conn`` back to a usable state after an error (e.g. roll back)."""

    def end_cell(self, conn: Any) -> None:  # noqa: B027 - a hook: nothing to do unless a dialect says so
        """After the last statement of a cell (read-only connections end their transaction here)."""

    @abc.abstractmethod
    def is_usable(self, conn: Any) -> bool:
        """False if the connection is broken and must be replaced."""

    def is_timeout(self, exc: BaseException) -> bool:
        """True if ``exc`` means the server's statement timeout fired."""
        return False

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:
            pass

    @property
    def row_limit(self) -> int:
        return self.settings.row_limit


def dialect_for(settings: Settings) -> Dialect:
    """The dialect for the settings' target (imported on demand, so one driver is enough)."""
    module = importlib.import_module(f"{__package__}.{kernel_module(settings.target.dialect)}")
    return module.DIALECT(settings)


_FIRST_WORD = re.compile(r"(?:\s+|--[^\n]*\n?|#[^\n]*\n?|/\*.*?\*/)*\(*\s*([A-Za-z]+)", re.S)


def status_text(statement: str, rowcount: int) -> str:
    """``UPDATE 3``-style status from the statement's first keyword and the affected rows."""
    match = _FIRST_WORD.match(statement)
    verb = match.group(1).upper() if match else "OK"
    return f"{verb} {rowcount}" if rowcount >= 0 and verb in _COUNTED else verb


_COUNTED = {"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT"}
