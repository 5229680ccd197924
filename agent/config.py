"""The agent's targets file: load, validate, resolve the targets' connection URLs.

The targets are data, in this TOML file (``Agent.targets_file``, flag ``--config``); the agent's
own settings are ``Agent`` traits (agent/app.py), and the ``[agent]`` table below may set six of
them instead (``id`` → ``Agent.agent_id``, ``tags``, ``kernel_isolation``, ``kernel_uids``,
``runtime_dir``, ``state_dir``), checked by the same functions (``check_*``, ``parse_kernel_uids``). The file::

    [agent]
    id = "agent-eu-1"            # default: the host name
    tags = ["prod"]
    kernel_isolation = "uid"     # uid (default): each kernel runs as its own uid | off (development)
    kernel_uids = "61000-61999"  # the uids kernels run as (default); used by nothing else
    runtime_dir = "/srv/cellgate-agent"  # default: /run/cellgate-agent/<pid>-XXXX (made and removed)
    state_dir = "/var/lib/cellgate-agent/agent-eu-1"  # the task journal (default: this, by id)

    [targets.payments]
    kind = "sql"                 # sql | python
    display_name = "Payments (prod)"
    url_env = "PAYMENTS_URL"     # or url_file = "/etc/cellgate/payments.url", or url = "..."
    readonly_url_env = "PAYMENTS_RO_URL"  # the read-only credential (or readonly_url_file, readonly_url)
    row_limit = 1000
    statement_timeout = 300
    env = { EXTRA = "x" }
    kernel_gid = 61000           # optional: the kernels' group (default: the kernel's uid)

A target's connection URL is looked up in this order of preference, exactly one source per
target: ``url_env`` (an environment variable of the agent), ``url_file`` (a file readable by
the agent's user only: refused when ``mode & 0o077``), ``url`` (inline; a warning is logged when
it carries a password, and refused when it carries one and the config file is readable by group
or others). The URL lives in ``Target.url`` and is never sent to the gateway nor
logged: ``repr(target)`` leaves it out.

A SQL target's read-only credential comes the same way from ``readonly_url_env``,
``readonly_url_file`` or ``readonly_url`` (same rules; same database family as the URL) and lives
in ``Target.readonly_url``, as secret as ``url``.

Every problem raises ``ConfigError`` naming the file and the field, e.g.
``agent.toml: targets.payments.kind: must be one of 'python', 'sql', got 'mongo'``.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cellgate.kernels.registry import KINDS, dialect_for_scheme, family
from cellgate.secret_files import SecretFileError, exposed_mode, read_private_file

TARGET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
AGENT_KEYS = {"id", "tags", "kernel_isolation", "kernel_uids", "runtime_dir", "state_dir"}
READONLY_URL_KEYS = ("readonly_url_env", "readonly_url_file", "readonly_url")
TARGET_KEYS = {"kind", "display_name", "url_env", "url_file", "url", *READONLY_URL_KEYS, "row_limit",
               "statement_timeout", "env", "kernel_gid"}
ISOLATION_MODES = ("uid", "off")
DEFAULT_KERNEL_UIDS = (61000, 61999)
KERNEL_UIDS = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
MIN_KERNEL_ID = 1000  # below: system users; never run a kernel as one
_T = TypeVar("_T")


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
    #: the read-only credential (readonly_url_env | readonly_url_file | readonly_url): the kernel
    #: runs auto-approved read-only cells and EXPLAIN with it; a secret like ``url``
    readonly_url: str | None = field(default=None, repr=False)
    kernel_gid: int | None = None  # the kernels' gid (e.g. to share a SQLite file); default: the uid

    @property
    def language(self) -> str:
        return KINDS[self.kind].language

    @property
    def kernel_name(self) -> str:
        return KINDS[self.kind].kernel

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
    kernel_isolation: str = "uid"  # uid | off
    kernel_uids: tuple[int, int] = DEFAULT_KERNEL_UIDS  # first, last (inclusive)
    runtime_dir: str | None = None  # None: /run/cellgate-agent/<pid>-XXXX, made and removed
    state_dir: str | None = None  # None: /var/lib/cellgate-agent/<agent id> (the journal, spilled outputs)
    #: the keys the file's ``[agent]`` table sets (the others are defaults); ``agent.app`` merges
    #: them with the ``Agent`` traits
    agent_keys: frozenset[str] = frozenset()


# -- the [agent] settings: also the Agent traits' checks (agent/app.py); ValueError says what is wrong

def check_agent_id(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("must be a non-empty string")
    return value


def check_tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError("must be a list of strings")
    return list(value)


def check_isolation(value: Any) -> str:
    if value not in ISOLATION_MODES:
        raise ValueError(f"must be one of {', '.join(map(repr, ISOLATION_MODES))}, got {value!r}")
    return str(value)


def check_runtime_dir(value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not os.path.isabs(value)):
        raise ValueError(f"must be an absolute path, got {value!r}")
    return value


def parse_kernel_uids(value: Any) -> tuple[int, int]:
    """``"FIRST-LAST"`` → (first, last)."""
    match = KERNEL_UIDS.match(value) if isinstance(value, str) else None
    first, last = (int(match[1]), int(match[2])) if match else (-1, -1)
    if not match or not MIN_KERNEL_ID <= first <= last < 2**31 - 1:
        raise ValueError(f"must be a range \"FIRST-LAST\" of unused uids >= {MIN_KERNEL_ID}, "
                         f"e.g. \"61000-61999\", got {value!r}")
    return first, last


def load_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> AgentConfig:
    """Read and validate the file; resolve each target's URL. Raises ``ConfigError``."""
    config = read_config(path, environ)
    check_kernel_gids(path, config.targets.values(), config.kernel_uids, "agent.kernel_uids")
    return config


