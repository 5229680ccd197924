"""The execution relay: an approved request sent to its kernel, its messages relayed and recorded.

``dispatch`` binds the request to its task (``metadata.cellgate``: the statements the analysis
read and the mode), sends it to the agent and waits for the kernel's ``execute_reply`` within the
target's time limit. Messages from the agent about the kernel go to the attached clients; those
of an approved execution are also recorded against its task, in order, by the kernel's
:class:`~.recorder.Recorder` (running, each output up to the byte limit, the result), which retries
them until the store takes them and, when too much waits, holds the agent's socket (:meth:`Relay.room`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from cellgate import protocol
from cellgate.kernels.sql.split import split_statements

from . import jmsg, policy, tasks
from .agents import AgentConnection, AgentRegistry
from .errors import Unavailable
from .events import TaskEvents
from .flow import TaskFlow
from .kernels import CellRun, Execution, LiveKernel, NotRun, Outcome
from .models import Target, Task, TaskOutput
from .recorder import MAX_BYTES, Recorder
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.relay")


def finish_tx(session: Session, task_id: int, status: str, ename: str | None, evalue: str | None) -> None:
    try:
        tasks.advance(session, task_id, status, "agent", {"ename": ename} if ename else None,
                      error_ename=ename, error_evalue=evalue)
    except tasks.TransitionError as exc:
        log.info("task %s already final: %s", task_id, exc)


def _finish_op(task_id: int, status: str, ename: str | None, evalue: str | None, session: Session) -> None:
    finish_tx(session, task_id, status, ename, evalue)


def _running_tx(session: Session, task_id: int) -> None:
    try:
        tasks.transition(session, task_id, tasks.DISPATCHED, tasks.RUNNING, "agent")
    except tasks.TransitionError as exc:
        log.info("task %s: %s", task_id, exc)


def _output_tx(session: Session, task_id: int, seq: int, msg_type: str, content: dict[str, Any], size: int) -> None:
    if session.get(TaskOutput, (task_id, seq)) is None:  # stored once per (task, seq)
        session.add(TaskOutput(task_id=task_id, seq=seq, output={"output_type": msg_type, **content}))
        session.execute(update(Task).where(Task.id == task_id).values(output_bytes=Task.output_bytes + size))


def _nothing(session: Session) -> None:
    """A write of nothing: queued behind a frame's writes, its ``on_done`` acknowledges the frame."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Relay:
    def __init__(self, store: Store, events: TaskEvents, agents: AgentRegistry, flow: TaskFlow,
                 timeouts: Timeouts | None = None, recorder_bytes: int = MAX_BYTES) -> None:
        self.store = store
        self.recorder_bytes = recorder_bytes
        self.events = events
        self.agents = agents
        self.flow = flow
        self.timeouts = timeouts or Timeouts()
        self.recorders: dict[str, Recorder] = {}
        self._acks: dict[tuple[str, int], tuple[int, bool]] = {}
        self._ack_scheduled = False

    # ------------------------------------------------------------ recording
    def open(self, kernel: LiveKernel) -> None:
        """Start recording what ``kernel``'s executions do."""
        self.recorders[kernel.id] = Recorder(self.store.run_unbounded, self.events.notify,
                                             max_bytes=self.recorder_bytes, retry_max=self.timeouts.store_retry_max)

    async def room(self, kernel_id: str) -> None:
        """Wait while the writes queued for ``kernel_id``'s executions are over the recorder's bound
        (the store is slow or away): the agent's socket is not read meanwhile (back-pressure)."""
        recorder = self.recorders.get(kernel_id)
        if recorder is not None and recorder.full:  # (the recorder logged it when it filled up)
            await recorder.room()

    def recording(self) -> set[int]:
        """Tasks with an execution record not written yet."""
        return {task_id for recorder in self.recorders.values() for task_id in recorder.pending_tasks()}

    async def close(self, kernel: LiveKernel) -> None:
        """Write everything recorded so far, then stop recording."""
        recorder = self.recorders.pop(kernel.id, None)
        if recorder is not None:
            await recorder.drain()
            recorder.close()

    async def drain(self, kernel: LiveKernel) -> None:
        await self.recorders[kernel.id].drain()

    async def finish(self, task_id: int, status: str, ename: str | None, evalue: str | None) -> None:
        """End a task (``advance``: whatever state it reached) and wake its waiters."""
        await self.store.run(finish_tx, task_id, status, ename, evalue)
        self.events.notify(task_id)

    async def end_executions(self, kernel: LiveKernel, status: str, ename: str, evalue: str) -> None:
        """End every execution in flight on ``kernel`` (it died, was stopped, restarted or lost).
        A ``lost`` one says its code may have run, and how far it was known to get."""
        for ex in kernel.finish_all("error", ename, evalue):
            why = f"{evalue}: its code may have run ({ex.whereabouts()}); check the target before running it again" \
                if status == tasks.LOST else evalue
            await self.write(kernel, ex.task_id, functools.partial(_finish_op, ex.task_id, status, ename, why))

    async def write(self, kernel: LiveKernel, task_id: int, op: Callable[[Session], None]) -> None:
        """Write ``op`` about a task of ``kernel`` after the kernel's other records, retried until
        it commits (its recorder), and wait for it; without a recorder (the kernel is gone), at once."""
        recorder = self.recorders.get(kernel.id)
        if recorder is None:
            await self.store.run(op)
        else:
            recorder.put(task_id, op)
            await recorder.drain()
        self.events.notify(task_id)

    def end_one(self, kernel: LiveKernel, ex: Execution, status: str, ename: str, evalue: str,
                on_done: Callable[[], None] | None = None) -> None:
        """End one execution now (reconciled after a reconnect), after what it recorded so far."""
        kernel.executions.pop(ex.msg_id, None)
        if not ex.done.done():
            ex.done.set_result({"status": "error", "ename": ename, "evalue": evalue})
        self.recorders[kernel.id].put(ex.task_id, lambda s: finish_tx(s, ex.task_id, status, ename, evalue), on_done)

    def end_as_reported(self, kernel: LiveKernel, ex: Execution, status: str, ename: str | None, evalue: str | None,
                        last_seq: int) -> None:
        """End an execution as the agent's journal says the kernel ended it (its reply never came)."""
        missing = last_seq - ex.agent_seq
        if missing > 0:
            self._outputs_lost(kernel, ex, missing)
        ex.agent_seq = max(ex.agent_seq, last_seq)
        ex.reply = {"status": status, **({"ename": ename, "evalue": evalue or ""} if status != "ok" else {})}
        ex.idle = True
        ex.seen_at = kernel.arrivals + 1
        self._maybe_finish(kernel, ex)

    # ------------------------------------------------------------ acknowledgements
    def ack(self, agent_id: str, task_id: int, seq: int, ended: bool = False) -> None:
        """Tell the agent every frame of ``task_id`` up to ``seq`` is stored (sent once per loop turn)."""
        key = (agent_id, task_id)
        old_seq, old_ended = self._acks.get(key, (0, False))
        self._acks[key] = (max(seq, old_seq), ended or old_ended)
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_acks)

    def _send_acks(self) -> None:
        self._ack_scheduled = False
        acks, self._acks = self._acks, {}
        for (agent_id, task_id), (seq, ended) in acks.items():
            agent = self.agents.get(agent_id)
            if agent is None:
                continue  # the agent resends after its reconnect, and is acked then
            try:
                agent.send(protocol.Ack(task_id=task_id, seq=seq, ended=ended))
            except Unavailable:
                pass

    # ------------------------------------------------------------ dispatch
    async def dispatch(self, kernel: LiveKernel, task: Task, msg: dict[str, Any], cell: CellRun | None = None) -> Outcome:
        """Send an approved request to the agent; return how the kernel ended it.

        Raises :class:`NotRun` when the approval expired first, :class:`Unavailable` when the
        kernel's agent is not connected (the task fails). A task still running after the target's
        time limit is interrupted and ends ``killed``.

        With ``cell`` (one cell of a notebook task, ``cell.code`` its text): the request is bound to
        that cell's statements, its outputs are also collected in ``cell``, and its reply does not
        end the task (the notebook runner does, once the executed notebook is stored); only a time
        limit or a lost kernel does.
        """
        task = await self.flow.ensure_fresh(task)
        later_cell = cell is not None and cell.dispatched  # the task was dispatched with the notebook's first cell
        if task.status not in ((tasks.APPROVED, tasks.DISPATCHED, tasks.RUNNING) if later_cell
                               else (tasks.APPROVED, tasks.DISPATCHED)):
            raise NotRun(task)
        agent = self.agents.get(kernel.agent_id)
        if agent is None:
            await self.finish(task.id, tasks.FAILED, "AgentUnavailable", f"agent {kernel.agent_id} is not connected")
            raise Unavailable(f"the agent hosting this kernel ({kernel.agent_id}) is not connected; task #{task.id} did not run")
        if kernel.execution_state == "dead":
            why = "the kernel is dead (it died, or its agent came back without it); restart it, then run this again"
            await self.finish(task.id, tasks.FAILED, "KernelDead", why)
            raise Unavailable(f"task #{task.id} did not run: {why}")
        if task.status == tasks.APPROVED and not later_cell:  # (submit may have dispatched it already)
            await self.store.run(lambda s: tasks.transition(s, task.id, tasks.APPROVED, tasks.DISPATCHED, "gateway",
                                                              {"agent": agent.agent_id}, agent_id=agent.agent_id))
        rule = task.review_rule or {}
        await self.bind_to_task(msg, task, cell.code if cell else None)
        msg_id = msg["header"]["msg_id"]
        ex = Execution(task_id=task.id, msg_id=msg_id, done=asyncio.get_running_loop().create_future(),
                       max_bytes=policy.byte_limit(rule), cell=cell)
        if cell is not None:
            ex.seq, ex.bytes, ex.started, ex.truncated = cell.seq, cell.bytes, cell.started, cell.truncated
            ex.agent_seq = cell.agent_seq
            cell.dispatched = True
        kernel.executions[msg_id] = ex
        try:
            agent.send(protocol.KernelMsg(kernel_id=kernel.id, channel="shell", msg=msg, task_id=task.id,
                                          max_bytes=max(ex.max_bytes - ex.bytes, 0)))
        except Unavailable as exc:  # the socket closed under us: nothing was written
            kernel.executions.pop(msg_id, None)
            await self.finish(task.id, tasks.FAILED, "NotDelivered", f"{exc}; the request did not reach it, it did not run")
            raise
        self.events.notify(task.id)
        limit = policy.time_limit(rule)
        try:
            return self._outcome(kernel, ex, await asyncio.wait_for(asyncio.shield(ex.done), cell.timeout if cell else limit))
        except TimeoutError:
            pass
        finally:
            if cell is not None:
                cell.seq, cell.bytes, cell.started, cell.truncated = ex.seq, ex.bytes, ex.started, ex.truncated
                cell.agent_seq = ex.agent_seq
        return await self.over_limit(kernel, ex, agent, msg, limit)

    async def watch_limit(self, kernel: LiveKernel, ex: Execution, limit: float, left: float) -> None:
        """Enforce the time limit of an execution tracked again after a gateway restart (no
        :meth:`dispatch` waits for it): ``left`` seconds of its ``limit`` remain."""
        try:
            await asyncio.wait_for(asyncio.shield(ex.done), max(left, 0.0))
            return
        except TimeoutError:
            pass
        agent = self.agents.get(kernel.agent_id)
        if agent is None or kernel.executions.get(ex.msg_id) is not ex:
            return  # its agent left (the grace ends it) or it was ended meanwhile
        request = {"header": {"msg_id": ex.msg_id, "msg_type": "execute_request"}, "channel": "shell"}
        await self.over_limit(kernel, ex, agent, request, limit)

    async def over_limit(self, kernel: LiveKernel, ex: Execution, agent: AgentConnection, msg: dict[str, Any],
                         limit: float) -> Outcome:
        """``ex`` ran past the target's time limit: interrupt it; it ends ``killed``."""
        ex.killed = f"the task ran longer than this target's limit of {limit:.0f} s and was interrupted"
        self._notice(kernel, ex, msg.get("header", {}), f"[cellgate] {ex.killed}\n")
        try:
            await agent.request(protocol.KernelInterrupt(kernel_id=kernel.id), timeout=self.timeouts.time_limit_interrupt)
            return self._outcome(kernel, ex, await asyncio.wait_for(asyncio.shield(ex.done), self.timeouts.time_limit_reply))
        except (TimeoutError, Unavailable):
            await self.end_executions(kernel, tasks.KILLED, "TimeLimit", ex.killed)
            # the kernel did not end the cell, so no reply of its own is coming: the gateway ends it
            # for the clients (else the notebook shows the cell busy for ever)
            for m in jmsg.error_messages(msg, "TimeLimit", ex.killed):
                kernel.to_clients(m)
            return Outcome({"status": "error", "ename": "TimeLimit", "evalue": ex.killed}, kernel.arrivals + 1)

    @staticmethod
    def _outcome(kernel: LiveKernel, ex: Execution, reply: dict[str, Any]) -> Outcome:
        return Outcome(reply, ex.seen_at if ex.seen_at is not None else kernel.arrivals + 1)

    async def bind_to_task(self, msg: dict[str, Any], task: Task, code: str | None = None) -> None:
        """Tell the kernel exactly what to run: ``metadata.cellgate`` (any client-sent one replaced).

        ``statements`` is the split the analysis read (the SQL kernel refuses a cell whose own
        split differs); ``mode`` is "read-only" when policy auto-approved it as read-only SQL.
        ``code``: one cell of a notebook task (else the task's code).
        """
        if task.analysed is not None and code is None:  # this process analysed it at submission: the same split
            (kind, dialect), texts = task.analysed
        else:
            target = await self.store.run(lambda s: s.get(Target, task.target))
            kind = (target.kind if target is not None else "") or "sql"
            dialect = (target.dialect if target is not None else "") or ""
            text = task.code if code is None else code
            texts = tuple(await asyncio.to_thread(split_statements, text, dialect)) if kind == "sql" and dialect else ()
        sql = kind == "sql" and bool(dialect)
        metadata = msg.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata["cellgate"] = {
            "task_id": task.id,
            "statements": list(texts) if sql else [],
            "mode": (task.review_rule or {}).get("run_as", "read-write") if sql else "read-write",
        }
        if sql and task.template and task.template.get("parameters"):  # a rendered SQL template's values, bound
            metadata["cellgate"]["parameters"] = task.template["parameters"]
        msg["metadata"] = metadata

    # ------------------------------------------------------------- relaying
    def on_kernel_msg(self, kernel: LiveKernel, frame: protocol.KernelMsg) -> None:
        """A kernel message from the agent hosting ``kernel``: recorded if it is an execution's, then relayed."""
        msg = frame.msg
        channel = frame.channel
        msg["channel"] = channel
        header = msg.get("header", {})
        msg.setdefault("msg_id", header.get("msg_id"))
        msg.setdefault("msg_type", header.get("msg_type"))
        kernel.touch(msg)
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        ex = kernel.executions.get(parent_id) if parent_id else None
        if frame.seq is not None and frame.task_id is not None:
            if ex is None or ex.task_id != frame.task_id:
                # of a request ended here already (its end is recorded or being recorded): the agent may forget it
                self.ack(kernel.agent_id, frame.task_id, frame.seq, True)
                return
            if frame.seq <= ex.agent_seq:  # resent after a reconnect, and taken already
                self.ack(kernel.agent_id, frame.task_id, frame.seq)
                return
            if frame.seq > ex.agent_seq + 1:
                self._outputs_lost(kernel, ex, frame.seq - ex.agent_seq - 1)
            ex.agent_seq = frame.seq
        if ex is None or self._track(kernel, ex, channel, msg):
            kernel.to_clients(msg)
        if frame.seq is not None and frame.task_id is not None and ex is not None:
            seq, task_id, ended = frame.seq, frame.task_id, ex.msg_id not in kernel.executions
            self.recorders[kernel.id].put(task_id, _nothing, lambda: self.ack(kernel.agent_id, task_id, seq, ended))

    def _track(self, kernel: LiveKernel, ex: Execution, channel: str, msg: dict[str, Any]) -> bool:
        """Record what an approved execution does; False when the message must not be relayed."""
        msg_type = msg["header"].get("msg_type")
        recorder = self.recorders[kernel.id]
        content = msg.get("content", {})
        if channel == "iopub" and msg_type == "status" and content.get("execution_state") == "busy" and not ex.started:
            ex.started = True
            ex.started_at = _now()
            recorder.put(ex.task_id, lambda s: _running_tx(s, ex.task_id))
        elif channel == "iopub" and msg_type in protocol.OUTPUT_TYPES:
            size = len(json.dumps(content))
            if ex.truncated or ex.bytes + size > ex.max_bytes:
                if not ex.truncated:
                    ex.truncated = True
                    self._notice(kernel, ex, msg.get("parent_header", {}),
                                 f"[cellgate] output truncated: this target allows {ex.max_bytes} bytes of output per task\n")
                return False
            ex.bytes += size
            ex.seq += 1
            ex.last_output_at = _now()
            seq = ex.seq
            recorder.put(ex.task_id, lambda s: _output_tx(s, ex.task_id, seq, msg_type, content, size), size=size)
            if ex.cell is not None:
                ex.cell.outputs.append({"msg_type": msg_type, "content": content})
        elif channel == "shell" and msg_type == "execute_reply":
            # what the client sends from now on is not aborted by a failure of this one
            ex.reply = content
            ex.seen_at = kernel.arrivals + 1
            self._maybe_finish(kernel, ex)
        elif channel == "iopub" and msg_type == "status" and content.get("execution_state") == "idle":
            ex.idle = True
            self._maybe_finish(kernel, ex)
        return True

    def _notice(self, kernel: LiveKernel, ex: Execution, parent_header: dict[str, Any], text: str) -> None:
        """A line from cellgate itself in the cell's output (stderr), recorded with the task's outputs."""
        content = {"name": "stderr", "text": text}
        kernel.to_clients(jmsg.make("stream", content, {"header": parent_header}, "iopub"))
        ex.seq += 1
        seq = ex.seq
        self.recorders[kernel.id].put(ex.task_id, lambda s: _output_tx(s, ex.task_id, seq, "stream", content, len(text)),
                                      size=len(text))
        if ex.cell is not None:
            ex.cell.outputs.append({"msg_type": "stream", "content": content})

    def _outputs_lost(self, kernel: LiveKernel, ex: Execution, count: int) -> None:
        """Frames of the task that will never come: said in the cell and stored with its outputs."""
        ex.outputs_lost += count
        log.warning("task %s: %d frame(s) from agent %s never arrived", ex.task_id, count, kernel.agent_id)
        self._notice(kernel, ex, {"msg_id": ex.msg_id, "msg_type": "execute_request"},
                     f"[cellgate] {count} outputs lost: they did not reach the gateway from the agent\n")

    def _maybe_finish(self, kernel: LiveKernel, ex: Execution) -> None:
        """Finish once both the reply and the idle status were relayed (an aborted request may lack idle)."""
        if ex.reply is None or not (ex.idle or ex.reply.get("status") == "aborted"):
            return
        kernel.executions.pop(ex.msg_id, None)
        status = ex.reply.get("status")
        dest = tasks.SUCCEEDED if status == "ok" else tasks.FAILED
        ename = None if status == "ok" else ex.reply.get("ename", "Aborted" if status == "aborted" else "Error")
        evalue = None if status == "ok" else ex.reply.get("evalue", "")
        if ex.killed:
            dest, ename, evalue = tasks.KILLED, "TimeLimit", ex.killed
        if not ex.done.done():
            ex.done.set_result(ex.reply)
        if ex.cell is not None and not ex.killed:  # a notebook's cell: the runner ends the task
            return
        self.recorders[kernel.id].put(ex.task_id, lambda s: finish_tx(s, ex.task_id, dest, ename, evalue))
