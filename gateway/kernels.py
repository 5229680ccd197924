"""Live kernels: who owns each, which agent hosts it, the clients attached, what runs on it.

A kernel belongs to the user who started it; only that user can see it, attach to it,
interrupt, restart or delete it. Messages from the agent are fanned out to the attached clients
and, when they belong to an approved execution, recorded against its task (in order, off the
relay path, by ``recorder.Recorder``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .auth import Identity
    from .models import Task

log = logging.getLogger("cellgate.gateway.kernels")


class Client(Protocol):
    def send_text(self, text: str) -> None: ...


class KernelGate(Protocol):
    """What the rest of the gateway asks of a kernel's gate (``gate.Gate``)."""

    def submit(self, msg: dict[str, Any], ident: Identity) -> None: ...
    def close(self) -> None: ...
    async def interrupt(self) -> bool: ...
    def abort_queued(self, received_before: int | None = None) -> None: ...


class NoGate:
    """The gate of a kernel not attached yet: refuses what it is given."""

    def submit(self, msg: dict[str, Any], ident: Identity) -> None:
        raise RuntimeError("this kernel has no gate yet; it is being attached")

    def close(self) -> None:
        return None

    async def interrupt(self) -> bool:
        return False

    def abort_queued(self, received_before: int | None = None) -> None:
        return None


class NotRun(Exception):
    """An approved task could not start (its approval expired); ``task`` says how it ended."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task.id} is {task.status}")
        self.task = task


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Execution:
    """An approved ``execute_request`` in flight on a kernel."""

    task_id: int
    msg_id: str
    done: asyncio.Future[dict[str, Any]]
    seq: int = 0
    started: bool = False
    max_bytes: int = 10_000_000
    bytes: int = 0
    truncated: bool = False
    killed: str | None = None  # why the gateway stopped it (time limit)
    reply: dict[str, Any] | None = None  # the execute_reply content
    seen_at: int | None = None  # the kernel's arrival count + 1 when that reply was relayed
    idle: bool = False  # iopub idle seen: every output has been relayed (iopub and shell are not ordered)
    cell: CellRun | None = None  # one cell of a notebook task: the task ends with the notebook, not here
    #: the agent's numbering of the task's frames: the last one taken, and the ones that never came
    agent_seq: int = 0
    outputs_lost: int = 0
    sent_at: dt.datetime = field(default_factory=lambda: _now())
    started_at: dt.datetime | None = None
    last_output_at: dt.datetime | None = None

    def whereabouts(self) -> str:
        """What is known of how far it got, for a message that says its code may have run."""
        def at(when: dt.datetime) -> str:
            return when.strftime("%Y-%m-%d %H:%M:%S UTC")
        known = [f"sent to the agent at {at(self.sent_at)}"]
        if self.started_at is not None:
            known.append(f"started at {at(self.started_at)}")
        known.append(f"last output #{self.seq} at {at(self.last_output_at)}" if self.last_output_at is not None
                     else "no output recorded")
        return "; ".join(known)


@dataclass
class CellRun:
    """One cell of a notebook task, dispatched as its own request. ``seq`` and ``bytes`` carry on
    from the cells before (a task's outputs are numbered, and capped, across all its cells);
    ``outputs`` collects what this cell showed (``{"msg_type", "content"}``) for the executed
    notebook; ``timeout`` is what is left of the task's time limit."""

    code: str
    timeout: float
    seq: int = 0
    bytes: int = 0
    dispatched: bool = False
    started: bool = False
    truncated: bool = False
    agent_seq: int = 0
    outputs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    """How an execution ended: the ``execute_reply`` content, and ``seen_at``: the kernel's arrival
    count when the client saw that reply (requests that arrived from then on are not aborted by it)."""

    reply: dict[str, Any]
    seen_at: int

    @property
    def ok(self) -> bool:
        return self.reply.get("status") == "ok"


@dataclass
class LiveKernel:
    id: str
    user_id: int
    user_name: str
    target: str
    agent_id: str
    notebook_path: str | None = None
    ephemeral: bool = False
    execution_state: str = "starting"
    last_activity: dt.datetime = field(default_factory=_now)
    clients: set[Client] = field(default_factory=set)
    executions: dict[str, Execution] = field(default_factory=dict)
    gate: KernelGate = field(default_factory=NoGate)  # gate.Gate, set when the kernel is attached
    #: execute requests received from clients so far: fixes which queued ones a failure aborts
    arrivals: int = 0
    #: values a SQL notebook's parameters cell set on this kernel (``session_params``), bound in later cells
    parameters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def model(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.target,
            "last_activity": self.last_activity.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "execution_state": self.execution_state,
            "connections": len(self.clients),
        }

    def to_clients(self, msg: dict[str, Any]) -> None:
        text = json.dumps(msg)
        for client in list(self.clients):
            try:
                client.send_text(text)
            except Exception:  # a closed socket: it will unregister itself
                log.debug("dropping message for a closed client of kernel %s", self.id)

    def touch(self, msg: dict[str, Any]) -> None:
        self.last_activity = _now()
        if msg.get("header", {}).get("msg_type") == "status" and msg.get("channel") == "iopub":
            self.execution_state = msg.get("content", {}).get("execution_state", self.execution_state)

    def finish_all(self, status: str, ename: str, evalue: str) -> list[Execution]:
        """End every execution in flight (kernel died or restarted); returns them."""
        ended = list(self.executions.values())
        self.executions.clear()
        for ex in ended:
            if not ex.done.done():
                ex.done.set_result({"status": status, "ename": ename, "evalue": evalue})
        return ended


class KernelRegistry:
    def __init__(self) -> None:
        self.kernels: dict[str, LiveKernel] = {}

    def add(self, kernel: LiveKernel) -> None:
        self.kernels[kernel.id] = kernel

    def remove(self, kernel_id: str) -> LiveKernel | None:
        return self.kernels.pop(kernel_id, None)

    def get(self, kernel_id: str) -> LiveKernel | None:
        return self.kernels.get(kernel_id)

    def on_agent(self, agent_id: str) -> list[LiveKernel]:
        return [k for k in self.kernels.values() if k.agent_id == agent_id]
