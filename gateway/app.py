"""The gateway application: configuration (traitlets), the parts wired together, routes, start and stop.

Configure with flags (``cellgate gateway --port 8765 --db-url …``), environment variables
(documented defaults below) or ``cellgate_config.py`` (``c.Gateway.port = 8765``).

:func:`assemble` builds the gateway's parts and hands each the others it uses (task flow,
relay, kernel lifecycle, agent sessions, scripts, the gate's host); :func:`make_app` gives the
handlers those parts as tornado settings (``handlers/base.py``'s typed properties).
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from tornado import httpserver, web
from traitlets import Float, Integer, TraitError, Unicode, default, validate
from traitlets.config import Application

from .. import __version__
from ..config_file import flag_config, load_python_config
from ..seconds import check_seconds, from_traits
from . import analysis, openapi
from .agents import CLOSE_GOING_AWAY, AgentRegistry
from .background import Background
from .cells import CellHost
from .events import TaskEvents
from .flow import TaskFlow
from .gate import Gate
from .handlers import admin, agent_ws, audit, kernels, kernelspecs, login, schedules, targets, tasks, templates, tokens
from .handlers.base import APIHandler, NotFoundHandler
from .kernels import KernelRegistry, LiveKernel
from .lifecycle import KernelLifecycle
from .oidc import CALLBACK_PATH, OIDC, OIDCProvider
from .recorder import MAX_BYTES as RECORDER_BYTES
from .recovery import Recovery
from .relay import Relay
from .scripts import Scripts
from .sessions import AgentSessions
from .slack import handlers as slack_handlers
from .slack.config import Slack
from .slack.integration import SlackIntegration
from .sockets import SocketRegistry
from .store import Store
from .sweeper import Sweeper
from .templates.config import Templates
from .schedules.service import Schedules
from .templates.library import TemplateLibrary
from .timeouts import Timeouts

HANDLER_MODULES = [kernelspecs, kernels, agent_ws, tasks, targets, admin, audit, slack_handlers, login, tokens, templates,
                   schedules]


class TaskPageHandler(web.RequestHandler):
    """The link shown in a held cell. Without a browser sign-in yet, it shows how to act, not the task."""

    access = {"GET": "anonymous"}

    def get(self, task_id: str) -> None:
        n = html.escape(task_id)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(f"""<!doctype html><title>cellgate task #{n}</title>
