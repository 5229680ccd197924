"""The gate on one kernel: every ``execute_request`` becomes a task before anything runs.

Requests are taken one at a time, in the order they arrived. A request whose task needs
review is held: the client sees a status display (updated in place) and the requests behind it
wait. Approved, it is dispatched to the agent and the gate waits for its ``execute_reply``
before taking the next one, so a failure stops "run all" the way a kernel does. Rejected,
denied or cancelled, the cell ends with an error naming who and why, and the requests queued
behind it are aborted (when the request asked ``stop_on_error``, the default).

A cell over ``Gateway.max_code_bytes`` is refused here with a visible ``CellTooLarge`` error and
does not become a task (the refusal is audited as ``cell.too_large``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from . import display, jmsg, session_params, tasks
from .auth import Identity
from .errors import TooLarge
from .kernels import NotRun

if TYPE_CHECKING:
    from .kernels import LiveKernel, Outcome
    from .models import Task

log = logging.getLogger("cellgate.gateway.gate")

#: why a cell whose sender's token was revoked (or whose user was deactivated) does not run
REVOKED_WHY = "the token that sent this cell was revoked or expired, or its user was deactivated"

WHY_RE = re.compile(r"^\s*(?:--|#|//)\s*why\s*:\s*(?P<why>.+?)\s*$", re.IGNORECASE)


def justification(code: str) -> str:
    """The ``why`` from a first-line comment: ``-- why: SUP-123`` or ``# why: …``."""
    for line in code.splitlines():
        if line.strip():
            match = WHY_RE.match(line)
            return match.group("why") if match else ""
    return ""


@dataclass
class Held:
    msg: dict[str, Any]
    ident: Identity
    arrival: int = 0


class GateHost(Protocol):
    """Everything the gate needs from the rest of the gateway (``cells.CellHost`` in the gateway,
    a fake in unit tests). The gate decides nothing about tasks itself: it queues, holds and shows."""

    @property
    def max_code_bytes(self) -> int: ...
    @property
    def task_poll(self) -> float: ...
    def token_refused(self, ident: Identity) -> bool: ...
    def check_size(self, code: str) -> None: ...
    def agent_connected(self, agent_id: str) -> bool: ...
    async def submit(self, ident: Identity, target_name: str, code: str, *, kind: str, refuse: str | None,
                     dispatch_to: str | None, **context: Any) -> Task: ...
    async def target_kind(self, name: str) -> str: ...
    async def still_valid(self, ident: Identity) -> bool: ...
    async def too_large(self, ident: Identity, kernel: LiveKernel, msg_id: str, size: int) -> None: ...
    async def cancel(self, task_id: int, ident: Identity, reason: str) -> Task: ...
    async def cancel_approved(self, task_id: int, why: str) -> Task: ...
    async def changed(self, task_id: int, timeout: float) -> None: ...
    async def get_task(self, task_id: int) -> Task: ...
    async def dispatch(self, kernel: LiveKernel, task: Task, msg: dict[str, Any]) -> Outcome: ...
    def refusal(self, task: Task) -> tuple[str, str]: ...
    def task_url(self, task_id: int) -> str: ...


