"""Running a notebook task: every code cell in order, each one approved request through the gate.

The notebook runs on the ephemeral kernel of its task (``Scripts`` starts and stops it), cell by
cell as papermill runs one: each cell is an ``execute_request`` bound to that cell's own
statements and the task's values (``Relay.dispatch(cell=…)``: the SQL kernel refuses anything
else), its outputs are recorded with the task's (numbered and capped across the cells) and
collected into the notebook. The first cell that fails stops the run: the executed notebook gets
papermill's error cells (the red banner at the top, the anchor before the failing cell) and the
task ends ``failed`` (``killed`` past the target's time limit, which counts for the whole
notebook). The executed notebook is stored (``task_notebooks``) in the transaction that ends the
task, so a task that is over always has it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from .. import jmsg, policy, tasks
from ..errors import StoreUnavailable, Unavailable
from ..kernels import CellRun, LiveKernel, NotRun
from ..models import Task, TaskNotebook
from ..relay import Relay, finish_tx
from ..store import Store
from . import document

if TYPE_CHECKING:
    import nbformat

log = logging.getLogger("cellgate.gateway.notebooks")


def execute_request(code: str, task_id: int) -> dict[str, Any]:
    """The request a task sends for ``code`` (a script, or one cell of a notebook)."""
    msg = jmsg.make("execute_request", {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                                        "allow_stdin": False, "stop_on_error": True},
                    None, "shell", session=f"cellgate-task-{task_id}")
    msg["parent_header"] = {}
    return msg


class NotebookRunner:
    def __init__(self, store: Store, relay: Relay) -> None:
        self.store = store
        self.relay = relay

    async def run(self, kernel: LiveKernel, task: Task) -> None:
        nb = await asyncio.to_thread(document.read, task.code)  # up to Gateway.max_code_bytes: off the event loop
        loop = asyncio.get_running_loop()
        limit = policy.time_limit(task.review_rule)
        deadline = loop.time() + limit
        carried = CellRun(code="", timeout=0.0)
        failure: dict[str, Any] | None = None
        for cell in document.code_cells(nb):
            left = deadline - loop.time()
            if left <= 0:
                failure = {"ename": "TimeLimit",
                           "evalue": f"the notebook ran longer than this target's limit of {limit:.0f} s; cell {cell.number} did not run"}
                break
            run = CellRun(code=cell.source, timeout=left, seq=carried.seq, bytes=carried.bytes, agent_seq=carried.agent_seq,
                          dispatched=carried.dispatched, started=carried.started, truncated=carried.truncated)
            try:
                outcome = await self.relay.dispatch(kernel, task, execute_request(cell.source, task.id), cell=run)
            except NotRun:
                if not carried.dispatched:
                    return  # the approval ran out before the first cell: the task says so already
                failure = {"ename": "NotRun", "evalue": f"the task ended before cell {cell.number} ran"}
                break
            except StoreUnavailable as exc:  # before the cell was sent (dispatch reads the store first)
                failure = {"ename": "StoreUnavailable",
                           "evalue": f"cell {cell.number} did not run: {exc.message}"}
                break
            except Unavailable as exc:  # the task failed already (its agent is gone)
                failure = {"ename": "AgentUnavailable", "evalue": str(getattr(exc, "message", exc))}
                break
            carried = run
            node = nb.cells[cell.index]
            node.outputs = outputs_of(run.outputs)
            node.execution_count = outcome.reply.get("execution_count")
            if outcome.reply.get("status") != "ok":
                node.metadata.setdefault("papermill", {})["exception"] = True
                failure = outcome.reply
                break
        await self.relay.drain(kernel)  # the outputs are written before what ends the task
        executed: str = await asyncio.to_thread(executed_text, nb, failure)  # with every output: off the event loop
        if failure is None:
            status, ename, evalue = tasks.SUCCEEDED, None, None
        else:
            ename = str(failure.get("ename") or "Error")
            evalue = str(failure.get("evalue") or "")
            status = tasks.KILLED if ename == "TimeLimit" else tasks.FAILED
        # through the kernel's recorder: retried until the store takes it, never dropped
        await self.relay.write(kernel, task.id, functools.partial(_finish_op, task.id, executed, status, ename, evalue))


def _finish_op(task_id: int, executed: str, status: str, ename: str | None, evalue: str | None, session: Session) -> None:
    session.merge(TaskNotebook(task_id=task_id, notebook=executed))
    finish_tx(session, task_id, status, ename, evalue)  # (a task ended already, by a lost kernel, stays as it ended)


def executed_text(nb: nbformat.NotebookNode, failure: dict[str, Any] | None) -> str:
    """The executed notebook's JSON (with papermill's error cells when a cell failed)."""
    import nbformat

    text: str = nbformat.writes(with_error_cells(nb, failure) if failure else nb)  # type: ignore[no-untyped-call]
    return text


def outputs_of(collected: list[dict[str, Any]]) -> list[nbformat.NotebookNode]:
    """A cell's outputs from the messages it showed, as Jupyter keeps them: consecutive stream text
    of one stream joined, ``clear_output`` clearing what came before, ``update_display_data``
    replacing the display it names."""
    import nbformat

    outputs: list[nbformat.NotebookNode] = []
    displays: dict[str, int] = {}
    for item in collected:
        msg_type, content = item["msg_type"], item["content"]
        if msg_type == "clear_output":
            outputs, displays = [], {}
            continue
        display_id = (content.get("transient") or {}).get("display_id")
        if msg_type == "update_display_data":
            if display_id in displays:
                at = displays[display_id]
                outputs[at] = nbformat.v4.output_from_msg({"header": {"msg_type": "display_data"}, "content": content})  # type: ignore[no-untyped-call]
            continue
        try:
            out = nbformat.v4.output_from_msg({"header": {"msg_type": msg_type}, "content": content})  # type: ignore[no-untyped-call]
        except (KeyError, ValueError) as exc:
            log.warning("an output of type %s is not kept in the notebook: %s", msg_type, exc)
            continue
        if out.output_type == "stream" and outputs and outputs[-1].output_type == "stream" and outputs[-1].name == out.name:
            outputs[-1].text += out.text
            continue
        if display_id:
            displays[display_id] = len(outputs)
        outputs.append(out)
    return outputs


def with_error_cells(nb: nbformat.NotebookNode, failure: dict[str, Any]) -> nbformat.NotebookNode:
    """papermill's marking of a failed run: a banner cell first, an anchor before the failed cell."""
    import nbformat
    from papermill.execute import ERROR_ANCHOR_MSG, ERROR_MARKER_TAG, ERROR_MESSAGE_TEMPLATE

    failed = next((i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("papermill", {}).get("exception")), None)
    count = nb.cells[failed].get("execution_count") if failed is not None else None
    banner = nbformat.v4.new_markdown_cell(ERROR_MESSAGE_TEMPLATE % str(count))  # type: ignore[no-untyped-call]
    banner.metadata["tags"] = [ERROR_MARKER_TAG]
    if failed is not None:
        anchor = nbformat.v4.new_markdown_cell(ERROR_ANCHOR_MSG)  # type: ignore[no-untyped-call]
        anchor.metadata["tags"] = [ERROR_MARKER_TAG]
        nb.cells.insert(failed, anchor)
    nb.cells.insert(0, banner)
    nb.metadata.setdefault("papermill", {}).update({"exception": True, "ename": failure.get("ename"),
                                                    "evalue": failure.get("evalue")})
    return nb
