"""The agent's configuration file: load, validate, resolve the targets' connection URLs.

The file is TOML::

    [agent]
    id = "agent-eu-1"            # default: the host name
    tags = ["prod"]

    [targets.payments]
    kind = "sql"                 # sql | python
    display_name = "Payments (prod)"
    url_env = "PAYMENTS_URL"     # or url_file = "/etc/cellgate/payments.url", or url = "..."
    row_limit = 1000
    statement_timeout = 300
    env = { EXTRA = "x" }

A target's connection URL is looked up in this order of preference, exactly one source per
target: ``url_env`` (an environment variable of the agent), ``url_file`` (a file readable by
the agent's user only: refused when ``mode & 0o077``), ``url`` (inline; a warning is logged when
it carries a password). The URL lives in ``Target.url`` and is never sent to the gateway nor
logged: ``repr(target)`` leaves it out.

Every problem raises ``ConfigError`` naming the file and the field, e.g.
``agent.toml: targets.payments.kind: must be one of 'python', 'sql', got 'mongo'``.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

KINDS = {"sql": ("sql", "cellgate-sql"), "python": ("python", "python3")}  # kind → (language, kernel)
DIALECTS = {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql",
            "mariadb": "mariadb", "sqlite": "sqlite"}
TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AGENT_KEYS = {"id", "tags"}
TARGET_KEYS = {"kind", "display_name", "url_env", "url_file", "url", "row_limit",
               "statement_timeout", "env"}


class ConfigError(Exception):
    """The configuration file is invalid. ``field`` is the dotted TOML path of the culprit."""

    def __init__(self, path: str | os.PathLike[str], field: str, message: str) -> None:
        self.path = str(path)
        self.field = field
        self.message = message
        where = f"{self.path}: {field}: " if field else f"{self.path}: "
        super().__init__(where + message)


@dataclass(frozen=True)
class Target:
    """A target the agent serves. ``url`` is the secret; it is excluded from ``repr``."""

    name: str
    kind: str
    display_name: str
    dialect: str | None
    row_limit: int = 1000
    statement_timeout: int = 300
    env: dict[str, str] = field(default_factory=dict)
    url: str | None = field(default=None, repr=False)
    url_env: str | None = None  # the variable named here is kept out of every kernel's env

    @property
    def language(self) -> str:
        return KINDS[self.kind][0]

    @property
    def kernel_name(self) -> str:
        return KINDS[self.kind][1]

    def announce(self) -> dict[str, Any]:
        """What the gateway may know about this target (no secret)."""
        return {"name": self.name, "kind": self.kind, "language": self.language,
                "display_name": self.display_name, "dialect": self.dialect}


@dataclass(frozen=True)
class AgentConfig:
    agent_id: str
    tags: list[str]
    targets: dict[str, Target]
    warnings: list[str] = field(default_factory=list)


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> AgentConfig:
    """Read and validate the file; resolve each target's URL. Raises ``ConfigError``."""
    environ = dict(os.environ if environ is None else environ)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    _no_unknown(path, "", data, {"agent", "targets"})
    agent = _table(path, "agent", data.get("agent", {}))
    _no_unknown(path, "agent", agent, AGENT_KEYS)
    agent_id = agent.get("id", socket.gethostname())
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ConfigError(path, "agent.id", "must be a non-empty string")
    tags = agent.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(path, "agent.tags", "must be a list of strings")
    targets_table = _table(path, "targets", data.get("targets", {}))
    if not targets_table:
        raise ConfigError(path, "targets", "no target configured: add a [targets.NAME] table")
    warnings: list[str] = []
    targets = {name: _target(path, name, raw, environ, warnings)
               for name, raw in targets_table.items()}
    return AgentConfig(agent_id=agent_id, tags=list(tags), targets=targets, warnings=warnings)


