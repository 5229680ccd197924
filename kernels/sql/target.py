"""Kernel settings from the environment, and keeping the target's password out of output.

The agent starts the kernel with these variables (nothing else configures it):

``CELLGATE_TARGET_URL``
    ``postgresql://user:pw@host:port/db`` (also ``postgres://``, ``postgresql+psycopg://``),
    ``mysql://…`` / ``mariadb://…`` (also ``mysql+pymysql://``),
    ``sqlite:///relative.db`` / ``sqlite:////abs/path.db`` / ``sqlite://`` (in memory).
``CELLGATE_ROW_LIMIT``
    Rows shown per result set (default 1000).
``CELLGATE_STATEMENT_TIMEOUT``
    Seconds a statement may run, enforced by the server (default 300; 0 disables).
``CELLGATE_TARGET_READONLY_URL``
    The read-only credential (same dialect as the target URL): cells the gateway marks
    ``"read-only"`` run on a second connection opened with it. SQLite needs none (the same file
    is opened read-only).
``CELLGATE_GATED``
    ``1`` when the agent started the kernel: every cell must carry the gateway's
    ``metadata.cellgate`` (see :mod:`.gating`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..registry import family_for_scheme

URL_ENV = "CELLGATE_TARGET_URL"
ROW_LIMIT_ENV = "CELLGATE_ROW_LIMIT"
TIMEOUT_ENV = "CELLGATE_STATEMENT_TIMEOUT"
READONLY_URL_ENV = "CELLGATE_TARGET_READONLY_URL"
GATED_ENV = "CELLGATE_GATED"
DEFAULT_ROW_LIMIT = 1000
DEFAULT_TIMEOUT = 300.0
MASK = "********"



class ConfigError(Exception):
    """The environment does not describe a usable target; the message says what to set."""


@dataclass(frozen=True)
class Target:
    """A parsed ``CELLGATE_TARGET_URL``. ``repr`` and :meth:`display` never show the password."""

    dialect: str
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    database: str | None = None
    query: dict[str, str] = field(default_factory=dict, repr=False)

    def display(self) -> str:
        """The URL without its password, for banners and messages."""
        if self.dialect == "sqlite":
            return f"sqlite:///{self.database or ':memory:'}"
        netloc = quote(self.user or "", safe="")
        netloc = f"{netloc}@" if netloc else ""
        netloc += self.host or ""
        if self.port:
            netloc += f":{self.port}"
        return f"{self.dialect}://{netloc}/{self.database or ''}"

    def secrets(self) -> list[str]:
        """Strings that must never appear in any output (the password, raw and URL-encoded)."""
        raw = [self.password] if self.password else []
        raw += [v for k, v in self.query.items() if "password" in k.lower() and v]
        variants = {form for secret in raw for form in (secret, quote(secret, safe=""), quote(secret))}
        return sorted(variants, key=len, reverse=True)


def parse_target_url(url: str, name: str = URL_ENV) -> Target:
    """Parse a target URL (``name`` is the variable it came from, for messages).

    Errors never quote the URL (it may hold a password).
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower().split("+", 1)[0]
    dialect = family_for_scheme(scheme)  # the driver family: a mariadb:// URL is served by the mysql dialect
    if dialect is None:
        raise ConfigError(
            f"{name} has an unsupported scheme {scheme!r}; "
            "use postgresql://, mysql://, mariadb:// or sqlite:///"
        )
    query = dict(parse_qsl(parts.query))
    if dialect == "sqlite":
        # sqlite:///rel.db -> path "/rel.db" -> "rel.db"; sqlite:////abs.db -> "//abs.db" -> "/abs.db"
        path = unquote(parts.path)[1:] if parts.path else ""
        return Target(dialect, database=path or ":memory:", query=query)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{name} has an invalid port") from None
    return Target(
        dialect,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=unquote(parts.path.lstrip("/")) or None,
        query=query,
    )


@dataclass(frozen=True)
class Settings:
    """Everything the kernel reads from its environment.

    ``readonly`` is True for the settings of the read-only connection (see :meth:`for_readonly`):
    the dialect then opens it in the server's read-only mode.
    """

    target: Target
    row_limit: int = DEFAULT_ROW_LIMIT
    statement_timeout: float = DEFAULT_TIMEOUT
    readonly_target: Target | None = field(default=None, repr=False)
    gated: bool = False
    readonly: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        url = env.get(URL_ENV, "").strip()
        if not url:
            raise ConfigError(f"{URL_ENV} is not set; the agent sets it to the target's database URL")
        target = parse_target_url(url)
        readonly_url = env.get(READONLY_URL_ENV, "").strip()
        readonly_target = parse_target_url(readonly_url, READONLY_URL_ENV) if readonly_url else None
        if readonly_target is not None and readonly_target.dialect != target.dialect:
            raise ConfigError(f"{READONLY_URL_ENV} is a {readonly_target.dialect} URL but {URL_ENV} is "
                              f"{target.dialect}: both must name the same database")
        return cls(
            target=target,
            row_limit=_number(env, ROW_LIMIT_ENV, DEFAULT_ROW_LIMIT, int, minimum=1),
            statement_timeout=_number(env, TIMEOUT_ENV, DEFAULT_TIMEOUT, float, minimum=0),
            readonly_target=readonly_target,
            gated=env.get(GATED_ENV, "").strip() == "1",
        )

    def secrets(self) -> list[str]:
        """The secrets of both credentials, longest first."""
        found = set(self.target.secrets())
        if self.readonly_target is not None:
            found.update(self.readonly_target.secrets())
        return sorted(found, key=len, reverse=True)

    def for_readonly(self) -> Settings | None:
        """Settings of the read-only connection, or None when there is no read-only credential.

        SQLite needs no credential: the same database file is opened read-only (an in-memory
        database cannot be, so there is none).
        """
        target = self.readonly_target
        if target is None and self.target.dialect == "sqlite" and self.target.database not in (None, "", ":memory:"):
            target = self.target
        if target is None:
            return None
        return replace(self, target=target, readonly=True)


def _number(env: Mapping[str, str], name: str, default, kind, minimum):
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


_URL_CREDENTIALS = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s]*@")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Mask known secrets and any ``scheme://user:password@`` credentials in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
