"""The gate on one kernel, with the real task flow and relay on a SQLite store and a fake agent.

The fake agent answers what the gateway sends it over the protocol (``protocol.KernelMsg`` to the
agent, frames back through ``AgentSessions.on_message``) the way a kernel does: busy, the
outputs, ``execute_reply``, idle. Each test reads what the client saw and what the store says.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import Seed, reviewed_target

from cellgate import protocol
from cellgate.gateway import analysis, jmsg, policy, tasks
from cellgate.gateway.agents import AgentConnection
from cellgate.gateway.app import Parts, assemble
from cellgate.gateway.auth import Identity
from cellgate.gateway.kernels import LiveKernel
from cellgate.gateway.models import AuditEvent, Target, Task, TaskOutput
from cellgate.gateway.store import Store
from cellgate.gateway.timeouts import Timeouts


class FakeAgent:
    """Hosts kernels; runs a cell by answering with what ``outcome(code)`` says: ("ok", text) or ("error", ename)."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.received: list[protocol.KernelMsg] = []
        self.release = asyncio.Event()
        self.release.set()
        self.conn = AgentConnection(agent_id="fake-1", token_name="fake", send_text=self._receive)
        self.conn.targets = {"prod": {"name": "prod"}}
        parts.agents.add(self.conn)

    def _receive(self, text: str) -> None:
        frame = protocol.parse(text, protocol.GATEWAY)
        if isinstance(frame, protocol.KernelMsg) and frame.msg["header"]["msg_type"] == "execute_request":
            self.received.append(frame)
            asyncio.get_running_loop().create_task(self._run(frame))
        elif isinstance(frame, protocol.Explain):  # the row estimate reviewers see
            self.conn.on_reply(protocol.Reply(req_id=frame.req_id, ok=True, rows=[2] * len(frame.statements)))

    def _say(self, kernel_id: str, channel: str, msg: dict[str, Any]) -> None:
        self.parts.sessions.on_message(self.conn, protocol.KernelMsg(kernel_id=kernel_id, channel=channel, msg=msg))

    async def _run(self, frame: protocol.KernelMsg) -> None:
        await self.release.wait()
        request = frame.msg
        code = request["content"]["code"]
        self._say(frame.kernel_id, "iopub", jmsg.status("busy", request))
        if "boom" in code:
            self._say(frame.kernel_id, "iopub", jmsg.make("error", {"ename": "Boom", "evalue": "x", "traceback": []}, request, "iopub"))
            self._say(frame.kernel_id, "shell", jmsg.make("execute_reply", {"status": "error", "ename": "Boom", "evalue": "x"},
                                                          request, "shell"))
        else:
            self._say(frame.kernel_id, "iopub", jmsg.make("stream", {"name": "stdout", "text": f"ran: {code}\n"}, request, "iopub"))
            self._say(frame.kernel_id, "shell", jmsg.make("execute_reply", {"status": "ok", "execution_count": 1}, request, "shell"))
        self._say(frame.kernel_id, "iopub", jmsg.status("idle", request))


class Client:
    """An attached notebook client: every message the kernel's clients are sent."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def send_text(self, text: str) -> None:
        self.seen.append(json.loads(text))

    def of(self, request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        mine = request["header"]["msg_id"]
        return [(m["header"]["msg_type"], m["content"]) for m in self.seen if m.get("parent_header", {}).get("msg_id") == mine]

    def reply(self, request: dict[str, Any]) -> dict[str, Any] | None:
        return next((c for t, c in self.of(request) if t == "execute_reply"), None)


@pytest.fixture
def sqlite_store(sqlite_template: Path, tmp_path: Path) -> Iterator[Store]:
    shutil.copy(sqlite_template, tmp_path / "t.db")
    store = Store(f"sqlite:///{tmp_path}/t.db")
    yield store
    store.close()


@pytest.fixture
def world(sqlite_store: Store) -> Iterator[dict[str, Any]]:
    reviewed_target(sqlite_store)
    seed = Seed(sqlite_store)
    dev = seed.user("dev", ["dev"])
    dba = seed.user("dba", ["dba"])
    analyser = analysis.Analyser(processes=False)
    yield {"store": sqlite_store, "seed": seed, "analyser": analyser,
           "dev": Identity(kind="user", name="dev", user_id=dev, groups=frozenset({"dev"})),
           "dba": Identity(kind="user", name="dba", user_id=dba, groups=frozenset({"dba"}))}
    analyser.close()


def request(code: str, **content: Any) -> dict[str, Any]:
    return jmsg.make("execute_request", {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                                         "allow_stdin": False, "stop_on_error": True, **content}, None, "shell")


async def until(cond: Any, timeout: float = 10.0, what: Any = None) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, f"timed out waiting; seen: {what() if what else '-'}"
        await asyncio.sleep(0.01)


def scenario(world: dict[str, Any], body: Any, **parts_kw: Any) -> tuple[Client, FakeAgent]:
    """Run ``body(parts, agent, kernel, client)`` on a fresh loop with the gateway's parts and one kernel."""
    client = Client()

    async def main() -> FakeAgent:
        parts = assemble(world["store"], "http://gw.test", analyser=world["analyser"], **parts_kw)
        agent = FakeAgent(parts)
        kernel = LiveKernel(id="k-1", user_id=world["dev"].user_id, user_name="dev", target="prod",
                            agent_id=agent.conn.agent_id, execution_state="idle")
        parts.lifecycle.attach(kernel, agent.conn)
        kernel.clients.add(client)
        try:
            await body(parts, agent, kernel, client)
            await parts.relay.drain(kernel)
        finally:
            kernel.gate.close()
            await parts.relay.close(kernel)
            await parts.background.cancel_all()
        return agent
    return client, asyncio.run(main())