<h1>cellgate task #{n}</h1>
<p>Details: <code>cellgate task show {n}</code></p>
<p>Review: <code>cellgate review approve {n}</code> or <code>cellgate review reject {n} --comment "why"</code></p>""")


class OpenAPIHandler(APIHandler):
    access = {"GET": "anonymous"}

    def get(self) -> None:
        self.send(openapi.document(routes(), __version__))


class VersionHandler(APIHandler):
    access = {"GET": "anonymous"}

    def get(self) -> None:
        self.send({"version": __version__})


def routes() -> list[tuple[str, type]]:
    found: list[tuple[str, type]] = [(r"/api/v1/?", VersionHandler), (r"/api/v1/openapi.json", OpenAPIHandler),
                                     (r"/tasks/(\d+)", TaskPageHandler)]
    for module in HANDLER_MODULES:
        found.extend(module.default_handlers)
    found.append((r"/api/.*", NotFoundHandler))
    return found


def message_limit(max_code_bytes: int) -> int:
    """Bytes of one HTTP body or WebSocket message: room for the largest accepted code JSON-escaped
    (``\\uXXXX``: 6 bytes a character at worst) plus the envelope, at least 8 MiB. Bigger is refused
    before it is read: parsing a huge body on the event loop would stall every other request."""
    return max(8 * 1024 * 1024, 6 * max_code_bytes + 64 * 1024)


@dataclass
class Parts:
    """The gateway's parts, each given the others it uses. Shared state (``agents``, ``kernels``,
    ``events``, ``sockets``) is one object each, held by the parts that need it."""

    store: Store
    public_url: str
    timeouts: Timeouts
    flow: TaskFlow
    relay: Relay
    lifecycle: KernelLifecycle
    sessions: AgentSessions
    scripts: Scripts
    cells: CellHost
    templates: TemplateLibrary  # without c.Templates.repository: an empty library that says so
    schedules: Schedules
    sweeper: Sweeper
    agents: AgentRegistry = field(default_factory=AgentRegistry)
    kernels: KernelRegistry = field(default_factory=KernelRegistry)
    events: TaskEvents = field(default_factory=TaskEvents)
    sockets: SocketRegistry = field(default_factory=SocketRegistry)  # open WebSockets, closed when their token is revoked
    background: Background = field(default_factory=Background)

    def settings(self) -> dict[str, Any]:
        """What handlers read (``handlers/base.Parts``)."""
        return {"store": self.store, "public_url": self.public_url, "timeouts": self.timeouts, "flow": self.flow,
                "lifecycle": self.lifecycle, "sessions": self.sessions, "scripts": self.scripts, "agents": self.agents,
                "kernels": self.kernels, "events": self.events, "sockets": self.sockets, "background": self.background,
                "templates": self.templates, "schedules": self.schedules}


def assemble(store: Store, public_url: str, *, timeouts: Timeouts | None = None, max_code_bytes: int = 1 << 20,
             analysis_budget: float = 2.0, analyser: analysis.Analyser | None = None,
             templates: TemplateLibrary | None = None, schedule_interval: float = 15.0,
             recorder_bytes: int = RECORDER_BYTES) -> Parts:
    """Build the gateway's parts on ``store`` (``analyser`` None: the process-wide default)."""
    timeouts = timeouts or Timeouts()
    public_url = public_url.rstrip("/")
    agents, kernels, events, sockets, background = AgentRegistry(), KernelRegistry(), TaskEvents(), SocketRegistry(), Background()
    flow = TaskFlow(store, events, agents, public_url, timeouts=timeouts, max_code_bytes=max_code_bytes,
                    analysis_budget=analysis_budget, analyser=analyser)
    relay = Relay(store, events, agents, flow, timeouts, recorder_bytes=recorder_bytes)
    cells = CellHost(store, events, agents, sockets, flow, relay)

    def make_gate(kernel: LiveKernel) -> Gate:
        return Gate(cells, kernel)
    lifecycle = KernelLifecycle(store, agents, kernels, flow, relay, make_gate, timeouts)
    recovery = Recovery(store, events, background)
    sessions = AgentSessions(store, agents, kernels, lifecycle, relay, background, timeouts, recovery)
    scripts = Scripts(store, events, agents, flow, relay, lifecycle, background, timeouts, recovery)
    templates = templates or TemplateLibrary(store)
    schedules = Schedules(store, flow, scripts, templates, events, interval=schedule_interval)
    sweeper = Sweeper(store, kernels, relay, events, timeouts)
    return Parts(store=store, public_url=public_url, timeouts=timeouts, flow=flow, relay=relay, lifecycle=lifecycle,
                 sessions=sessions, scripts=scripts, cells=cells, templates=templates, schedules=schedules,
                 sweeper=sweeper, agents=agents,
                 kernels=kernels, events=events,
                 sockets=sockets, background=background)


def make_app(parts: Parts, **settings: Any) -> web.Application:
    """``settings``: e.g. ``slack=`` (a SlackIntegration; without it, requests from Slack are refused)."""
    settings.setdefault("websocket_max_message_size", message_limit(parts.flow.max_code_bytes))
    return web.Application(routes(), websocket_ping_interval=parts.timeouts.client_ping, xsrf_cookies=False,
                           **parts.settings(), **settings)


#: Gateway trait → Timeouts field
TIMEOUT_FIELDS = {
    "agent_grace": "agent_grace", "agent_probe_timeout": "agent_probe", "agent_ping_interval": "agent_ping",
    "client_ping_interval": "client_ping",
    "explain_timeout": "explain", "kernel_start_timeout": "kernel_start", "kernel_request_timeout": "kernel_request",
    "time_limit_interrupt_timeout": "time_limit_interrupt", "time_limit_reply_timeout": "time_limit_reply",
    "task_poll_interval": "task_poll", "agent_poll_interval": "agent_poll", "long_poll_max": "long_poll_max",
    "store_timeout": "store_call", "store_long_timeout": "store_long_call", "store_statement_timeout": "store_statement",
    "store_connect_timeout": "store_connect", "store_pool_timeout": "store_pool", "store_retry_max": "store_retry_max",
    "sweep_interval": "sweep_interval", "sweep_margin": "sweep_margin",
    "stop_grace": "stop_grace",
}


#: on a stop, seconds past ``stop_grace`` the records of the scripts that end may take (a stalled store)
STOP_WRITES = 1.5


