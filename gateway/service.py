"""The gateway's runtime: tasks, kernels and agents brought together.

Handlers call this; this calls the state machine (``tasks``), the policy, the reviews and the
store. Every task change is followed by ``events.notify`` so waiting cells and CLIs wake up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from typing import Any, NoReturn

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cellgate import protocol
from cellgate.kernels.sql.split import split_statements

from . import analysis, audit, auth, binding, jmsg, policy, reviews, risk, tasks
from .agents import CLOSE_DUPLICATE, CLOSE_FORBIDDEN, AgentConnection, AgentRefused, AgentRegistry
from .auth import Identity
from .errors import Conflict, Forbidden, NotFound, TooLarge, Unavailable
from .events import TaskEvents
from .gate import Gate, NotRun
from .kernels import OUTPUT_TYPES, Execution, KernelRegistry, LiveKernel, Recorder
from .models import Kernel, Target, Task, TaskOutput, Token, User, utcnow
from .sockets import SocketRegistry
from .store import Store

log = logging.getLogger("cellgate.gateway")

#: seconds an agent may be away before what ran on its kernels counts as lost
AGENT_GRACE = 30.0
#: seconds an agent has to answer an EXPLAIN request
EXPLAIN_TIMEOUT = 10.0

REFUSALS = {
    tasks.REJECTED: "TaskRejected",
    tasks.DENIED: "TaskDenied",
    tasks.CANCELLED: "TaskCancelled",
    tasks.EXPIRED: "TaskExpired",
}


def code_too_large(size: int, limit: int, what: str = "cell") -> str:
    return f"this {what} is {size} bytes; the gateway accepts at most {limit} (Gateway.max_code_bytes)"


def _target_facts(session: Session, target_name: str) -> tuple[tuple[str, str | None], bool] | None:
    """((kind, dialect), has reviewers) of a target: what the analysis and the estimate need."""
    target = session.get(Target, target_name)
    if target is None:
        return None
    return (target.kind or "sql", target.dialect or None), bool(target.review_groups)


class Service:
    #: code accepted per cell or script, in UTF-8 bytes (Gateway.max_code_bytes)
    max_code_bytes: int = 1 << 20
    #: seconds the risk analysis of one cell may take (Gateway.analysis_budget)
    analysis_budget: float = 2.0
    #: the analysis workers (processes); None: the process-wide default (analysis.default())
    analyser: analysis.Analyser | None = None

    def __init__(self, store: Store, public_url: str) -> None:
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.agents = AgentRegistry()
        self.kernels = KernelRegistry()
        self.events = TaskEvents()
        self.sockets = SocketRegistry()  # open WebSockets, closed when their token is revoked
        self.recorders: dict[str, Recorder] = {}
        self.background: set[asyncio.Task[Any]] = set()

    # ----------------------------------------------------------------- helpers
    def task_url(self, task_id: int) -> str:
        return f"{self.public_url}/tasks/{task_id}"

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def get_task(self, task_id: int) -> Task:
        def _get(session: Session) -> Task:
            task = session.get(Task, task_id, populate_existing=True)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            _ = task.user, task.reviews
            return reviews.annotate(session, task)
        return await self.store.run(_get)

    @staticmethod
    def refusal(task: Task) -> tuple[str, str]:
        ename = REFUSALS.get(task.status, "TaskNotRun")
        if task.status == tasks.REJECTED:
            return ename, f"task #{task.id} was rejected by {task.decided_by}: {task.decision_comment}"
        if task.status == tasks.DENIED:
            return ename, f"task #{task.id} was denied by policy: {task.decision_comment}"
        if task.status == tasks.CANCELLED:
            return ename, f"task #{task.id} was cancelled: {task.decision_comment or 'by its author'}"
        if task.status == tasks.EXPIRED:
            return ename, f"task #{task.id}'s approval expired before it started"
        return ename, f"task #{task.id} is {task.status}"

    # ------------------------------------------------------------------- tasks
    async def submit(self, ident: Identity, target_name: str, code: str, *, kind: str,
                     refuse: str | None = None, dispatch_to: str | None = None, **context: Any) -> Task:
        """Create the task, analyse its risk and let policy move it on, in one transaction.

        Code over ``max_code_bytes`` (UTF-8) is refused with :class:`TooLarge` (413) before
        anything else: it never becomes a task. The risk is analysed once, before the transaction,
        off the event loop and within ``analysis_budget`` seconds (``analysis.analyse``; over the
        budget the cell is reviewed, never auto-approved; worker processes, so a 1 MiB parse holding
        the GIL does not stall the loop). The target row is read first, in a
        quick store call, for its kind and dialect.

        With ``dispatch_to`` (an agent id), a task that policy approves is also marked dispatched
        to that agent in the same transaction: an auto-approved cell costs one commit before it
        runs. A task that waits for review and contains UPDATE/DELETE statements gets the agent's
        EXPLAIN estimate of affected rows, asked before and attached in that same transaction.
        ``review_rule["run_as"]`` records how an approved task must run: ``read-only`` when policy
        auto-approved it as read-only SQL (the kernel then uses the read-only credential), else
        ``read-write``.
        """
        self.check_size(code, "cell" if kind == "cell" else "script")
        row = await self.store.run(_target_facts, target_name)
        if row is None:
            raise NotFound(f"target {target_name!r} not found")
        analysed_as, has_reviewers = row
        found = await (self.analyser or analysis.default()).analyse(code, analysed_as[0], analysed_as[1], self.analysis_budget)
        estimate: tuple[int | None, dict[str, Any]] | None = None
        if not refuse and has_reviewers and found.explain:  # UPDATE/DELETE: estimate before anyone can see the task
            estimate = await self._pre_estimate(target_name, found)

        def _submit(session: Session) -> Task:
            target = session.get(Target, target_name)
            if target is None:
                raise NotFound(f"target {target_name!r} not found")
            cell_risk = found
            if (target.kind or "sql", target.dialect or None) != analysed_as:  # changed meanwhile: not what was analysed
                cell_risk = analysis.unanalysed(f"the target {target.name} changed kind or dialect while the cell was analysed")
            decision = policy.evaluate(ident, target, code, cell_risk)
            if refuse:
                decision = policy.Decision(policy.DENY, refuse)
            rules = policy.of(target)
            review_rule = {"mode": rules.review.mode, "approvals": rules.review.approvals,
                           "approval_window": rules.limits.approval_window, "timeout": rules.limits.timeout,
                           "max_bytes": rules.limits.max_bytes, "max_rows": rules.limits.max_rows,
                           "run_as": decision.run_as}
            task = tasks.create(session, ident.actor, kind=kind, target=target.name, user_id=ident.user_id,
                                code=code, review_groups=list(decision.review_groups), risk=cell_risk.as_dict(),
                                review_rule=review_rule, **context)
            dest = {policy.APPROVE: tasks.APPROVED, policy.REVIEW: tasks.PENDING_REVIEW, policy.DENY: tasks.DENIED}[decision.action]
            fields: dict[str, Any] = {}
            if dest != tasks.PENDING_REVIEW:
                fields = {"decided_by": "policy", "decision_comment": decision.reason}
            elif estimate is not None:  # attached in the same transaction: reviewers never see it missing
                fields = {"row_estimate": estimate[0]}
                audit.append(session, "agent", "task.estimated", task_id=task.id, target=task.target, detail=estimate[1])
            if dest == tasks.APPROVED:
                fields.update(reviews.approval_fields(task))
            task = tasks.transition(session, task.id, tasks.SUBMITTED, dest, "policy",
                                    {"reason": decision.reason, "risk": cell_risk.level, "flags": list(cell_risk.flags),
                                     "run_as": decision.run_as}, **fields)
            if dest == tasks.APPROVED and dispatch_to:
                task = tasks.transition(session, task.id, tasks.APPROVED, tasks.DISPATCHED, "gateway",
                                        {"agent": dispatch_to}, agent_id=dispatch_to)
            set_committed_value(task, "reviews", [])  # a new task has none: no query
            _ = task.user
            return reviews.annotate(session, task)

        task = await self.store.run(_submit)
        if found.parsed and analysed_as[0] == "sql":  # dispatch need not split again (the kernel checks it)
            task.analysed = (analysed_as, found.texts)
        self.events.notify(task.id)
        return task

    def check_size(self, code: str, what: str = "cell") -> None:
        """Refuse code over ``max_code_bytes`` of UTF-8 (413): one cell must not stall the gateway."""
        if len(code) * 4 <= self.max_code_bytes:  # cheap: no encoding needed
            return
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > self.max_code_bytes:
            raise TooLarge(code_too_large(size, self.max_code_bytes, what))

    async def _pre_estimate(self, target_name: str, found: risk.Risk) -> tuple[int | None, dict[str, Any]] | None:
        """For a target with reviewers, the agent's EXPLAIN estimate of the code's UPDATE/DELETE rows."""
        statements = list(found.explain)
        agents = self.agents.serving(target_name)
        if not statements or not agents:
            return None
        try:
            reply = await agents[0].request(protocol.Explain(target=target_name, statements=statements[:10]),
                                            timeout=EXPLAIN_TIMEOUT)
            estimate = int(sum(int(n) for n in reply.rows or []))
            return estimate, {"row_estimate": estimate, "statements": len(statements[:10])}
        except (Unavailable, TypeError, ValueError) as exc:
            return None, {"error": str(getattr(exc, "message", exc))}

    async def ensure_fresh(self, task: Task) -> Task:
        """An approved task past its approval window expires instead of starting."""
        if task.status != tasks.APPROVED or task.expires_at is None:
            return task
        expires = task.expires_at if task.expires_at.tzinfo else task.expires_at.replace(tzinfo=dt.UTC)
        if utcnow() < expires:
            return task
        try:
            await self.store.run(lambda s: tasks.transition(s, task.id, tasks.APPROVED, tasks.EXPIRED, "gateway",
                                                              {"reason": "the approval window passed before the task started"},
                                                              decision_comment="the approval window passed before the task started"))
        except tasks.TransitionError as exc:
            log.info("task %s: %s", task.id, exc)
        self.events.notify(task.id)
        return await self.get_task(task.id)

    async def submit_script(self, ident: Identity, target_name: str, code: str, why: str) -> Task:
        """A CLI script. A user outside the target's submit groups gets a ``denied`` task: the attempt is audited."""
        task = await self.submit(ident, target_name, code, kind="script", why=why)
        if task.status in (tasks.APPROVED, tasks.PENDING_REVIEW):
            self.spawn(self.run_script(task.id))
        return task

    async def review(self, ident: Identity, task_id: int, decision: str, comment: str, code_sha256: str | None) -> Task:
        if ident.user_id is None:
            raise Forbidden("only users review tasks")
        await self.store.run(reviews.decide, task_id, ident.user_id, decision, comment, code_sha256)
        self.events.notify(task_id)
        return await self.get_task(task_id)

    async def cancel(self, task_id: int, ident: Identity, reason: str) -> Task:
        def _cancel(session: Session) -> Task:
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            if task.user_id != ident.user_id and not ident.is_admin:
                raise Forbidden(f"only the author of task {task_id} or an admin can cancel it")
            if task.status not in (tasks.SUBMITTED, tasks.PENDING_REVIEW, tasks.APPROVED):
                raise Conflict(f"task {task_id} is {task.status}; only a task that has not started can be cancelled")
            return tasks.transition(session, task_id, task.status, tasks.CANCELLED, ident.actor, {"reason": reason},
                                    decided_by=ident.name, decision_comment=reason)
        await self.store.run(_cancel)
        self.events.notify(task_id)
        return await self.get_task(task_id)

    async def check_target(self, ident: Identity, target_name: str) -> Target:
        target: Target | None = await self.store.run(lambda s: s.get(Target, target_name))
        if target is None or not policy.may_submit(ident, target):
            # the same answer for "absent" and "not yours": names of targets are not disclosed
            raise NotFound(f"target {target_name!r} not found (or you may not use it); see `cellgate targets`")
        return target

    # ----------------------------------------------------------------- kernels
    async def start_kernel(self, ident: Identity, target_name: str, env: dict[str, str] | None = None,
                           *, ephemeral: bool = False) -> LiveKernel:
        target = await self.check_target(ident, target_name)
        limits = policy.of(target).limits
        agent = self.agents.pick(target_name)
        env = env or {}
        kernel_id = str(uuid.uuid4())
        notebook_path = env.get("JPY_SESSION_NAME") or env.get("KERNEL_NOTEBOOK_PATH")
        kernel_env = {k: v for k, v in env.items() if k.startswith("KERNEL_")}
        await agent.request(protocol.KernelStart(kernel_id=kernel_id, target=target_name, env=kernel_env,
                                                 limits=protocol.Limits(max_rows=limits.max_rows, timeout=limits.timeout)),
                            timeout=120)
        kernel = LiveKernel(id=kernel_id, user_id=ident.user_id or 0, user_name=ident.name, target=target_name,
                            agent_id=agent.agent_id, notebook_path=notebook_path, ephemeral=ephemeral, execution_state="idle")

        def _record(session: Session) -> None:
            session.add(Kernel(id=kernel_id, user_id=ident.user_id, target=target_name, agent_id=agent.agent_id,
                               notebook_path=notebook_path, ephemeral=ephemeral))
            audit.append(session, ident.actor, "kernel.started", target=target_name, kernel_id=kernel_id,
                         detail={"agent": agent.agent_id, "notebook_path": notebook_path, "ephemeral": ephemeral})
        await self.store.run(_record)
        self._attach(kernel, agent)
        return kernel

    def _attach(self, kernel: LiveKernel, agent: AgentConnection) -> None:
        kernel.gate = Gate(self, kernel)
        self.kernels.add(kernel)
        self.recorders[kernel.id] = Recorder(self.store.run, self.events.notify)
        agent.kernels.add(kernel.id)

    def owned_kernel(self, ident: Identity, kernel_id: str) -> LiveKernel:
        """The kernel, if ``ident`` owns it; otherwise 404 (another user's kernel is not disclosed)."""
        kernel = self.kernels.get(kernel_id)
        if kernel is None or kernel.ephemeral or kernel.user_id != ident.user_id:
            raise NotFound(f"kernel {kernel_id} not found")
        return kernel

    async def stop_kernel(self, kernel: LiveKernel, actor: str) -> None:
        agent = self.agents.get(kernel.agent_id)
        if agent is not None:
            try:
                await agent.request(protocol.KernelStop(kernel_id=kernel.id), timeout=30)
            except Unavailable as exc:
                log.warning("stopping kernel %s: %s", kernel.id, exc)
            agent.kernels.discard(kernel.id)
        self.kernels.remove(kernel.id)
        kernel.gate.close()
        recorder = self.recorders.pop(kernel.id, None)
        if recorder is not None:  # what the kernel did is written before what its stop ends
            await recorder.drain()
            recorder.close()
        await self._end_executions(kernel, tasks.KILLED, "KernelStopped", "the kernel was shut down")

        def _record(session: Session) -> None:
            session.execute(update(Kernel).where(Kernel.id == kernel.id).values(stopped_at=utcnow()))
            audit.append(session, actor, "kernel.stopped", target=kernel.target, kernel_id=kernel.id)
        await self.store.run(_record)

    async def interrupt_kernel(self, kernel: LiveKernel, actor: str) -> None:
        if await kernel.gate.interrupt():
            return
        agent = self._agent_of(kernel)
        await agent.request(protocol.KernelInterrupt(kernel_id=kernel.id), timeout=30)
        await self.store.run(lambda s: audit.append(s, actor, "kernel.interrupted", target=kernel.target, kernel_id=kernel.id))

    async def restart_kernel(self, kernel: LiveKernel, actor: str) -> None:
        agent = self._agent_of(kernel)
        kernel.gate.abort_queued()
        await kernel.gate.interrupt()
        kernel.execution_state = "restarting"
        kernel.to_clients(jmsg.status("restarting", None))
        await agent.request(protocol.KernelRestart(kernel_id=kernel.id), timeout=120)
        await self._end_executions(kernel, tasks.KILLED, "KernelRestarted", "the kernel was restarted")
        kernel.execution_state = "idle"
        await self.store.run(lambda s: audit.append(s, actor, "kernel.restarted", target=kernel.target, kernel_id=kernel.id))

    def _agent_of(self, kernel: LiveKernel) -> AgentConnection:
        agent = self.agents.get(kernel.agent_id)
        if agent is None:
            raise Unavailable(f"the agent hosting kernel {kernel.id} ({kernel.agent_id}) is not connected")
        return agent

    async def _end_executions(self, kernel: LiveKernel, status: str, ename: str, evalue: str) -> None:
        for ex in kernel.finish_all("error", ename, evalue):
            await self.store.run(self._finish_tx, ex.task_id, status, ename, evalue)
            self.events.notify(ex.task_id)

    @staticmethod
    def _finish_tx(session: Session, task_id: int, status: str, ename: str | None, evalue: str | None) -> None:
        try:
            tasks.advance(session, task_id, status, "agent", {"ename": ename} if ename else None,
                          error_ename=ename, error_evalue=evalue)
        except tasks.TransitionError as exc:
            log.info("task %s already final: %s", task_id, exc)

    # ------------------------------------------------------------ executions
    async def dispatch_cell(self, kernel: LiveKernel, task: Task, msg: dict[str, Any]) -> dict[str, Any]:
        """Send an approved request to the agent; return the kernel's ``execute_reply`` content.

        Raises :class:`NotRun` when the approval expired first. A task still running after the
        target's time limit is interrupted and ends ``killed``.
        """
        task = await self.ensure_fresh(task)
        if task.status not in (tasks.APPROVED, tasks.DISPATCHED):
            raise NotRun(task)
        agent = self.agents.get(kernel.agent_id)
        if agent is None:
            await self.store.run(self._finish_tx, task.id, tasks.FAILED, "AgentUnavailable",
                                 f"agent {kernel.agent_id} is not connected")
            self.events.notify(task.id)
            raise Unavailable(f"the agent hosting this kernel ({kernel.agent_id}) is not connected; task #{task.id} did not run")
        if task.status == tasks.APPROVED:  # (submit may have dispatched it already)
            await self.store.run(lambda s: tasks.transition(s, task.id, tasks.APPROVED, tasks.DISPATCHED, "gateway",
                                                              {"agent": agent.agent_id}, agent_id=agent.agent_id))
        rule = task.review_rule or {}
        await self._bind_to_task(msg, task)
        msg_id = msg["header"]["msg_id"]
        ex = Execution(task_id=task.id, msg_id=msg_id, done=asyncio.get_running_loop().create_future(),
                       max_bytes=int(rule.get("max_bytes", policy.Limits().max_bytes)))
        kernel.executions[msg_id] = ex
        agent.send(protocol.KernelMsg(kernel_id=kernel.id, channel="shell", msg=msg, task_id=task.id))
        self.events.notify(task.id)
        timeout = float(rule.get("timeout", policy.Limits().timeout))
        try:
            return await asyncio.wait_for(asyncio.shield(ex.done), timeout)
        except TimeoutError:
            pass
        ex.killed = f"the task ran longer than this target's limit of {timeout:.0f} s and was interrupted"
        self._notice(kernel, ex, msg.get("header", {}), f"[cellgate] {ex.killed}\n")
        try:
            await agent.request(protocol.KernelInterrupt(kernel_id=kernel.id), timeout=10)
            return await asyncio.wait_for(asyncio.shield(ex.done), 30)
        except (TimeoutError, Unavailable):
            await self._end_executions(kernel, tasks.KILLED, "TimeLimit", ex.killed)
            return {"status": "error", "ename": "TimeLimit", "evalue": ex.killed, "_arrivals": kernel.gate.arrivals + 1}

    async def _bind_to_task(self, msg: dict[str, Any], task: Task) -> None:
        """Tell the kernel exactly what to run: ``metadata.cellgate`` (any client-sent one replaced).

        ``statements`` is the split the analysis read (the SQL kernel refuses a cell whose own
        split differs); ``mode`` is "read-only" when policy auto-approved it as read-only SQL.
        """
        if task.analysed is not None:  # this process analysed it at submission: the same split
            (kind, dialect), texts = task.analysed
        else:
            target = await self.store.run(lambda s: s.get(Target, task.target))
            kind = (target.kind if target is not None else "") or "sql"
            dialect = (target.dialect if target is not None else "") or ""
            texts = tuple(await asyncio.to_thread(split_statements, task.code, dialect)) if kind == "sql" and dialect else ()
        sql = kind == "sql" and bool(dialect)
        metadata = msg.get("metadata")
        metadata = dict(metadata) if isinstance(metadata, dict) else {}
        metadata["cellgate"] = {
            "task_id": task.id,
            "statements": list(texts) if sql else [],
            "mode": (task.review_rule or {}).get("run_as", "read-write") if sql else "read-write",
        }
        msg["metadata"] = metadata

    async def run_script(self, task_id: int) -> None:
        """A CLI script: wait for the decision and for an agent, run it on an ephemeral kernel."""
        task = await self.get_task(task_id)
        while task.status == tasks.PENDING_REVIEW:
            await self.events.wait(task_id, 2.0)
            task = await self.get_task(task_id)
        while task.status == tasks.APPROVED and not self.agents.serving(task.target):
            await asyncio.sleep(1.0)  # no agent yet: wait, but never past the approval window
            task = await self.ensure_fresh(await self.get_task(task_id))
        if task.status != tasks.APPROVED:
            return
        ident = await self.store.run(self._identity_of, task.user_id)
        try:
            kernel = await self.start_kernel(ident, task.target, ephemeral=True)
        except Exception as exc:
            await self.store.run(self._finish_tx, task_id, tasks.FAILED, "AgentUnavailable", str(getattr(exc, "message", exc)))
            self.events.notify(task_id)
            return
        try:
            msg = jmsg.make("execute_request", {"code": task.code, "silent": False, "store_history": True,
                                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
                            None, "shell", session=f"cellgate-task-{task_id}")
            msg["parent_header"] = {}
            try:
                await self.dispatch_cell(kernel, task, msg)
            except NotRun:
                return
            await self.recorders[kernel.id].drain()
        finally:
            await self.stop_kernel(kernel, "gateway")

    @staticmethod
    def _identity_of(session: Session, user_id: int) -> Identity:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id} not found")
        return Identity(kind="user", name=user.name, user_id=user.id, is_admin=user.is_admin,
                        groups=frozenset(auth.user_groups(session, user.id)))

    # ------------------------------------------------------------ agent side
    def on_agent_message(self, agent: AgentConnection, frame: protocol.Frame) -> None:
        """A valid frame from a connected agent (``protocol.parse`` checked it: agent_ws.py)."""
        if isinstance(frame, protocol.Reply):
            agent.on_reply(frame)
        elif isinstance(frame, (protocol.KernelMsg, protocol.KernelStatus)):
            kernel = self._hosted_kernel(agent, frame)
            if kernel is None:
                return
            if isinstance(frame, protocol.KernelMsg):
                self._on_kernel_msg(kernel, frame)
            elif frame.state == "dead":
                kernel.execution_state = "dead"
                kernel.to_clients(jmsg.status("dead", None))
                self.spawn(self._end_executions(kernel, tasks.FAILED, "KernelDied", frame.reason or "the kernel died"))
        elif isinstance(frame, protocol.Pong):
            pass
        else:
            log.info("ignoring agent message of type %r", frame.type)

    def _hosted_kernel(self, agent: AgentConnection,
                       frame: protocol.KernelMsg | protocol.KernelStatus) -> LiveKernel | None:
        """The kernel a frame is about, if this connection hosts it; otherwise None (dropped).

        A frame about a kernel another agent (or an earlier connection) hosts is warned about and
        audited once per connection; frames of kernels already gone are dropped quietly."""
        kernel_id = frame.kernel_id
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            return None
        if kernel_id in agent.kernels and kernel.agent_id == agent.agent_id and self.agents.current(agent):
            return kernel
        agent.foreign_frames += 1
        if agent.foreign_frames == 1:
            log.warning("agent %s sent %s for kernel %s, which it does not host: dropped (further ones from this "
                        "connection are dropped without a log line)", agent.agent_id, frame.type, kernel_id)
            detail = {"agent": agent.agent_id, "token": agent.token_name, "kernel_id": kernel_id,
                      "frame": frame.type, "hosted_by": kernel.agent_id}
            self.spawn(self.store.run(lambda s: audit.append(s, f"agent:{agent.agent_id}", "agent.foreign_kernel_msg",
                                                             target=kernel.target, kernel_id=kernel_id, detail=detail)))
        return None

    def _on_kernel_msg(self, kernel: LiveKernel, frame: protocol.KernelMsg) -> None:
        msg = frame.msg
        channel = frame.channel
        msg["channel"] = channel
        header = msg.get("header", {})
        msg.setdefault("msg_id", header.get("msg_id"))
        msg.setdefault("msg_type", header.get("msg_type"))
        kernel.touch(msg)
        parent_id = (msg.get("parent_header") or {}).get("msg_id")
        ex = kernel.executions.get(parent_id) if parent_id else None
        if ex is None or self._track(kernel, ex, channel, msg):
            kernel.to_clients(msg)

    def _track(self, kernel: LiveKernel, ex: Execution, channel: str, msg: dict[str, Any]) -> bool:
        """Record what an approved execution does; False when the message must not be relayed."""
        msg_type = msg["header"].get("msg_type")
        recorder = self.recorders[kernel.id]
        content = msg.get("content", {})
        if channel == "iopub" and msg_type == "status" and content.get("execution_state") == "busy" and not ex.started:
            ex.started = True
            recorder.put(ex.task_id, lambda s: self._running_tx(s, ex.task_id))
        elif channel == "iopub" and msg_type in OUTPUT_TYPES:
            size = len(json.dumps(content))
            if ex.truncated or ex.bytes + size > ex.max_bytes:
                if not ex.truncated:
                    ex.truncated = True
                    self._notice(kernel, ex, msg.get("parent_header", {}),
                                 f"[cellgate] output truncated: this target allows {ex.max_bytes} bytes of output per task\n")
                return False
            ex.bytes += size
            ex.seq += 1
            seq = ex.seq
            recorder.put(ex.task_id, lambda s: self._output_tx(s, ex.task_id, seq, msg_type, content, size))
        elif channel == "shell" and msg_type == "execute_reply":
            # what the client sends from now on is not aborted by a failure of this one
            ex.reply = {**content, "_arrivals": kernel.gate.arrivals + 1}
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
        self.recorders[kernel.id].put(ex.task_id, lambda s: self._output_tx(s, ex.task_id, seq, "stream", content, len(text)))

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
        self.recorders[kernel.id].put(ex.task_id, lambda s: self._finish_tx(s, ex.task_id, dest, ename, evalue))

    @staticmethod
    def _running_tx(session: Session, task_id: int) -> None:
        try:
            tasks.transition(session, task_id, tasks.DISPATCHED, tasks.RUNNING, "agent")
        except tasks.TransitionError as exc:
            log.info("task %s: %s", task_id, exc)

    @staticmethod
    def _output_tx(session: Session, task_id: int, seq: int, msg_type: str, content: dict[str, Any], size: int) -> None:
        if session.get(TaskOutput, (task_id, seq)) is None:  # stored once per (task, seq)
            session.add(TaskOutput(task_id=task_id, seq=seq, output={"output_type": msg_type, **content}))
            session.execute(update(Task).where(Task.id == task_id).values(output_bytes=Task.output_bytes + size))

    async def agent_hello(self, agent: AgentConnection, hello: protocol.Hello) -> tuple[list[str], list[protocol.Refusal], list[str]]:
        """Bind an agent to its token, accept the targets the token lets it serve, re-adopt its kernels.

        Raises :class:`AgentRefused` (audited ``agent.refused``) when the token may not speak as
        this agent id, or another live connection holds the id. Returns (targets accepted,
        targets refused with the reason, kernel ids adopted): the agent stops the kernels not
        adopted. Nothing the agent announces is written to the targets (binding.py).
        """
        announced = {t.name: t.to_dict() for t in hello.targets}
        hosted = set(hello.kernels)
        actor = f"agent:{agent.agent_id}"

        def _token(session: Session) -> tuple[str | None, list[str]]:
            tok = session.get(Token, agent.token_id) if agent.token_id is not None else None
            return binding.token_refusal(tok, agent.agent_id), list((tok.agent_targets if tok else None) or [])
        reason, allowed = await self.store.run(_token)
        if reason is not None:
            await self._refuse_agent(agent, CLOSE_FORBIDDEN, reason)

        def _tx(session: Session) -> tuple[list[str], list[protocol.Refusal], list[tuple[Kernel, str]]]:
            accepted: list[str] = []
            refused: list[protocol.Refusal] = []
            for name, info in announced.items():
                why = binding.target_refusal(name, info, allowed, session.get(Target, name))
                if why is None:
                    accepted.append(name)
                    continue
                refused.append(protocol.Refusal(target=name, reason=why))
                log.warning("agent %s: target %r refused: %s", agent.agent_id, name, why)
                if self.agents.audit_refusal("target", agent.token_id, agent.agent_id, name, why):
                    audit.append(session, actor, "agent.target_refused",
                                 detail={"agent": agent.agent_id, "target": name, "reason": why})
            rows = list(session.execute(select(Kernel).where(Kernel.agent_id == agent.agent_id, Kernel.stopped_at.is_(None))).scalars())
            adopt = [r for r in rows if r.id in hosted and r.target in accepted]
            for row in rows:
                if row not in adopt:
                    row.stopped_at = utcnow()
            names = dict(session.execute(select(User.id, User.name)).tuples().all())
            audit.append(session, actor, "agent.connected",
                         detail={"agent": agent.agent_id, "token": agent.token_name, "targets": accepted,
                                 "refused": [r.target for r in refused], "version": agent.version})
            return accepted, refused, [(r, names.get(r.user_id, "?")) for r in adopt]

        async with self.agents.claim_lock(agent.agent_id):
            try:
                old = await self.agents.check_duplicate(agent)
            except AgentRefused as exc:
                await self._refuse_agent(agent, exc.code, exc.reason)
            accepted, refused, adopt = await self.store.run(_tx)
            agent.targets = {name: announced[name] for name in accepted}
            self.agents.add(agent)
        if old is not None and old.close is not None:
            try:
                old.close(CLOSE_DUPLICATE, "replaced: this connection did not answer and a new one of the same agent arrived")
            except Exception:  # already closing
                log.debug("closing a replaced agent connection", exc_info=True)
        for row, owner in adopt:
            if self.kernels.get(row.id) is None:
                kernel = LiveKernel(id=row.id, user_id=row.user_id, user_name=owner,
                                    target=row.target, agent_id=agent.agent_id, notebook_path=row.notebook_path,
                                    ephemeral=row.ephemeral, execution_state="idle")
                self._attach(kernel, agent)
            else:
                agent.kernels.add(row.id)
        for kernel in self.kernels.on_agent(agent.agent_id):
            if kernel.id not in agent.kernels and kernel.execution_state != "dead":
                self.spawn(self._kernel_lost(kernel, f"agent {agent.agent_id} came back without this kernel; "
                                                     "what ran on it is not re-run"))
        return accepted, refused, [row.id for row, _ in adopt]

    async def _refuse_agent(self, agent: AgentConnection, code: int, reason: str) -> NoReturn:
        """Audit ``agent.refused`` (once per interval for the same refusal) and raise :class:`AgentRefused`."""
        if self.agents.audit_refusal("agent", agent.token_id, agent.agent_id, code, reason):
            await self.store.run(lambda s: audit.append(s, f"agent:{agent.agent_id}", "agent.refused",
                                                        detail={"agent": agent.agent_id, "token": agent.token_name,
                                                                "token_id": agent.token_id, "code": code, "reason": reason}))
        raise AgentRefused(code, reason)

    async def _kernel_lost(self, kernel: LiveKernel, why: str) -> None:
        kernel.execution_state = "dead"
        kernel.to_clients(jmsg.status("dead", None))
        kernel.gate.abort_queued()
        await self._end_executions(kernel, tasks.LOST, "TaskLost", why)

    async def agent_gone(self, agent: AgentConnection) -> None:
        """The agent's socket closed. Its kernels wait ``AGENT_GRACE`` seconds for it to come back;
        then what ran on them is ``lost`` (never re-run) and the kernels are dead. A connection
        already replaced by a newer one of the same agent changes nothing."""
        replaced = not self.agents.current(agent) and self.agents.get(agent.agent_id) is not None
        self.agents.remove(agent)
        await self.store.run(lambda s: audit.append(s, f"agent:{agent.agent_id}", "agent.disconnected",
                                                    detail={"agent": agent.agent_id, **({"replaced": True} if replaced else {})}))
        if replaced:
            return
        await asyncio.sleep(AGENT_GRACE)
        if self.agents.get(agent.agent_id) is not None:
            return
        for kernel in self.kernels.on_agent(agent.agent_id):
            await self._kernel_lost(kernel, f"agent {agent.agent_id} disconnected while this task ran; it is not re-run")

    async def recover(self) -> None:
        """On start: executions of a previous gateway process are not re-run; held cells are gone."""
        def _tx(session: Session) -> list[int]:
            resumed = []
            unfinished = [tasks.DISPATCHED, tasks.RUNNING, tasks.PENDING_REVIEW, tasks.APPROVED]
            for task in session.execute(select(Task).where(Task.status.in_(unfinished))).scalars().all():
                if task.status in (tasks.DISPATCHED, tasks.RUNNING):
                    tasks.transition(session, task.id, task.status, tasks.LOST, "gateway",
                                     {"reason": "the gateway restarted while it ran; it is not re-run automatically"},
                                     error_ename="TaskLost", error_evalue="the gateway restarted while this task ran")
                elif task.kind == "cell":
                    tasks.transition(session, task.id, task.status, tasks.CANCELLED, "gateway",
                                     {"reason": "the gateway restarted while the cell waited"},
                                     decided_by="gateway", decision_comment="the gateway restarted while the cell waited; run it again")
                else:
                    resumed.append(task.id)
            return resumed
        for task_id in await self.store.run(_tx):
            self.spawn(self.run_script(task_id))