def _target(path: Any, name: str, raw: Any, environ: dict[str, str], warnings: list[str]) -> Target:
    where = f"targets.{name}"
    if not TARGET_NAME.match(name):
        raise ConfigError(path, where, "target names use letters, digits, '_', '-' and '.'")
    raw = _table(path, where, raw)
    _no_unknown(path, where, raw, TARGET_KEYS)
    kind = raw.get("kind")
    if kind not in KINDS:
        raise ConfigError(path, f"{where}.kind",
                          f"must be one of {', '.join(map(repr, sorted(KINDS)))}, got {kind!r}")
    display_name = raw.get("display_name", name)
    if not isinstance(display_name, str) or not display_name:
        raise ConfigError(path, f"{where}.display_name", "must be a non-empty string")
    row_limit = _int(path, f"{where}.row_limit", raw.get("row_limit", 1000), minimum=1)
    timeout = _int(path, f"{where}.statement_timeout", raw.get("statement_timeout", 300), minimum=0)
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
        raise ConfigError(path, f"{where}.env", "must be a table of strings, e.g. { EXTRA = \"x\" }")
    url = _resolve_url(path, where, raw, environ, warnings)
    if url is None and kind == "sql":
        raise ConfigError(path, f"{where}.url_env",
                          "no connection URL: set one of url_env, url_file or url")
    source = next((k for k in ("url_env", "url_file", "url") if k in raw), "url")
    dialect = _dialect(path, f"{where}.{source}", url, required=kind == "sql")
    return Target(name=name, kind=kind, display_name=display_name, dialect=dialect,
                  row_limit=row_limit, statement_timeout=timeout, env=dict(env), url=url,
                  url_env=raw.get("url_env"))


def _resolve_url(path: Any, where: str, raw: dict[str, Any], environ: dict[str, str],
                 warnings: list[str]) -> str | None:
    sources = [k for k in ("url_env", "url_file", "url") if k in raw]
    if len(sources) > 1:
        raise ConfigError(path, f"{where}.{sources[1]}",
                          f"set only one of url_env, url_file or url (found {', '.join(sources)})")
    if not sources:
        return None
    key = sources[0]
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{where}.{key}", "must be a non-empty string")
    if key == "url_env":
        url = environ.get(value, "").strip()
        if not url:
            raise ConfigError(path, f"{where}.url_env",
                              f"environment variable {value} is not set or empty")
        return url
    if key == "url_file":
        return _read_url_file(path, f"{where}.url_file", Path(value))
    if _has_password(value):
        warnings.append(f"{where}.url: the inline URL carries a password; "
                        "prefer url_env or url_file")
    return value


def _read_url_file(path: Any, where: str, file: Path) -> str:
    try:
        st = file.stat()
    except OSError as exc:
        raise ConfigError(path, where, f"cannot read {file}: {exc.strerror}") from None
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(path, where, f"{file} is readable by group or others "
                          f"(mode {stat.S_IMODE(st.st_mode):o}): run `chmod 600 {file}`")
    url = file.read_text(encoding="utf-8").strip()
    if not url:
        raise ConfigError(path, where, f"{file} is empty")
    return url


def _dialect(path: Any, where: str, url: str | None, required: bool) -> str | None:
    if url is None:
        return None
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    dialect = DIALECTS.get(scheme)
    if dialect is None and required:
        shown = repr(scheme) if re.fullmatch(r"[a-z0-9.+-]+", scheme) else "none"
        raise ConfigError(path, where, f"unsupported URL scheme {shown}: "
                          "use postgresql://, mysql://, mariadb:// or sqlite://")
    return dialect


def _has_password(url: str) -> bool:
    try:
        return bool(urlsplit(url).password)
    except ValueError:
        return False


def _int(path: Any, where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(path, where, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _table(path: Any, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, where, "must be a table")
    return value


def _no_unknown(path: Any, where: str, table: dict[str, Any], known: set[str]) -> None:
    for key in table:
        if key not in known:
            field_name = f"{where}.{key}" if where else key
            raise ConfigError(path, field_name,
                              f"unknown setting (known: {', '.join(sorted(known))})")