class Gateway(Application):
    name = "cellgate-gateway"
    description = "The cellgate gateway: the control plane where the gate is enforced."
    version = __version__
    classes = [Slack, OIDC, Templates]

    ip = Unicode("127.0.0.1", config=True, help="Interface to listen on.")
    port = Integer(8765, config=True, help="Port to listen on (env CELLGATE_PORT).")
    db_url = Unicode(config=True, help="Store URL: sqlite:///cellgate.db (default) or postgresql+psycopg://… (env CELLGATE_DB_URL).")
    public_url = Unicode(config=True, help="URL users reach the gateway at, for links (default http://IP:PORT).")
    config_file = Unicode("cellgate_config.py", config=True, help="Config file to load, if it exists.")
    socket_recheck_interval = Float(10.0, config=True, help=(
        "Seconds between re-checks of the tokens behind open WebSockets (revoked elsewhere, expired)."))
    schedule_interval = Float(15.0, config=True, help=(
        "Seconds between the schedules' ticks: reviews settled, new template commits checked, due runs started "
        "(a run is due at its cron minute and starts within this many seconds)."))
    max_code_bytes = Integer(1 << 20, config=True, help=(
        "Largest cell or script accepted, in bytes of UTF-8 (default 1 MiB). A larger cell is refused "
        "in the notebook (it does not become a task); a larger script gets HTTP 413."))
    analysis_budget = Float(2.0, config=True, help=(
        "Seconds the risk analysis of one cell may take. Over it, the cell is treated as not analysed: "
        "reviewed, never auto-approved."))
    analysis_workers = Integer(analysis.WORKERS, config=True, help=(
        "Worker processes that analyse large cells' risk (off the event loop, at lower priority; a cell's "
        "analysis holds a worker for at most Gateway.analysis_budget). Default: CPU cores - 1 (1-4)."))

    # how long the gateway waits: each trait fills its Timeouts field (TIMEOUT_FIELDS), whose default it takes
    agent_grace = Float(Timeouts.agent_grace, config=True, help=(
        "Seconds an agent may be away before the tasks running on its kernels end 'lost' (never re-run)."))
    agent_probe_timeout = Float(Timeouts.agent_probe, config=True, help=(
        "Seconds a connected agent has to answer a ping when a second connection claims its agent id; "
        "silent, it is replaced."))
    agent_ping_interval = Float(Timeouts.agent_ping, config=True, help="Seconds between the gateway's pings on an agent's socket.")
    client_ping_interval = Float(Timeouts.client_ping, config=True, help=(
        "Seconds between the gateway's pings on the kernel channels of users' Jupyter servers (keeps proxies from "
        "closing an idle socket)."))
    explain_timeout = Float(Timeouts.explain, config=True, help=(
        "Seconds an agent has to answer an EXPLAIN request (the row estimate reviewers see); over it, no estimate."))
    kernel_start_timeout = Float(Timeouts.kernel_start, config=True, help="Seconds an agent has to start or restart a kernel.")
    kernel_request_timeout = Float(Timeouts.kernel_request, config=True, help="Seconds an agent has to stop or interrupt a kernel.")
    time_limit_interrupt_timeout = Float(Timeouts.time_limit_interrupt, config=True, help=(
        "After a task's time limit: seconds the agent has to take the interrupt."))
    time_limit_reply_timeout = Float(Timeouts.time_limit_reply, config=True, help=(
        "After a task's time limit and interrupt: seconds the kernel has to end the cell before the task ends 'killed'."))
    task_poll_interval = Float(Timeouts.task_poll, config=True, help=(
        "Seconds between re-reads of a waiting task from the store (a decision made by another gateway process "
        "is seen this late)."))
    agent_poll_interval = Float(Timeouts.agent_poll, config=True, help=(
        "Seconds between looks for an agent while an approved script waits for one."))
    long_poll_max = Float(Timeouts.long_poll_max, config=True, help=(
        "Longest wait of one long-poll request for a task's outputs, in seconds."))
    stop_grace = Float(Timeouts.stop_grace, config=True, help=(
        "On SIGTERM/SIGINT: seconds the scripts that run have to end and write their records; those still "
        "running then end 'lost' (never re-run) and their kernels are stopped. Keep it at 3 s or less so the "
        "gateway exits within 5 s (2 s or less if the store may stall at that moment: docs/operations.md)."))

    # when the store fails (docs/operations.md, "The gateway's store fails")
    store_timeout = Float(Timeouts.store_call, config=True, help=(
        "Seconds a request waits for the store; beyond it the request answers 503 (try again) instead of hanging. "
        "Execution records are not cut by it: they are retried until they are written."))
    store_long_timeout = Float(Timeouts.store_long_call, config=True, help=(
        "Seconds a request that reads a whole table (the audit chain's export and verification) waits for the store."))
    store_statement_timeout = Float(Timeouts.store_statement, config=True, help=(
        "PostgreSQL statement_timeout of the store's connections, in seconds."))
    store_connect_timeout = Float(Timeouts.store_connect, config=True, help=(
        "Seconds to open a connection to a PostgreSQL store (libpq connect_timeout; at least 2)."))
    store_pool_timeout = Float(Timeouts.store_pool, config=True, help=(
        "Seconds to wait for a free connection of the store's pool."))
    store_retry_max = Float(Timeouts.store_retry_max, config=True, help=(
        "Longest pause, in seconds, between two attempts to write an execution record while the store is "
        "unavailable (the pause doubles from 0.1 s up to this); records are retried until written, never dropped."))
    recorder_buffer_bytes = Integer(RECORDER_BYTES, config=True, help=(
        "Bytes of execution records (outputs) one kernel may have waiting for the store (default 64 MiB); "
        "beyond it the gateway stops reading that kernel's agent socket until they are written (back-pressure)."))
    sweep_interval = Float(Timeouts.sweep_interval, config=True, help=(
        "Seconds between the sweeper's looks for dispatched or running tasks the gateway lost track of."))
    sweep_margin = Float(Timeouts.sweep_margin, config=True, help=(
        "Seconds past a task's time limit after which the sweeper ends it 'lost' (with the reason), when no "
        "execution of this gateway tracks it."))

    aliases = {"ip": "Gateway.ip", "port": "Gateway.port", "db-url": "Gateway.db_url",
               "max-code-bytes": "Gateway.max_code_bytes", "analysis-budget": "Gateway.analysis_budget",
               "public-url": "Gateway.public_url", "config": "Gateway.config_file", "log-level": "Application.log_level"}

    @default("port")
    def _port_default(self) -> int:
        return int(os.environ.get("CELLGATE_PORT", "8765"))

    @default("db_url")
    def _db_default(self) -> str:
        return os.environ.get("CELLGATE_DB_URL", "sqlite:///cellgate.db")

    @validate("port")
    def _valid_port(self, proposal: Any) -> int:
        if not 0 <= proposal["value"] <= 65535:
            raise TraitError(f"Gateway.port must be 0-65535, not {proposal['value']}")
        value: int = proposal["value"]
        return value

    @validate("max_code_bytes")
    def _valid_max_code(self, proposal: Any) -> int:
        if proposal["value"] < 1024:
            raise TraitError(f"Gateway.max_code_bytes must be at least 1024, not {proposal['value']}")
        value: int = proposal["value"]
        return value

    @validate("analysis_workers")
    def _valid_workers(self, proposal: Any) -> int:
        if not 1 <= proposal["value"] <= 64:
            raise TraitError(f"Gateway.analysis_workers must be 1-64, not {proposal['value']}")
        value: int = proposal["value"]
        return value

    @validate("analysis_budget")
    def _valid_budget(self, proposal: Any) -> float:
        if not 0 < proposal["value"] <= 60:
            raise TraitError(f"Gateway.analysis_budget must be more than 0 and at most 60 seconds, not {proposal['value']}")
        value: float = proposal["value"]
        return value

    @validate("recorder_buffer_bytes")
    def _valid_recorder_bytes(self, proposal: Any) -> int:
        if proposal["value"] < 1 << 20:
            raise TraitError(f"Gateway.recorder_buffer_bytes must be at least 1048576 (1 MiB), not {proposal['value']}")
        value: int = proposal["value"]
        return value

    @validate("socket_recheck_interval", *TIMEOUT_FIELDS)
    def _valid_seconds(self, proposal: Any) -> float:
        return check_seconds("Gateway", proposal["trait"].name, proposal["value"])

    def timeouts(self) -> Timeouts:
        return from_traits(Timeouts, self, TIMEOUT_FIELDS)

    async def drain(self, server: httpserver.HTTPServer, parts: Parts) -> float:
        """The first steps of a stop (docs/operations.md, "The gateway restarts"): accept no new
        connection, start no new script, give the running ones ``stop_grace`` seconds to end (then
        they end ``lost`` and their kernels are stopped), and close the agents' sockets with
        1001 so they reconnect to the next gateway process. Returns when the stop began (monotonic)."""
        since = time.monotonic()
        self.log.info("stopping: no new requests; running scripts have %g s to end", parts.timeouts.stop_grace)
        server.stop()
        try:  # bounded: with the store stalled, the records of what stops cannot be written now
            await asyncio.wait_for(parts.scripts.stop(parts.timeouts.stop_grace), parts.timeouts.stop_grace + STOP_WRITES)
        except TimeoutError:
            self.log.warning("stopping: the scripts still running did not end and write their records within %g s "
                             "(the store does not answer); their tasks are settled at the next start, from their "
                             "agents' journals", parts.timeouts.stop_grace + STOP_WRITES)
        parts.agents.close_all(CLOSE_GOING_AWAY, "the gateway is stopping; reconnect")
        for _ in range(20):  # each closed socket records the agent's leaving: give that 0.5 s at most
            if not parts.agents.agents:
                break
            await asyncio.sleep(0.025)
        return since

    def configure(self, flags: Mapping[str, Any] | None = None) -> None:
        """Read the settings: ``flags`` (trait name → value or its text, from the command line) over
        the config file over the environment defaults, as the agent does. Raises ``TraitError``
        naming the setting: a bad value, or a config file that fails to run (never only logged)."""
        cli = flag_config(Gateway, "Gateway", flags or {})
        self.update_config(cli)
        if os.path.exists(self.config_file):
            load_python_config(self, self.config_file, cli, "Gateway.config_file")
        # traitlets types the log_level Enum as object; its validator leaves an int or a level name
        logging.basicConfig(level=cast("int | str", self.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        OIDC(parent=self).check()
        Templates(parent=self)  # its settings are checked now, not at the first refresh

    def start(self) -> None:
        """Serve until SIGINT/SIGTERM, then exit the process at once: everything is closed by then
        (store, workers, sockets), and the interpreter's own teardown (garbage collection of every
        module) can take seconds on a loaded host: a stop must end within 5 s (docs/operations.md)."""
        asyncio.run(self.serve())
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    async def serve(self, ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
        """Run until SIGINT/SIGTERM, or until ``stop`` is set when given (then no signal handlers are
        installed: an in-process test gateway runs on a thread's own loop)."""
        timeouts = self.timeouts()
        store = Store(self.db_url, timeouts=timeouts)
        url = self.public_url or f"http://{self.ip}:{self.port}"
        analyser = analysis.Analyser(self.analysis_workers)
        analyser.start()
        parts = assemble(store, url, timeouts=timeouts, max_code_bytes=self.max_code_bytes,
                         analysis_budget=self.analysis_budget, analyser=analyser,
                         templates=TemplateLibrary(store, Templates(parent=self)), schedule_interval=self.schedule_interval,
                         recorder_bytes=self.recorder_buffer_bytes)
        await parts.scripts.recover()
        slack = SlackIntegration(store, parts.flow, parts.events, parts.agents, parts.background, Slack(parent=self),
                                 templates=parts.templates, scripts=parts.scripts)
        slack.start()
        oidc_config = OIDC(parent=self)
        oidc = OIDCProvider(oidc_config, url.rstrip("/") + CALLBACK_PATH) if oidc_config.enabled else None
        self.log.info("OIDC sign-in: %s", f"issuer {oidc_config.issuer}" if oidc else "off (OIDC.issuer is not set)")
        parts.background.spawn(parts.sockets.watch(store, self.socket_recheck_interval))
        parts.background.spawn(parts.templates.run())
        if slack.client.enabled:
            parts.schedules.poster = slack.post_schedule_result
        parts.background.spawn(parts.schedules.run())
        parts.background.spawn(parts.sweeper.run())
        server = httpserver.HTTPServer(make_app(parts, slack=slack, oidc=oidc), xheaders=True,
                                       max_body_size=message_limit(self.max_code_bytes))
        server.listen(self.port, self.ip)
        self.log.info("cellgate gateway %s listening on %s (store: %s)", __version__, url,
                      store.engine.url.render_as_string(hide_password=True))
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready.set()
        await stop.wait()
        since = await self.drain(server, parts)
        await slack.close()
        await parts.background.cancel_all()
        analyser.close()
        store.close(wait=False)  # a call blocked on a stalled store must not hold the stop up
        self.log.info("stopped, %.1f s after the signal", time.monotonic() - since)
