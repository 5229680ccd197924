"""The one registry of cell kinds and SQL dialects: what the gateway, the agent and the kernels agree on.

A *kind* is what a target runs (``sql``, ``python``): the Jupyter language and the kernel spec
that runs its cells, and whether a target of that kind needs a SQL dialect. A *dialect* is a
database a ``sql`` target talks to: the URL schemes that name it (before any ``+driver``:
``postgresql+psycopg://`` and ``postgres://`` are PostgreSQL, ``mysql+pymysql://`` is MySQL,
``mariadb://`` is MariaDB), its driver family (the kernel module that connects to it, and what
an agent's dialect is compared with: MySQL and MariaDB are one family), the sqlglot dialect the
risk analysis reads it with, and its display name.

This module imports nothing from cellgate, so the gateway (binding, risk analysis), the agent
(config) and the kernels (target URL, dialects, split) all read it without an import cycle.

Adding a kind takes an entry in :data:`KINDS` plus its kernel spec (kernels/specs.py and the
kernel itself); the gateway's risk analysis reports cells of a kind it has no analyser for as
``kind.unknown`` (high) until one is added to ``gateway/risk/__init__.py``. Adding a dialect
takes an entry in :data:`DIALECTS`, a driver module in kernels/sql/ for a new family, a split
in kernels/sql/split.py and an analyser in gateway/risk/sql.py for a new sqlglot dialect.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """A kind of target: the cells' language, the kernel spec that runs them, whether a dialect is required."""

    name: str
    language: str
    kernel: str
    needs_dialect: bool


@dataclass(frozen=True)
class Dialect:
    """A SQL dialect: URL schemes naming it, driver family, sqlglot dialect, display name."""

    name: str
    schemes: tuple[str, ...]   # lower case, without "+driver"; the first is the dialect's own name
    family: str                # the driver family: a dialect name, one per kernels/sql/<module>.py
    module: str                # kernels/sql/<module>.py connects to this family
    sqlglot: str               # the sqlglot dialect the risk analysis reads it with
    display: str


#: kind → Kind (messages list them sorted)
KINDS: dict[str, Kind] = {
    "sql": Kind("sql", language="sql", kernel="cellgate-sql", needs_dialect=True),
    "python": Kind("python", language="python", kernel="python3", needs_dialect=False),
}

#: dialect → Dialect (order: as listed in messages)
DIALECTS: dict[str, Dialect] = {
    "postgresql": Dialect("postgresql", ("postgresql", "postgres"), family="postgresql", module="postgres",
                          sqlglot="postgres", display="PostgreSQL"),
    "mysql": Dialect("mysql", ("mysql",), family="mysql", module="mysql", sqlglot="mysql", display="MySQL"),
    "mariadb": Dialect("mariadb", ("mariadb",), family="mysql", module="mysql", sqlglot="mysql", display="MariaDB"),
    "sqlite": Dialect("sqlite", ("sqlite",), family="sqlite", module="sqlite", sqlglot="sqlite", display="SQLite"),
}

_BY_NAME = {scheme: d for d in DIALECTS.values() for scheme in d.schemes}


def dialect(name: str | None) -> Dialect | None:
    """The dialect a name or alias (``postgres``) stands for, case-insensitive; None when unknown."""
    return _BY_NAME.get((name or "").lower())


def dialect_for_scheme(scheme: str) -> str | None:
    """The dialect a URL scheme names (``postgresql+psycopg`` → ``postgresql``); None when unknown."""
    found = dialect(scheme.split("+", 1)[0])
    return found.name if found is not None else None


def family(name: str | None) -> str | None:
    """The driver family of a dialect or alias (``mariadb`` → ``mysql``); None when unknown."""
    found = dialect(name)
    return found.family if found is not None else None


def family_for_scheme(scheme: str) -> str | None:
    """The driver family a URL scheme names (``mariadb`` → ``mysql``); None when unknown."""
    return family(dialect_for_scheme(scheme))


def kernel_module(family_name: str) -> str:
    """The kernels/sql module (``postgres``) that connects to a driver family; KeyError for anything else."""
    return {d.family: d.module for d in DIALECTS.values()}[family_name]


def sqlglot_dialect(name: str | None) -> str | None:
    """The sqlglot dialect the risk analysis reads a dialect or alias with; None when unknown."""
    found = dialect(name)
    return found.sqlglot if found is not None else None


def sqlglot_display(sqlglot: str) -> str:
    """The servers a sqlglot dialect reads, for sentences (``mysql`` → ``MySQL/MariaDB``)."""
    return "/".join(d.display for d in DIALECTS.values() if d.sqlglot == sqlglot)


def sqlglot_split_name(sqlglot: str) -> str:
    """The first dialect read with a sqlglot dialect (``postgres`` → ``postgresql``): a name split.py takes."""
    return next(d.name for d in DIALECTS.values() if d.sqlglot == sqlglot)
