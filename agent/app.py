"""The agent application: its configuration (traitlets, as the gateway's), its secrets, start and stop.

Configure with flags (``cellgate agent --gateway … --config agent.toml``), ``cellgate_config.py``
(``c.Agent.kernel_start_timeout = 90``: the same file and kind of file as the gateway's
``c.Gateway.*``) or the documented environment variables; flags win over the config file, which
wins over the environment. The targets stay data, in the TOML file ``Agent.targets_file``
(agent/config.py); its ``[agent]`` table may set ``id``, ``tags`` and the isolation settings
instead of ``c.Agent.*``, not both (refused, naming both places).

:meth:`Agent.configure` reads all of it; :meth:`Agent.prepare` reads the token, takes the
secrets out of the process's reach (``isolation.hide_secrets``) and builds the
:class:`~agent.runtime.AgentRuntime`; :meth:`Agent.start` serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Mapping
from typing import Any, cast

from traitlets import Float, Integer, List, TraitError, Unicode, default, validate
from traitlets.config import Application, Config

from cellgate import __version__
from cellgate.config_file import load_python_config
from cellgate.seconds import check_seconds, from_traits
from cellgate.secret_files import SecretFileError, exposed_mode, read_private_file

from . import config as targets_config
from .config import AgentConfig, ConfigError
from .connection import agent_ws_url
from .isolation import hide_secrets
from .runtime import AgentRuntime
from .timeouts import Timeouts

TOKEN_ENV = "CELLGATE_AGENT_TOKEN"
URL_ENV = "CELLGATE_URL"

#: Agent trait → Timeouts field
TIMEOUT_FIELDS = {
    "reconnect_delay_min": "reconnect_min", "reconnect_delay_max": "reconnect_max", "connect_timeout": "connect",
    "ws_ping_interval": "ws_ping", "kernel_start_timeout": "kernel_start", "kernel_probe_interval": "kernel_probe",
    "kernel_watch_interval": "kernel_watch", "kernel_shutdown_timeout": "kernel_shutdown",
    "uid_kill_timeout": "uid_kill", "explain_timeout": "explain",
}
#: key of the targets file's ``[agent]`` table → Agent trait
AGENT_TABLE = {"id": "agent_id", "tags": "tags", "kernel_isolation": "kernel_isolation",
               "kernel_uids": "kernel_uids", "runtime_dir": "runtime_dir", "state_dir": "state_dir"}
#: where the journal lives when Agent.state_dir is not set: ``<root>/<agent id>``, the root from this
#: variable or ``STATE_ROOT``
STATE_ROOT_ENV = "CELLGATE_AGENT_STATE_ROOT"
STATE_ROOT = "/var/lib/cellgate-agent"
#: defaults computed when read, as the settings table in docs/agent.md shows them
DYNAMIC_DEFAULTS = {"gateway_url": f"`${URL_ENV}`", "token": f"`${TOKEN_ENV}`", "agent_id": "the host name",
                    "state_dir": f"`${{{STATE_ROOT_ENV}:-{STATE_ROOT}}}/<agent_id>`", "log_level": "`INFO`"}


class Agent(Application):
    name = "cellgate-agent"
    description = "The cellgate agent: hosts the targets' kernels next to them and dials out to the gateway."
    version = __version__

    gateway_url = Unicode(config=True, help=(
        f"Gateway URL, http(s)://host[:port][/prefix]; the agent connects to ws(s)://…/api/v1/agent (env {URL_ENV})."))
    token_file = Unicode("", config=True, help=(
        "File holding the agent token (not a user token), readable by its owner only (chmod 600): refused when "
        "group or others have any access."))
    token = Unicode(config=True, help=(
        f"The agent token (env {TOKEN_ENV}). Prefer token_file or the variable: a command line is visible to "
        "other users; in the config file, that file must be readable by its owner only."))
    targets_file = Unicode("", config=True, help=(
        "The TOML file of targets and their credentials' sources (required); its [agent] table may set "
        "id, tags, kernel_isolation, kernel_uids, runtime_dir and state_dir instead of c.Agent.*."))
    config_file = Unicode("cellgate_config.py", config=True, help=(
        "Python config file to load, if it exists (c.Agent.*, beside the gateway's c.Gateway.*). Refused when "
        "any user may write to it: the agent runs it."))

    agent_id = Unicode(config=True, help=(
        "The agent's id (the targets file's [agent] id); keep it stable across restarts: the agent token is bound to it."))
    tags = List(Unicode(), config=True, help="Free-form tags announced to the gateway ([agent] tags).")
    kernel_isolation = Unicode("uid", config=True, help=(
        '"uid": each kernel runs as its own unprivileged uid (needs root or CAP_SETUID, CAP_SETGID, CAP_KILL, '
        'CAP_CHOWN, CAP_DAC_OVERRIDE); "off": as the agent\'s own user, development only ([agent] kernel_isolation).'))
    kernel_uids = Unicode("{}-{}".format(*targets_config.DEFAULT_KERNEL_UIDS), config=True, help=(
        'The uids kernels run as, "FIRST-LAST", used by nothing else on the host ([agent] kernel_uids).'))
    runtime_dir = Unicode("", config=True, help=(
        "Directory of the kernels' directories, owned by the agent's user, writable by nobody else "
        "([agent] runtime_dir). Default: /run/cellgate-agent/<pid>-XXXX, removed at exit."))
    state_dir = Unicode("", config=True, help=(
        "Directory of the task journal and of the outputs waiting for the gateway's acknowledgement, kept across "
        "restarts, mode 0700, one per agent ([agent] state_dir). A second agent process on it is refused."))
    output_chunk_bytes = Integer(1024 * 1024, config=True, help=(
        "Largest output text, in bytes, sent in one frame; a longer stream output is split (keep it well below "
        "the gateway's WebSocket message limit, 8 MiB or more)."))
    outbox_memory_bytes = Integer(16 * 1024 * 1024, config=True, help=(
        "Bytes of unacknowledged task output held in memory; beyond, it is spilled to the state directory."))

    # how long the agent waits (agent/timeouts.py); each trait fills the Timeouts field in TIMEOUT_FIELDS
    reconnect_delay_min = Float(Timeouts.reconnect_min, config=True, help=(
        "Seconds before the first reconnect to the gateway; the delay doubles per failed attempt up to "
        "reconnect_delay_max, each randomised to 50-100 %, and resets once the gateway answers welcome."))
    reconnect_delay_max = Float(Timeouts.reconnect_max, config=True, help=(
        "Longest delay between reconnects, in seconds; keep it well below the gateway's Gateway.agent_grace."))
    connect_timeout = Float(Timeouts.connect, config=True, help="Seconds one attempt to open the WebSocket to the gateway may take.")
    ws_ping_interval = Float(Timeouts.ws_ping, config=True, help=(
        "Seconds between WebSocket pings to the gateway; a ping unanswered this long drops the connection."))
    kernel_start_timeout = Float(Timeouts.kernel_start, config=True, help=(
        "Seconds a kernel has to become ready after a start or restart; keep it below the gateway's "
        "Gateway.kernel_start_timeout so that the gateway gets the agent's reason."))
    kernel_probe_interval = Float(Timeouts.kernel_probe, config=True, help="Seconds between kernel_info probes while a kernel starts.")
    kernel_watch_interval = Float(Timeouts.kernel_watch, config=True, help=(
        "Seconds between checks that a running kernel is alive (a dead one is reported as kernel_status dead)."))
    kernel_shutdown_timeout = Float(Timeouts.kernel_shutdown, config=True, help=(
        "Seconds a kernel has to exit after a shutdown request before it is killed."))
    uid_kill_timeout = Float(Timeouts.uid_kill, config=True, help=(
        "Seconds the agent keeps SIGKILLing what a kernel's uid left running; a uid with survivors stays out of the pool."))
    explain_timeout = Float(Timeouts.explain, config=True, help=(
        "Statement timeout, in seconds, of each EXPLAIN run for a row estimate; keep it at most the gateway's "
        "Gateway.explain_timeout."))

    aliases = {"gateway": "Agent.gateway_url", "gateway-url": "Agent.gateway_url", "token-file": "Agent.token_file",
               "token": "Agent.token",
               "config": "Agent.targets_file", "config-file": "Agent.config_file", "log-level": "Agent.log_level"}

    #: the targets file, resolved (``load_targets``)
    targets: AgentConfig | None = None

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.INFO

    @default("gateway_url")
    def _gateway_url_default(self) -> str:
        return os.environ.get(URL_ENV, "")

    @default("token")
    def _token_default(self) -> str:
        return os.environ.get(TOKEN_ENV, "")

    @default("agent_id")
    def _agent_id_default(self) -> str:
        return socket.gethostname()

    @validate("gateway_url")
    def _valid_gateway_url(self, proposal: Any) -> str:
        value: str = proposal["value"]
        _check_gateway_url(value)
        return value

    @validate("output_chunk_bytes", "outbox_memory_bytes")
    def _valid_bytes(self, proposal: Any) -> int:
        value: int = proposal["value"]
        if value < 4096:
            raise TraitError(f"Agent.{proposal['trait'].name} must be at least 4096 bytes, got {value}")
        return value

    @validate("agent_id", "kernel_isolation", "kernel_uids", "runtime_dir", "state_dir")
    def _valid_agent_setting(self, proposal: Any) -> str:
        name, value = proposal["trait"].name, proposal["value"]
        check = {"agent_id": targets_config.check_agent_id, "kernel_isolation": targets_config.check_isolation,
                 "kernel_uids": targets_config.parse_kernel_uids, "runtime_dir": targets_config.check_runtime_dir,
                 "state_dir": targets_config.check_runtime_dir}[name]
        try:
            check((value or None) if name in ("runtime_dir", "state_dir") else value)
        except ValueError as exc:
            raise TraitError(f"Agent.{name} {exc}") from None
        checked: str = value
        return checked

    @validate(*TIMEOUT_FIELDS)
    def _valid_seconds(self, proposal: Any) -> float:
        return check_seconds("Agent", proposal["trait"].name, proposal["value"])

    def timeouts(self) -> Timeouts:
        if self.reconnect_delay_max < self.reconnect_delay_min:
            raise TraitError(f"Agent.reconnect_delay_max ({self.reconnect_delay_max:g}) must be at least "
                             f"Agent.reconnect_delay_min ({self.reconnect_delay_min:g}): raise it or lower the other")
        return from_traits(Timeouts, self, TIMEOUT_FIELDS)

    # -- configuration ----------------------------------------------------------------------

    def configure(self, flags: Mapping[str, Any] | None = None) -> None:
        """Read the settings: ``flags`` (trait name → value, from the command line) over the config
        file over the environment defaults. Raises ``TraitError``. The targets file is read by
        ``load_targets`` (in ``prepare``, once the token is read)."""
        cli = Config({"Agent": dict(flags or {})})
        self.cli_config = cli
        self.update_config(cli)
        if os.path.exists(self.config_file):
            load_python_config(self, self.config_file, cli, "Agent.config_file")
        # traitlets types the log_level Enum as object; its validator leaves an int or a level name
        logging.basicConfig(level=cast("int | str", self.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if self.gateway_url:  # a default from the environment is not validated on its own
            _check_gateway_url(self.gateway_url)
        self.timeouts()

    def _in_file(self) -> set[str]:
        """The traits the config file sets (and the command line does not)."""
        return set(self.config.Agent) - set(self.cli_config.Agent)

    def load_targets(self, environ: Mapping[str, str] | None = None) -> AgentConfig:
        """Read the targets file (``environ``: where ``url_env`` variables are looked up, default
        ``os.environ``); its ``[agent]`` table fills the traits that neither the command line nor
        the config file sets (both: refused). Raises ``ConfigError`` or ``TraitError``."""
        if not self.targets_file:
            raise TraitError("Agent.targets_file is not set: pass --config FILE (the TOML file of targets) "
                             "or set c.Agent.targets_file in the config file")
        path = self.targets_file
        found = targets_config.read_config(path, dict(os.environ if environ is None else environ))
        in_file = self._in_file()
        for key in sorted(found.agent_keys):
            trait = AGENT_TABLE[key]
            if trait in self.cli_config.Agent:
                continue
            if trait in in_file:
                raise ConfigError(path, f"agent.{key}", f"is also set as c.Agent.{trait} in {self.config_file}: "
                                  "set it in one place")
            setattr(self, trait, _table_value(found, key))
        uids = targets_config.parse_kernel_uids(self.kernel_uids)
        where = "Agent.kernel_uids" if "kernel_uids" in self.config.Agent else "agent.kernel_uids"
        targets_config.check_kernel_gids(path, found.targets.values(), uids, where)
        self.targets = dataclasses.replace(found, agent_id=self.agent_id, tags=list(self.tags),
                                           kernel_isolation=self.kernel_isolation, kernel_uids=uids,
                                           runtime_dir=self.runtime_dir or None,
                                           state_dir=self.state_dir or default_state_dir(self.agent_id))
        return self.targets

    # -- secrets and start ------------------------------------------------------------------

    def read_token(self) -> str:
        """The token from the most preferred place that sets one: the command line, the config file
        (``token_file`` or ``token``, not both), then ``$CELLGATE_AGENT_TOKEN``. Raises ``ValueError``."""
        in_file = self._in_file()
        if {"token", "token_file"} <= in_file:
            raise ValueError(f"c.Agent.token and c.Agent.token_file are both set in {self.config_file}: keep one "
                             "(token_file is preferred)")
        for scope in (set(self.cli_config.Agent), in_file):
            if "token_file" in scope and self.token_file:
                try:
                    return read_private_file(self.token_file)
                except SecretFileError as exc:
                    raise ValueError(f"--token-file (Agent.token_file): {exc}") from None
            if "token" in scope and self.token:
                if scope is in_file and (mode := exposed_mode(self.config_file)) is not None:
                    raise ValueError(f"c.Agent.token is set in {self.config_file}, which is readable by group or "
                                     f"others (mode {mode:o}): run `chmod 600 {self.config_file}` or use c.Agent.token_file")
                return self.token
        if self.token:
            return self.token
        raise ValueError(f"no agent token: pass --token-file FILE or set {TOKEN_ENV}")

    def prepare(self) -> AgentRuntime:
        """Read the token and the targets file, hide every secret from the process's own /proc
        entries and from any child, and build the runtime (``configure`` first). Raises
        ``ValueError`` (an ``IsolationError`` when kernels cannot be isolated as configured),
        ``ConfigError`` or ``TraitError``."""
        try:
            if not self.gateway_url:
                raise ValueError(f"no gateway URL: pass --gateway or set {URL_ENV}")
            token = self.read_token()
        finally:
            os.environ.pop(TOKEN_ENV, None)  # no child inherits it
        targets = self.load_targets()
        hide_secrets([token, *pop_target_secrets(targets)])
        return AgentRuntime(targets, self.gateway_url, token, self.timeouts(),
                            chunk_bytes=self.output_chunk_bytes, outbox_memory=self.outbox_memory_bytes)

    def start(self) -> None:
        asyncio.run(serve(self.prepare()))


def _check_gateway_url(value: str) -> None:
    try:
        agent_ws_url(value)
    except ValueError:
        raise TraitError(f"Agent.gateway_url (--gateway, env {URL_ENV}) must start with http://, https://, ws:// or "
                         f"wss://, got {value!r}: e.g. --gateway https://cellgate.example.com") from None


def default_state_dir(agent_id: str) -> str:
    """``$CELLGATE_AGENT_STATE_ROOT`` (or /var/lib/cellgate-agent) ``/<agent id>``, the id made safe as a file name."""
    root = os.environ.get(STATE_ROOT_ENV) or STATE_ROOT
    return os.path.join(root, agent_id.replace("/", "_").lstrip(".") or "agent")


def _table_value(found: AgentConfig, key: str) -> Any:
    """The value of ``[agent] key`` as the trait takes it."""
    if key == "kernel_uids":
        return f"{found.kernel_uids[0]}-{found.kernel_uids[1]}"
    return {"id": found.agent_id, "tags": found.tags, "kernel_isolation": found.kernel_isolation,
            "runtime_dir": found.runtime_dir, "state_dir": found.state_dir}[key]


def pop_target_secrets(config: AgentConfig) -> list[str]:
    """Drop the variables holding the targets' URLs from ``os.environ`` (``url_env``, and any
    other variable whose value is a target's URL or read-only URL, such as
    ``readonly_url_env``'s); return every URL, to scrub from the process memory."""
    secrets: list[str] = []
    for target in config.targets.values():
        if target.url_env:
            os.environ.pop(target.url_env, None)
        for attr in ("url", "readonly_url"):
            value = getattr(target, attr, None)
            if isinstance(value, str) and value:
                secrets.append(value)
    for name, value in list(os.environ.items()):
        if value.strip() in secrets:
            del os.environ[name]
    return secrets


async def serve(runtime: AgentRuntime) -> None:
    """Run until SIGINT or SIGTERM, then stop every kernel."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.run(stop)


def settings_table() -> str:
    """The Markdown table of the Agent's settings in docs/agent.md (a test compares the two)."""
    flags: dict[str, list[str]] = {}
    for flag, trait in Agent.aliases.items():
        flags.setdefault(trait.split(".", 1)[1], []).append(f"`--{flag}`")
    rows = ["| setting | flag | default | |", "|---|---|---|---|"]
    traits = Agent.class_own_traits(config=True)
    for name in [n for n in vars(Agent) if n in traits] + ["log_level"]:  # in the order of definition
        trait = Agent.class_traits()[name]
        if name in DYNAMIC_DEFAULTS:
            shown = DYNAMIC_DEFAULTS[name]
        elif isinstance(trait, List):
            shown = "`[]`"
        else:
            shown = f"`{trait.default_value!r}`" if trait.default_value != "" else ""
        help_text = trait.help if name != "log_level" else "DEBUG, INFO, WARN or ERROR; logs go to stderr."
        rows.append(f"| `c.Agent.{name}` | {', '.join(flags.get(name, []))} | {shown} | {help_text} |")
    return "\n".join(rows) + "\n"
