"""The tasks the agent runs: journaled, their kernel messages numbered, capped, chunked and kept until acked.

An approved ``execute_request`` arrives with its ``task_id`` (and the task's output cap
``max_bytes``). Before it goes to the kernel the task is journaled (``journal.Journal``, fsynced).
From then on every kernel message parented to that request is a *task frame*: it gets the task's
next ``seq`` and waits in the ``outbox.Outbox`` until the gateway's ``ack`` covers it; after a
reconnect the pending ones are resent, in order, before any new one (``resend``). Outputs are
shaped before they leave: a stream text longer than ``chunk_bytes`` is split into several
messages, an output that would pass the task's cap is replaced by one notice (later ones are
dropped), and an output that cannot be split and is larger than ``MAX_FRAME_BYTES`` (6 MiB) is
replaced by a notice too. When the
kernel answers (``execute_reply`` and idle) or dies, the end is journaled.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from jupyter_client.jsonutil import json_default

from cellgate import protocol

from .journal import Journal
from .outbox import Outbox

log = logging.getLogger(__name__)

#: bytes of the cap kept for the truncation notice itself
NOTICE_ROOM = 512
#: bytes of one output that cannot be split (not a stream: an image, a table) above which it is replaced
#: by a notice: below the gateway's smallest WebSocket message limit (8 MiB)
MAX_FRAME_BYTES = 6 * 1024 * 1024
#: tasks whose last seq is remembered after they were forgotten (a notebook's next cell goes on from it)
SEQ_MEMORY = 1000


def _size(content: dict[str, Any]) -> int:
    """An output's size as the gateway counts it against the cap."""
    return len(json.dumps(content, default=json_default))


@dataclass
class Run:
    """One execute_request of a task, from the kernel's start on it to its reply."""

    task_id: int
    kernel_id: str
    msg_id: str
    max_bytes: int | None
    bytes: int = 0
    truncated: bool = False
    reply: dict[str, Any] | None = None
    idle: bool = False