def read_config(path: str | os.PathLike[str], environ: dict[str, str] | None = None) -> AgentConfig:
    """``load_config`` without the check of the targets' ``kernel_gid`` against the kernel uids
    (``check_kernel_gids``), for when the uids may come from elsewhere (the ``Agent`` traits)."""
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
    agent_id = _checked(path, "agent.id", check_agent_id, agent.get("id", socket.gethostname()))
    tags = _checked(path, "agent.tags", check_tags, agent.get("tags", []))
    targets_table = _table(path, "targets", data.get("targets", {}))
    if not targets_table:
        raise ConfigError(path, "targets", "no target configured: add a [targets.NAME] table")
    warnings: list[str] = []
    targets = {name: _target(path, name, raw, environ, warnings)
               for name, raw in targets_table.items()}
    isolation = _checked(path, "agent.kernel_isolation", check_isolation, agent.get("kernel_isolation", "uid"))
    runtime_dir = _checked(path, "agent.runtime_dir", check_runtime_dir, agent.get("runtime_dir"))
    state_dir = _checked(path, "agent.state_dir", check_runtime_dir, agent.get("state_dir"))
    kernel_uids = DEFAULT_KERNEL_UIDS if agent.get("kernel_uids") is None else \
        _checked(path, "agent.kernel_uids", parse_kernel_uids, agent["kernel_uids"])
    return AgentConfig(agent_id=agent_id, tags=tags, targets=targets, warnings=warnings,
                       kernel_isolation=isolation, kernel_uids=kernel_uids,
                       runtime_dir=runtime_dir, state_dir=state_dir, agent_keys=frozenset(agent))


def check_kernel_gids(path: str | os.PathLike[str], targets: Iterable[Target], kernel_uids: tuple[int, int],
                      setting: str) -> None:
    """Refuse a target ``kernel_gid`` inside the kernel uids (``setting`` names where they are set)."""
    for target in targets:
        if target.kernel_gid is not None and kernel_uids[0] <= target.kernel_gid <= kernel_uids[1]:
            raise ConfigError(path, f"targets.{target.name}.kernel_gid",
                              f"{target.kernel_gid} is inside {setting} "
                              f"({kernel_uids[0]}-{kernel_uids[1]}), so the kernel running as "
                              "that uid would share the group: pick a gid outside the range")