def task_of(store: Store, msg: dict[str, Any]) -> Task | None:
    return store.call(lambda s: s.query(Task).filter(Task.msg_id == msg["header"]["msg_id"]).one_or_none())


def held_shown(client: Client, cell: dict[str, Any]) -> bool:
    return any(t == "display_data" for t, _ in client.of(cell))


def test_read_only_sql_runs_at_once_recorded_against_its_task(world: dict[str, Any]) -> None:
    cell = request("SELECT * FROM accounts; SELECT 2")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: client.reply(cell) is not None)

    client, _ = scenario(world, body)
    task = task_of(world["store"], cell)
    assert task is not None and task.status == tasks.SUCCEEDED and task.kind == "cell" and task.kernel_id == "k-1"
    assert not held_shown(client, cell)
    outputs = world["store"].call(lambda s: [o.output for o in s.query(TaskOutput).filter_by(task_id=task.id)])
    assert outputs == [{"output_type": "stream", "name": "stdout", "text": "ran: SELECT * FROM accounts; SELECT 2\n"}]


def test_what_the_agent_is_sent_names_the_task_statements_and_mode_not_the_clients(world: dict[str, Any]) -> None:
    cell = request("SELECT 1; SELECT 2")
    cell["metadata"] = {"cellgate": {"task_id": 99, "statements": ["DROP TABLE accounts"], "mode": "read-write"}}

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: client.reply(cell) is not None)

    _, agent = scenario(world, body)
    task = task_of(world["store"], cell)
    assert task is not None
    assert [f.task_id for f in agent.received] == [task.id]
    assert agent.received[0].msg["metadata"]["cellgate"] == {"task_id": task.id, "statements": ["SELECT 1", "SELECT 2"],
                                                             "mode": "read-only"}


def test_a_held_cell_waits_for_review_then_runs_and_its_display_says_how_it_ended(world: dict[str, Any]) -> None:
    cell = request("UPDATE accounts SET x = 1 WHERE id = 2")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: held_shown(client, cell))
        await asyncio.sleep(0.1)
        task = task_of(world["store"], cell)
        assert task is not None and task.status == tasks.PENDING_REVIEW and agent.received == []
        await parts.flow.review(world["dba"], task.id, "approve", "ok", None)
        await until(lambda: client.reply(cell) is not None)
        await until(lambda: any("succeeded" in c["data"]["text/plain"] for t, c in client.of(cell) if t == "update_display_data"),
                    what=lambda: [(t, c.get("evalue")) for t, c in client.of(cell)])

    client, agent = scenario(world, body)
    task = task_of(world["store"], cell)
    assert task is not None and task.status == tasks.SUCCEEDED and len(agent.received) == 1
    assert client.reply(cell) == {"status": "ok", "execution_count": 1}


def test_a_rejected_cell_says_who_and_why_and_aborts_only_what_was_queued_behind_it(world: dict[str, Any]) -> None:
    held = request("DELETE FROM accounts WHERE id = 3")
    queued = request("SELECT 1")
    after = request("SELECT 2")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        kernel.gate.submit(held, world["dev"])
        kernel.gate.submit(queued, world["dev"])
        await until(lambda: held_shown(client, held))
        task = task_of(world["store"], held)
        assert task is not None
        await parts.flow.review(world["dba"], task.id, "reject", "use the archive job", None)
        await until(lambda: client.reply(queued) is not None)
        kernel.gate.submit(after, world["dev"])  # sent once the client saw the failure: it runs
        await until(lambda: client.reply(after) is not None)

    client, agent = scenario(world, body)
    error = next(c for t, c in client.of(held) if t == "error")
    assert error["ename"] == "TaskRejected" and "rejected by dba: use the archive job" in error["evalue"]
    assert client.reply(queued) == {"status": "aborted", "execution_count": None}
    assert task_of(world["store"], queued) is None  # aborted before it became a task
    reply = client.reply(after)
    assert reply is not None and reply["status"] == "ok"
    assert [f.msg["content"]["code"] for f in agent.received] == ["SELECT 2"]


def test_a_failing_cell_aborts_the_ones_sent_before_its_failure_was_seen(world: dict[str, Any]) -> None:
    first = request("SELECT 'boom'")
    second = request("SELECT 1")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        agent.release.clear()  # the kernel is busy with the first when the second arrives
        kernel.gate.submit(first, world["dev"])
        await until(lambda: len(agent.received) == 1)
        kernel.gate.submit(second, world["dev"])
        agent.release.set()
        await until(lambda: client.reply(second) is not None)

    client, agent = scenario(world, body)
    first_task = task_of(world["store"], first)
    assert first_task is not None and first_task.status == tasks.FAILED and first_task.error_ename == "Boom"
    assert client.reply(second) == {"status": "aborted", "execution_count": None}
    assert len(agent.received) == 1