class Gate:
    def __init__(self, host: GateHost, kernel: LiveKernel) -> None:
        self.host = host
        self.kernel = kernel
        self.queue: asyncio.Queue[Held] = asyncio.Queue()
        self.current: Held | None = None
        self.current_task_id: int | None = None
        self._worker: asyncio.Task[None] | None = None
        self._interrupted = asyncio.Event()

    def submit(self, msg: dict[str, Any], ident: Identity) -> None:
        self.kernel.arrivals += 1
        self.queue.put_nowait(Held(msg, ident, self.kernel.arrivals))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def interrupt(self) -> bool:
        """Cancel the held request, if any (True), so the cell ends instead of waiting."""
        if self.current_task_id is None:
            return False
        self._interrupted.set()
        return True

    def abort_queued(self, received_before: int | None = None) -> None:
        """Abort the queued requests (those that arrived before ``received_before``, if given)."""
        keep = []
        while not self.queue.empty():
            held = self.queue.get_nowait()
            if received_before is not None and held.arrival >= received_before:
                keep.append(held)
                continue
            for m in jmsg.aborted_messages(held.msg):
                self.kernel.to_clients(m)
        for held in keep:
            self.queue.put_nowait(held)

    async def _run(self) -> None:
        while True:
            held = await self.queue.get()
            self.current = held
            try:
                failed_at = await self._handle(held)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("gate failed on kernel %s", self.kernel.id)
                self._refuse(held, "CellgateError", f"the gateway could not run this cell: {getattr(exc, 'message', exc)}")
                failed_at = self.kernel.arrivals + 1
            finally:
                self.current = None
                self.current_task_id = None
                self._interrupted.clear()
            if failed_at is not None and held.msg.get("content", {}).get("stop_on_error", True):
                self.abort_queued(received_before=failed_at)

    def _refuse(self, held: Held, ename: str, evalue: str) -> None:
        for m in jmsg.error_messages(held.msg, ename, evalue):
            self.kernel.to_clients(m)

    async def _handle(self, held: Held) -> int | None:
        """Run or refuse one request; on failure, return the arrival count when the client saw it fail."""
        msg = held.msg
        content = msg.get("content", {})
        code = content.get("code", "")
        metadata = msg.get("metadata", {}) or {}
        refused = None
        if content.get("user_expressions"):
            refused = "user_expressions run code outside the reviewed cell and are not allowed by cellgate"
        if self.host.token_refused(held.ident):  # sent, then its token was revoked: not even a task
            self._refuse(held, "TokenRevoked", f"{REVOKED_WHY}; this cell was not submitted")
            return self.kernel.arrivals + 1
        try:
            self.host.check_size(code)
        except TooLarge as exc:  # not a task: nothing to review, nothing analysed
            await self._refuse_too_large(held, len(code.encode("utf-8", "surrogatepass")), exc.message)
            return self.kernel.arrivals + 1
        values, sets = None, None
        if ("{{" in code or session_params.HEADER in code.lower()) and await self.host.target_kind(self.kernel.target) == "sql":
            sets = session_params.parameters_cell(code)  # its values are data, even one that reads {{ x }}
            try:
                bound = None if sets is not None else session_params.bind_placeholders(code, self.kernel.parameters)
            except session_params.ParametersRefused as exc:
                self._refuse(held, "CellgateRefused", f"{exc}; the cell was not submitted")
                return self.kernel.arrivals + 1
            if bound is not None:  # the kernel runs (and the task holds) the cell with markers, its values bound
                code, used = bound
                msg = {**msg, "content": {**content, "code": code}}
                values = {"name": None, "path": "the notebook's parameters cell", "commit": None, "parameters": used}
        task = await self.host.submit(
            held.ident,
            self.kernel.target,
            code,
            kind="cell",
            kernel_id=self.kernel.id,
            msg_id=msg["header"]["msg_id"],
            notebook_path=self.kernel.notebook_path or metadata.get("notebook_path"),
            cell_id=metadata.get("cellId") or metadata.get("cell_id"),
            why=justification(code),
            refuse=refused,
            dispatch_to=self.kernel.agent_id if self.host.agent_connected(self.kernel.agent_id) else None,
            **({"template": values} if values else {}),
        )
        was_held = task.status == tasks.PENDING_REVIEW
        if was_held:
            task = await self._hold(held, task)
            if task.status == tasks.APPROVED and not await self.host.still_valid(held.ident):
                # approved while held, but the token that sent it no longer works: it never runs
                task = await self.host.cancel_approved(task.id, REVOKED_WHY)
        if task.status in (tasks.APPROVED, tasks.DISPATCHED):
            try:
                outcome = await self.host.dispatch(self.kernel, task, msg)
            except NotRun as exc:
                task = exc.task
            else:
                if was_held:  # the display said "running": say how it ended
                    self._show(held, task, update=True, status=tasks.SUCCEEDED if outcome.ok else tasks.FAILED)
                if outcome.ok and sets is not None:  # a parameters cell that ran: its values hold from now on
                    self.kernel.parameters = {p["name"]: p for p in sets}
                return None if outcome.ok else outcome.seen_at
        self._refuse(held, *self.host.refusal(task))
        return self.kernel.arrivals + 1

    async def _refuse_too_large(self, held: Held, size: int, message: str) -> None:
        """Audited first, then refused: what the client sends once it sees the error is not aborted."""
        await self.host.too_large(held.ident, self.kernel, held.msg["header"]["msg_id"], size)
        self._refuse(held, "CellTooLarge", f"{message}; the cell was not submitted (split it, or load the data another way)")

    async def _hold(self, held: Held, task: Task) -> Task:
        """Show the status display and wait for a decision (or an interrupt)."""
        self.current_task_id = task.id
        self.kernel.to_clients(jmsg.status("busy", held.msg))
        self._show(held, task, update=False)
        last_seen = (task.status, len(task.reviews))
        while task.status == tasks.PENDING_REVIEW:
            interrupted = asyncio.ensure_future(self._interrupted.wait())
            changed = asyncio.ensure_future(self.host.changed(task.id, self.host.task_poll))
            await asyncio.wait({interrupted, changed}, return_when=asyncio.FIRST_COMPLETED)
            interrupted.cancel()
            changed.cancel()
            if self._interrupted.is_set():
                task = await self.host.cancel(task.id, held.ident, "interrupted while awaiting review")
                break
            task = await self.host.get_task(task.id)
            if (task.status, len(task.reviews)) != last_seen:
                last_seen = (task.status, len(task.reviews))
                self._show(held, task, update=True)
        return task

    def _show(self, held: Held, task: Task, *, update: bool, status: str | None = None) -> None:
        """The held cell's status display (one ``display_id`` per task, updated in place)."""
        text, html = display.status_display(task, self.host.task_url(task.id), status)
        self.kernel.to_clients(jmsg.display(held.msg, f"cellgate-task-{task.id}", text, html, update=update))