class TaskRuns:
    def __init__(self, journal: Journal, outbox: Outbox, send_text: Callable[[str], bool], *,
                 chunk_bytes: int = 1024 * 1024) -> None:
        self.journal = journal
        self.outbox = outbox
        self._send_text = send_text
        self.chunk_bytes = chunk_bytes
        self.runs: dict[str, Run] = {}  # request msg_id → run
        self._seqs: OrderedDict[int, int] = OrderedDict()  # task_id → last seq given
        self.live = False  # connected and caught up: new frames go out at once

    # -- from the gateway --------------------------------------------------------------------

    def request(self, frame: protocol.KernelMsg) -> None:
        """An approved execute_request, about to go to the kernel: journal it first."""
        assert frame.task_id is not None
        entry = self.journal.open.get(frame.task_id)
        self._seqs.setdefault(frame.task_id, entry.last_seq if entry is not None else 0)
        msg_id = frame.msg["header"]["msg_id"]
        self.journal.started(frame.task_id, frame.kernel_id, msg_id)
        self.runs[msg_id] = Run(frame.task_id, frame.kernel_id, msg_id, frame.max_bytes)
        log.info("kernel %s: running task %s", frame.kernel_id, frame.task_id)

    def fail(self, frame: protocol.KernelMsg, reason: str) -> None:
        """The request could not reach its kernel: answer it as the kernel would, with an error."""
        msg_id = frame.msg["header"]["msg_id"]
        if msg_id not in self.runs:
            self.request(frame)
        run = self.runs[msg_id]
        parent = {"parent_header": frame.msg["header"], "metadata": {}}
        self._task_msg(run, protocol.KernelMsg(kernel_id=run.kernel_id, channel="shell", msg={
            **parent, "header": {"msg_id": f"{msg_id}.reply", "msg_type": "execute_reply"},
            "content": {"status": "error", "ename": "KernelError", "evalue": reason, "traceback": []}}))
        self._task_msg(run, protocol.KernelMsg(kernel_id=run.kernel_id, channel="iopub", msg={
            **parent, "header": {"msg_id": f"{msg_id}.idle", "msg_type": "status"},
            "content": {"execution_state": "idle"}}))

    def ack(self, frame: protocol.Ack) -> None:
        self.outbox.ack(frame.task_id, frame.seq)
        entry = self.journal.open.get(frame.task_id)
        running = any(r.task_id == frame.task_id for r in self.runs.values())
        if frame.ended and entry is not None and not running and entry.last_seq <= frame.seq:
            self.journal.forget(frame.task_id)  # ended, or started on a kernel gone with an earlier run

    # -- the connection ----------------------------------------------------------------------

    def offline(self) -> None:
        self.live = False

    def resend(self) -> None:
        """Welcomed again: send every pending task frame in order, then go live."""
        count = 0
        for text in self.outbox.frames():
            if not self._send_text(text):
                return  # dropped again: the next welcome resends
            count += 1
        if count:
            log.info("resent %d task frame(s) the gateway had not acknowledged", count)
        self.live = True

    def reports(self) -> list[protocol.TaskReport]:
        """The journal's open tasks; ``last_seq`` of one still running is the last seq given so far (the
        journal writes it at the end): with ``unacked``, it tells the gateway which frames it has."""
        return [dataclasses.replace(r, last_seq=max(r.last_seq, self._seqs.get(r.task_id, 0)))
                for r in self.journal.reports(self.outbox.pending())]

    # -- from the kernels --------------------------------------------------------------------

    def emit(self, frame: protocol.Frame) -> object:
        """The kernel host's ``emit``: task frames are numbered and kept; others go out as they are."""
        if isinstance(frame, protocol.KernelMsg):
            parent = (frame.msg.get("parent_header") or {}).get("msg_id")
            run = self.runs.get(parent) if isinstance(parent, str) else None
            if run is not None:
                self._task_msg(run, frame)
                return True
        elif isinstance(frame, protocol.KernelStatus) and frame.state == "dead":
            for run in [r for r in self.runs.values() if r.kernel_id == frame.kernel_id]:
                self._end(run, "error", "KernelDied", frame.reason or "the kernel died")
        return self._send_frame(frame)

    def _task_msg(self, run: Run, frame: protocol.KernelMsg) -> None:
        msg, channel = frame.msg, frame.channel
        msg_type = msg.get("header", {}).get("msg_type")
        content = msg.get("content") or {}
        if channel == "iopub" and msg_type in protocol.OUTPUT_TYPES:
            for part in self._shape(run, msg):
                self._queue(run, channel, part)
            return
        self._queue(run, channel, msg)
        if channel == "shell" and msg_type == "execute_reply":
            run.reply = content
        elif channel == "iopub" and msg_type == "status" and content.get("execution_state") == "idle":
            run.idle = True
        if run.reply is not None and (run.idle or run.reply.get("status") == "aborted"):
            status = str(run.reply.get("status", "error"))
            self._end(run, status, run.reply.get("ename") if status != "ok" else None,
                      run.reply.get("evalue") if status != "ok" else None)

    def _shape(self, run: Run, msg: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The messages to send for one output: split, capped, or a notice instead."""
        if run.truncated:
            return
        content = msg.get("content") or {}
        msg_type = msg["header"].get("msg_type")
        parts = [msg]
        if msg_type == "stream" and isinstance(content.get("text"), str) and _size(content) > self.chunk_bytes:
            parts = [_with(msg, {**content, "text": piece}, i) for i, piece in enumerate(self._pieces(content["text"]))]
        for part in parts:
            size = _size(part["content"])
            if run.max_bytes is not None and run.bytes + size > max(run.max_bytes - NOTICE_ROOM, 0):
                run.truncated = True
                yield _notice(part, f"[cellgate] output truncated on the agent: this target allows {run.max_bytes} "
                                    "bytes of output per task\n")
                return
            if size > max(self.chunk_bytes, MAX_FRAME_BYTES):
                yield _notice(part, f"[cellgate] a {msg_type} output of {size} bytes was not sent: one output that "
                                    f"cannot be split may have at most {MAX_FRAME_BYTES} bytes\n")
                continue
            run.bytes += size
            yield part

    def _pieces(self, text: str) -> Iterator[str]:
        """``text`` in pieces whose JSON form fits ``chunk_bytes`` (a character may take up to 12 bytes)."""
        step = max(self.chunk_bytes // 2, 1)
        start = 0
        while start < len(text):
            n = step
            while n > 1 and len(json.dumps(text[start:start + n])) > self.chunk_bytes - 256:
                n //= 2
            yield text[start:start + n]
            start += n

    def _queue(self, run: Run, channel: str, msg: dict[str, Any]) -> None:
        seq = self._seqs.get(run.task_id, 0) + 1
        self._seqs[run.task_id] = seq
        self._seqs.move_to_end(run.task_id)
        while len(self._seqs) > SEQ_MEMORY:
            self._seqs.popitem(last=False)
        frame = protocol.KernelMsg(kernel_id=run.kernel_id, channel=channel, msg=msg, task_id=run.task_id, seq=seq)
        text = json.dumps(frame.frame(), default=json_default)
        self.outbox.add(run.task_id, seq, text)
        if self.live and not self._send_text(text):
            self.live = False  # the link is down: what follows waits for the next welcome

    def _end(self, run: Run, status: str, ename: str | None, evalue: str | None) -> None:
        self.runs.pop(run.msg_id, None)
        self.journal.ended(run.task_id, status, ename, evalue, self._seqs.get(run.task_id, 0))

    def _send_frame(self, frame: protocol.Frame) -> bool:
        return self._send_text(json.dumps(frame.frame(), default=json_default))


def _with(msg: dict[str, Any], content: dict[str, Any], index: int) -> dict[str, Any]:
    header = dict(msg["header"])
    if index:
        header["msg_id"] = f"{header['msg_id']}.{index}"
    return {**msg, "header": header, "content": content}


def _notice(msg: dict[str, Any], text: str) -> dict[str, Any]:
    header = {**msg["header"], "msg_type": "stream", "msg_id": f"{msg['header']['msg_id']}.notice"}
    return {**msg, "header": header, "content": {"name": "stderr", "text": text}}
