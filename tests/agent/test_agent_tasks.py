"""The agent's task frames (agent/tasks.py): numbered, chunked below the frame size, capped on the agent,
kept until acked and resent in order after a reconnect, journaled before the kernel sees the request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellgate import protocol
from cellgate.agent.journal import Journal
from cellgate.agent.outbox import Outbox
from cellgate.agent.tasks import TaskRuns


def _msg(msg_type: str, content: dict[str, Any], parent: str = "req", msg_id: str = "m") -> dict[str, Any]:
    return {"header": {"msg_id": msg_id, "msg_type": msg_type}, "parent_header": {"msg_id": parent, "msg_type": "execute_request"},
            "metadata": {}, "content": content}


class Wire:
    def __init__(self) -> None:
        self.up = True
        self.sent: list[dict[str, Any]] = []

    def send(self, text: str) -> bool:
        if self.up:
            self.sent.append(json.loads(text))
        return self.up


OPEN: list[Journal] = []


def _loaded(state_dir: Path) -> Journal:
    journal = Journal(state_dir)
    journal.load()
    return journal


@pytest.fixture(autouse=True)
def _close_journals() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def _runs(tmp_path: Path, chunk: int = 1 << 20) -> tuple[TaskRuns, Wire]:
    wire = Wire()
    OPEN.append(_loaded(tmp_path))
    runs = TaskRuns(OPEN[-1], Outbox(tmp_path, 1 << 20), wire.send, chunk_bytes=chunk)
    runs.live = True
    return runs, wire


def _request(runs: TaskRuns, task_id: int = 7, max_bytes: int | None = None, msg_id: str = "req") -> None:
    runs.request(protocol.KernelMsg(kernel_id="k", channel="shell", task_id=task_id, max_bytes=max_bytes,
                                    msg={"header": {"msg_id": msg_id, "msg_type": "execute_request"}, "content": {}}))


def _end(runs: TaskRuns, parent: str = "req") -> None:
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="shell", msg=_msg("execute_reply", {"status": "ok"}, parent, "r")))
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub",
                                 msg=_msg("status", {"execution_state": "idle"}, parent, "i")))


def test_task_frames_are_numbered_journaled_and_forgotten_once_the_end_is_acked(tmp_path: Path) -> None:
    runs, wire = _runs(tmp_path)
    _request(runs)
    assert runs.journal.open[7].state == "started"  # before the kernel sees it
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": "hi\n"})))
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": "x"}, "other")))
    _end(runs)
    assert [(f.get("task_id"), f.get("seq")) for f in wire.sent] == [(7, 1), (None, None), (7, 2), (7, 3)]
    entry = runs.journal.open[7]
    assert (entry.state, entry.status, entry.last_seq) == ("ended", "ok", 3)
    runs.ack(protocol.Ack(task_id=7, seq=3, ended=True))
    assert runs.journal.open == {} and runs.outbox.pending() == {}


def test_what_the_link_missed_is_resent_in_order_before_anything_new(tmp_path: Path) -> None:
    runs, wire = _runs(tmp_path)
    _request(runs)
    for i in range(3):
        runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub",
                                     msg=_msg("stream", {"name": "stdout", "text": f"{i}\n"}, msg_id=f"o{i}")))
    runs.ack(protocol.Ack(task_id=7, seq=1))
    wire.up = False
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": "3\n"}, msg_id="o3")))
    runs.offline()
    wire.up, wire.sent = True, []
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": "4\n"}, msg_id="o4")))
    assert wire.sent == []  # not before the welcome: it would overtake what is pending
    # still running: the report says the last seq given and how many are pending, so the gateway knows
    # which it has (5 - 4: up to seq 1) and which request they answer
    assert [(r.state, r.last_seq, r.unacked) for r in runs.reports()] == [("started", 5, 4)]
    assert runs.reports()[0].msg_id == runs.journal.open[7].msg_id is not None
    runs.resend()
    assert [f["seq"] for f in wire.sent] == [2, 3, 4, 5]


def test_a_long_stream_is_split_below_the_chunk_size(tmp_path: Path) -> None:
    runs, wire = _runs(tmp_path, chunk=10_000)
    _request(runs)
    text = "".join(f"line {i}\n" for i in range(5000))
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": text})))
    assert len(wire.sent) > 3
    assert all(len(json.dumps(f)) < 10_000 + 1000 for f in wire.sent)
    assert "".join(f["msg"]["content"]["text"] for f in wire.sent) == text
    assert [f["seq"] for f in wire.sent] == list(range(1, len(wire.sent) + 1))


def test_the_output_cap_is_enforced_on_the_agent_with_one_notice(tmp_path: Path) -> None:
    runs, wire = _runs(tmp_path, chunk=100_000)
    _request(runs, max_bytes=50_000)
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": "x" * 12_000_000})))
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("stream", {"name": "stdout", "text": "more"})))
    texts = [f["msg"]["content"]["text"] for f in wire.sent]
    assert sum(len(t) for t in texts) < 50_000
    assert texts[-1].startswith("[cellgate] output truncated on the agent") and texts.count(texts[-1]) == 1
    assert "more" not in texts


def test_a_request_that_cannot_reach_its_kernel_is_answered_with_an_error(tmp_path: Path) -> None:
    runs, wire = _runs(tmp_path)
    frame = protocol.KernelMsg(kernel_id="k", channel="shell", task_id=9,
                               msg={"header": {"msg_id": "q", "msg_type": "execute_request"}, "content": {}})
    runs.fail(frame, "kernel k is dead: restart it")
    kinds = [(f["msg"]["header"]["msg_type"], f["msg"]["parent_header"]["msg_id"]) for f in wire.sent]
    assert kinds == [("execute_reply", "q"), ("status", "q")]
    assert wire.sent[0]["msg"]["content"]["evalue"] == "kernel k is dead: restart it"
    assert runs.journal.open[9].state == "ended" and runs.journal.open[9].status == "error"


def test_an_output_that_cannot_be_split_goes_whole_up_to_the_frame_bound(tmp_path: Path) -> None:
    runs, wire = _runs(tmp_path, chunk=10_000)
    _request(runs)
    image = {"data": {"image/png": "A" * 50_000}, "metadata": {}}
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("display_data", image, msg_id="img")))
    huge = {"data": {"image/png": "A" * (7 * 1024 * 1024)}, "metadata": {}}
    runs.emit(protocol.KernelMsg(kernel_id="k", channel="iopub", msg=_msg("display_data", huge, msg_id="big")))
    assert wire.sent[0]["msg"]["content"] == image  # larger than a chunk, but whole
    assert wire.sent[1]["msg"]["content"]["text"].startswith("[cellgate] a display_data output of")