def test_interrupting_a_held_cell_cancels_its_task(world: dict[str, Any]) -> None:
    cell = request("UPDATE accounts SET x = 1 WHERE id = 2")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: held_shown(client, cell))
        await parts.lifecycle.interrupt(kernel, world["dev"].actor)
        await until(lambda: client.reply(cell) is not None)

    client, agent = scenario(world, body)
    task = task_of(world["store"], cell)
    assert task is not None and task.status == tasks.CANCELLED and agent.received == []
    error = next(c for t, c in client.of(cell) if t == "error")
    assert error["ename"] == "TaskCancelled" and "interrupted while awaiting review" in error["evalue"]


@pytest.mark.parametrize(("content", "ename"), [
    ({"user_expressions": {"x": "__import__('os').system('id')"}}, "TaskDenied"),
])
def test_what_would_run_outside_the_reviewed_cell_is_denied_as_a_task(world: dict[str, Any], content: dict[str, Any],
                                                                      ename: str) -> None:
    cell = request("SELECT 1", **content)

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: client.reply(cell) is not None)

    client, agent = scenario(world, body)
    task = task_of(world["store"], cell)
    assert task is not None and task.status == tasks.DENIED and agent.received == []
    assert next(c for t, c in client.of(cell) if t == "error")["ename"] == ename


def test_a_cell_over_the_size_cap_is_refused_audited_and_never_a_task(world: dict[str, Any]) -> None:
    cell = request("SELECT '" + "x" * 5000 + "'")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        parts.flow.max_code_bytes = 4096
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: client.reply(cell) is not None)

    client, agent = scenario(world, body)
    assert task_of(world["store"], cell) is None and agent.received == []
    assert next(c for t, c in client.of(cell) if t == "error")["ename"] == "CellTooLarge"
    actions = world["store"].call(lambda s: [e.action for e in s.query(AuditEvent).order_by(AuditEvent.id)])
    assert actions[-1] == "cell.too_large"


def test_a_cell_whose_token_was_revoked_is_not_submitted(world: dict[str, Any]) -> None:
    cell = request("SELECT 1")

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        sender = dataclasses.replace(world["dev"], token_id=11)
        parts.sockets.close_token(11)
        kernel.gate.submit(cell, sender)
        await until(lambda: client.reply(cell) is not None)

    client, agent = scenario(world, body)
    assert task_of(world["store"], cell) is None and agent.received == []
    assert next(c for t, c in client.of(cell) if t == "error")["ename"] == "TokenRevoked"


@pytest.mark.parametrize("agent_answers_interrupt", [True, False], ids=["interrupt-taken", "agent-silent"])
def test_a_cell_over_its_time_limit_is_interrupted_and_ends_killed(world: dict[str, Any], agent_answers_interrupt: bool) -> None:
    """Interrupt taken or not, a kernel that never ends the cell: the task ends ``killed`` when the
    gateway stops waiting (Timeouts.time_limit_*), the client gets the TimeLimit error, and the
    next cell of the kernel is not held behind it."""
    def one_second_limit(session: Any) -> None:
        target = session.query(Target).filter_by(name="prod").one()
        policy.store(target, policy.parse({"auto_approve": "read-only", "review": {"groups": ["dba"]}, "limits": {"timeout": 1}}))
    world["store"].call(one_second_limit)
    cell = request("SELECT * FROM accounts")  # read-only: runs at once; the fake kernel never ends it
    interrupts: list[str] = []

    async def body(parts: Parts, agent: FakeAgent, kernel: LiveKernel, client: Client) -> None:
        agent.release.clear()  # the kernel never ends the cell
        receive = agent.conn.send_text

        def also_interrupts(text: str) -> None:
            frame = protocol.parse(text, protocol.GATEWAY)
            if isinstance(frame, protocol.KernelInterrupt):
                interrupts.append(frame.kernel_id)
                if agent_answers_interrupt:
                    agent.conn.on_reply(protocol.Reply(req_id=frame.req_id, ok=True))
                return
            receive(text)
        agent.conn.send_text = also_interrupts
        kernel.gate.submit(cell, world["dev"])
        await until(lambda: client.reply(cell) is not None, timeout=15, what=lambda: client.of(cell))
        agent.release.set()  # the fake kernel's late reply finds nothing waiting for it

    timeouts = Timeouts(time_limit_interrupt=0.3, time_limit_reply=0.3)
    client, agent = scenario(world, body, timeouts=timeouts)
    task = task_of(world["store"], cell)
    assert task is not None and task.status == tasks.KILLED and len(agent.received) == 1
    assert interrupts == ["k-1"]
    reply = client.reply(cell)
    assert reply is not None and reply["status"] == "error" and reply["ename"] == "TimeLimit"
    assert "limit of 1 s" in reply["evalue"]