def _checked(path: Any, where: str, check: Callable[[Any], _T], value: Any) -> _T:
    try:
        return check(value)
    except ValueError as exc:
        raise ConfigError(path, where, str(exc)) from None


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
    dialect = _dialect(path, f"{where}.{source}", url, required=KINDS[kind].needs_dialect)
    readonly_url = _readonly_url(path, where, raw, environ, warnings, kind, dialect)
    kernel_gid = raw.get("kernel_gid")
    if kernel_gid is not None:
        kernel_gid = _int(path, f"{where}.kernel_gid", kernel_gid, minimum=MIN_KERNEL_ID)
    return Target(name=name, kind=kind, display_name=display_name, dialect=dialect,
                  row_limit=row_limit, statement_timeout=timeout, env=dict(env), url=url,
                  url_env=raw.get("url_env"), kernel_gid=kernel_gid, readonly_url=readonly_url)


def _resolve_url(path: Any, where: str, raw: dict[str, Any], environ: dict[str, str],
                 warnings: list[str], prefix: str = "") -> str | None:
    """The URL of ``{prefix}url_env | {prefix}url_file | {prefix}url`` (prefix "" or "readonly_")."""
    env_key, file_key, url_key = f"{prefix}url_env", f"{prefix}url_file", f"{prefix}url"
    sources = [k for k in (env_key, file_key, url_key) if k in raw]
    if len(sources) > 1:
        raise ConfigError(path, f"{where}.{sources[1]}",
                          f"set only one of {env_key}, {file_key} or {url_key} (found {', '.join(sources)})")
    if not sources:
        return None
    key = sources[0]
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"{where}.{key}", "must be a non-empty string")
    if key == env_key:
        url = environ.get(value, "").strip()
        if not url:
            raise ConfigError(path, f"{where}.{env_key}",
                              f"environment variable {value} is not set or empty")
        return url
    if key == file_key:
        return _read_url_file(path, f"{where}.{file_key}", Path(value))
    if _has_password(value):
        _check_inline_secret(path, f"{where}.{key}")
        warnings.append(f"{where}.{key}: the inline URL carries a password; "
                        f"prefer {env_key} or {file_key}")
    return value


def _readonly_url(path: Any, where: str, raw: dict[str, Any], environ: dict[str, str],
                  warnings: list[str], kind: str, dialect: str | None) -> str | None:
    """The target's read-only credential: SQL targets only, same database family as ``url``."""
    url = _resolve_url(path, where, raw, environ, warnings, prefix="readonly_")
    if url is None:
        return None
    source = next(k for k in READONLY_URL_KEYS if k in raw)
    if kind != "sql":
        raise ConfigError(path, f"{where}.{source}", "a read-only credential is for sql targets only")
    found = _dialect(path, f"{where}.{source}", url, required=True)
    if family(found) != family(dialect):
        raise ConfigError(path, f"{where}.{source}",
                          f"is a {found} URL but the target's URL is {dialect}: both must name the same database")
    return url


def _check_inline_secret(path: Any, where: str) -> None:
    """A config file that holds a password must be readable by its owner only."""
    mode = exposed_mode(path)
    if mode is not None:
        raise ConfigError(path, where, f"the inline URL carries a password but {path} is "
                          f"readable by group or others (mode {mode:o}): run `chmod 600 {path}` "
                          "or move the URL to url_env or url_file")


def _read_url_file(path: Any, where: str, file: Path) -> str:
    try:
        return read_private_file(file)
    except SecretFileError as exc:
        raise ConfigError(path, where, str(exc)) from None


def _dialect(path: Any, where: str, url: str | None, required: bool) -> str | None:
    if url is None:
        return None
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    dialect = dialect_for_scheme(scheme)
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
