"""The running agent: the gateway connection wired to the kernel host.

Gateway requests that carry a ``req_id`` each run in their own task and end in a ``reply``;
``kernel_msg`` frames are delivered at once, in arrival order. Built and started by the
``Agent`` application (agent/app.py), which gives it its configuration and ``Timeouts``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from cellgate import __version__, protocol

from . import explain
from .config import AgentConfig
from .connection import GatewayConnection
from .journal import Journal
from .kernels import KernelError, KernelHost
from .outbox import Outbox
from .tasks import TaskRuns
from .timeouts import Timeouts

log = logging.getLogger(__name__)


def _report_failure(task: asyncio.Future[Any]) -> None:
    """Log a background task's exception; a cancelled task is no failure."""
    if not (task.cancelled() or task.exception() is None):
        log.error("background task failed: %s", task.exception())


class AgentRuntime:
    def __init__(self, config: AgentConfig, gateway_url: str, token: str, timeouts: Timeouts,
                 host: KernelHost | None = None, *, chunk_bytes: int = 1024 * 1024,
                 outbox_memory: int = 16 * 1024 * 1024) -> None:
        self.config = config
        self.timeouts = timeouts
        self.connection = GatewayConnection(gateway_url, token, self.hello, self.dispatch,
                                            on_welcome=self.welcomed, on_lost=self.disconnected, timeouts=timeouts)
        self.journal = Journal(config.state_dir)  # read by ``open_journal``
        self.runs = TaskRuns(self.journal, Outbox(config.state_dir, outbox_memory), self.connection.send_text,
                             chunk_bytes=chunk_bytes)
        self.host = host or KernelHost(config.targets, self.runs.emit,
                                       kernel_isolation=config.kernel_isolation,
                                       kernel_uids=config.kernel_uids,
                                       runtime_dir=config.runtime_dir, timeouts=timeouts)
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "kernel_start": lambda f: self.host.start(f.kernel_id, f.target, f.env,
                                                      f.limits.to_dict() if f.limits else None),
            "kernel_stop": lambda f: self.host.stop(f.kernel_id),
            "kernel_interrupt": lambda f: self.host.interrupt(f.kernel_id),
            "kernel_restart": lambda f: self.host.restart(f.kernel_id),
            "explain": self._explain,
        }

    def open_journal(self) -> None:
        """Lock and read the journal of the state directory (``JournalError``, a ValueError, when it
        cannot be used, e.g. another agent process holds it)."""
        self.journal.load()
        self.runs.outbox.drop_stale()

    def hello(self) -> protocol.Hello:
        return protocol.Hello(agent_id=self.config.agent_id, version=__version__, tags=self.config.tags,
                              targets=[protocol.TargetAnnouncement(**t.announce())
                                       for t in self.config.targets.values()],
                              kernels=[k for k, h in self.host.kernels.items() if h.state != "dead"],
                              dead_kernels=[k for k, h in self.host.kernels.items() if h.state == "dead"],
                              tasks=self.runs.reports())

    def disconnected(self) -> None:
        self.runs.offline()

    def welcomed(self, welcome: protocol.Welcome) -> None:
        """Resend the task frames not acknowledged yet. When ``welcome`` lists the kernels the
        gateway adopted, stop the others: nobody can reach them any more. (Without that list
        every hosted kernel is kept.)"""
        self.runs.resend()
        adopted = welcome.kernels
        if adopted is None:
            return
        for kernel_id in set(self.host.kernels) - set(adopted):
            log.info("kernel %s: not adopted by the gateway, stopping it", kernel_id)
            self._spawn(self.host.stop(kernel_id))

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then close the connection and shut every kernel down."""
        self.open_journal()
        for warning in self.config.warnings:
            log.warning("%s", warning)
        for t in self.config.targets.values():
            log.info("serving target %s (%s, %s)", t.name, t.kind, t.dialect or "no dialect")
        connection = asyncio.create_task(self.connection.run())
        await stop.wait()
        log.info("stopping: closing the connection and shutting %d kernel(s) down",
                 len(self.host.kernels))
        self.connection.close()
        await connection
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.host.stop_all()
        self.host.close()
        self.journal.close()

    def dispatch(self, frame: protocol.Frame) -> None:
        """A valid gateway frame (``protocol.parse`` checked it: connection.py)."""
        if isinstance(frame, protocol.KernelMsg):
            self._deliver(frame)
        elif isinstance(frame, protocol.Ack):
            self.runs.ack(frame)
        elif frame.type in self._requests:
            self._spawn(self._answer(frame, self._requests[frame.type]))  # type: ignore[arg-type]
        else:
            log.info("ignoring a frame of type %r", frame.type)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_report_failure)

    def _deliver(self, frame: protocol.KernelMsg) -> None:
        task = frame.task_id is not None and frame.channel == "shell"
        try:
            kernel = self.host.kernels.get(frame.kernel_id)
            if task and kernel is not None and kernel.state == "dead":
                raise KernelError(f"kernel {frame.kernel_id} is dead: restart it")
            if task:
                self.runs.request(frame)  # journaled (fsynced) before the kernel sees it
            self.host.deliver(frame.kernel_id, frame.channel, frame.msg)
        except KernelError as exc:
            log.warning("dropping a kernel_msg: %s", exc)
            if task:
                self.runs.fail(frame, str(exc))

    async def _explain(self, frame: protocol.Explain) -> dict[str, Any]:
        target = self.config.targets.get(frame.target)
        if target is None:
            raise KernelError(f"unknown target {frame.target!r}")
        rows = await asyncio.to_thread(explain.estimate, target, frame.statements[:explain.MAX_STATEMENTS],
                                       statement_timeout=self.timeouts.explain)
        return {"rows": rows}

    async def _answer(self, frame: protocol.Request,
                      handler: Callable[[Any], Awaitable[dict[str, Any] | None]]) -> None:
        try:
            reply = protocol.Reply(req_id=frame.req_id, ok=True, **(await handler(frame) or {}))
        except (KernelError, explain.ExplainError) as exc:
            reply = protocol.Reply(req_id=frame.req_id, ok=False, error=str(exc))
        except Exception as exc:
            log.exception("%s failed", frame.type)
            reply = protocol.Reply(req_id=frame.req_id, ok=False, error=f"{frame.type} failed: {type(exc).__name__}")
        self.connection.send(reply)
