"""Task flow: a task from submission to its decision (submit, review, cancel, expiry).

``submit`` analyses the code, asks policy and moves the new task on in one transaction; the
reviews and cancellations that follow go through the state machine (``tasks``). Every change is
followed by ``events.notify`` so waiting cells, CLIs and Slack notices wake up. Running an
approved task is the relay's (``relay.py``); this module never talks to a kernel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from cellgate import protocol

from . import access, analysis, audit, auth, idempotency, policy, reviews, risk, tasks
from .agents import AgentRegistry
from .auth import Identity
from .errors import Conflict, Forbidden, NotFound, TooLarge, Unavailable
from .events import TaskEvents
from .idempotency import Idempotency
from .models import Target, Task, User, aware, utcnow
from .notebooks.document import cells_of as notebook_cells
from .store import Store
from .timeouts import Timeouts

log = logging.getLogger("cellgate.gateway.flow")

REFUSALS = {
    tasks.REJECTED: "TaskRejected",
    tasks.DENIED: "TaskDenied",
    tasks.CANCELLED: "TaskCancelled",
    tasks.EXPIRED: "TaskExpired",
}


def code_too_large(size: int, limit: int, what: str = "cell") -> str:
    return f"this {what} is {size} bytes; the gateway accepts at most {limit} (Gateway.max_code_bytes)"


def refusal(task: Task) -> tuple[str, str]:
    """(ename, evalue) of a task that will not run: who stopped it and why."""
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


def _target_facts(session: Session, target_name: str) -> tuple[tuple[str, str | None], bool] | None:
    """((kind, dialect), has reviewers) of a target: what the analysis and the estimate need."""
    target = session.get(Target, target_name)
    if target is None:
        return None
    return (target.kind or "sql", target.dialect or None), bool(target.review_groups)


def identity_of(session: Session, user_id: int) -> Identity:
    """The identity a task's author has now (a script runs as its author)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return Identity(kind="user", name=user.name, user_id=user.id, is_admin=user.is_admin,
                    groups=frozenset(auth.user_groups(session, user.id)))


class TaskFlow:
    def __init__(self, store: Store, events: TaskEvents, agents: AgentRegistry, public_url: str, *,
                 timeouts: Timeouts | None = None, max_code_bytes: int = 1 << 20, analysis_budget: float = 2.0,
                 analyser: analysis.Analyser | None = None) -> None:
        self.store = store
        self.events = events
        self.agents = agents  # asked for EXPLAIN estimates only
        self.public_url = public_url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        #: code accepted per cell or script, in UTF-8 bytes (Gateway.max_code_bytes)
        self.max_code_bytes = max_code_bytes
        #: seconds the risk analysis of one cell may take (Gateway.analysis_budget)
        self.analysis_budget = analysis_budget
        #: the analysis workers (processes); None: the process-wide default (analysis.default())
        self.analyser = analyser

    def task_url(self, task_id: int) -> str:
        return f"{self.public_url}/tasks/{task_id}"

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
        return refusal(task)

    async def submit(self, ident: Identity, target_name: str, code: str, *, kind: str,
                     refuse: str | None = None, dispatch_to: str | None = None,
                     preapproved: tuple[str, str] | None = None, idem: Idempotency | None = None,
                     **context: Any) -> Task:
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

        ``preapproved`` = ``(decided_by, reason)``: the code was reviewed already (a schedule's due
        run, the very code its review approved): where policy would ask for a review, it is approved
        as ``decided_by``; a denial still denies.

        ``idem``: the request's Idempotency-Key (``idempotency.py``): a task the user submitted with
        that key is returned as it is (``replayed``), never a second one; with another request, 422.
        """
        self.check_size(code, "cell" if kind == "cell" else "script")
        if idem is not None and (earlier := await self.replay(ident, idem)) is not None:
            return earlier
        row = await self.store.run(_target_facts, target_name)
        if row is None:
            raise NotFound(f"target {target_name!r} not found")
        analysed_as, has_reviewers = row
        analyser = self.analyser or analysis.default()
        policy_reads = code
        if kind == "notebook" or (kind == "schedule" and (context.get("template") or {}).get("kind") == "notebook"):
            # every cell analysed as a cell; deny patterns read the cells' text
            cells = [c.source for c in await asyncio.to_thread(notebook_cells, code)]  # up to 1 MiB: off the loop
            found = await analyser.analyse_cells(cells, analysed_as[0], analysed_as[1], self.analysis_budget)
            policy_reads = "\n".join(cells)
        else:
            found = await analyser.analyse(code, analysed_as[0], analysed_as[1], self.analysis_budget)
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
            decision = policy.evaluate(ident, target, policy_reads, cell_risk)
            decider = "policy"
            if refuse:
                decision = policy.Decision(policy.DENY, refuse)
            elif preapproved and decision.action == policy.REVIEW:
                decider, reason = preapproved
                decision = policy.Decision(policy.APPROVE, reason)
            rules = policy.of(target)
            review_rule = {"mode": rules.review.mode, "approvals": rules.review.approvals,
                           "approval_window": rules.limits.approval_window, "timeout": rules.limits.timeout,
                           "max_bytes": rules.limits.max_bytes, "max_rows": rules.limits.max_rows,
                           "run_as": decision.run_as}
            task = tasks.create(session, ident.actor, kind=kind, target=target.name, user_id=ident.user_id,
                                code=code, review_groups=list(decision.review_groups), risk=cell_risk.as_dict(),
                                review_rule=review_rule, **idempotency.fields(idem), **context)
            dest = {policy.APPROVE: tasks.APPROVED, policy.REVIEW: tasks.PENDING_REVIEW, policy.DENY: tasks.DENIED}[decision.action]
            fields: dict[str, Any] = {}
            if dest != tasks.PENDING_REVIEW:
                fields = {"decided_by": decider, "decision_comment": decision.reason}
            elif estimate is not None:  # attached in the same transaction: reviewers never see it missing
                fields = {"row_estimate": estimate[0]}
                audit.append(session, "agent", "task.estimated", task_id=task.id, target=task.target, detail=estimate[1])
            if dest == tasks.APPROVED:
                fields.update(reviews.approval_fields(task))
            task = tasks.transition(session, task.id, tasks.SUBMITTED, dest, decider,
                                    {"reason": decision.reason, "risk": cell_risk.level, "flags": list(cell_risk.flags),
                                     "run_as": decision.run_as}, **fields)
            if dest == tasks.APPROVED and dispatch_to:
                task = tasks.transition(session, task.id, tasks.APPROVED, tasks.DISPATCHED, "gateway",
                                        {"agent": dispatch_to}, agent_id=dispatch_to)
            set_committed_value(task, "reviews", [])  # a new task has none: no query
            _ = task.user
            return reviews.annotate(session, task)

        try:
            task = await self.store.run(_submit)
        except IntegrityError:
            if idem is None or (earlier := await self.replay(ident, idem)) is None:
                raise
            return earlier  # a repeat that raced the first request: the first one's task
        if found.parsed and analysed_as[0] == "sql" and kind != "notebook":  # dispatch need not split again (the kernel checks it)
            task.analysed = (analysed_as, found.texts)
        self.events.notify(task.id)
        return task

    async def replay(self, ident: Identity, idem: Idempotency) -> Task | None:
        """The task ``ident`` submitted with ``idem``'s key, if any (422 when it came from another request)."""
        def _find(session: Session) -> Task | None:
            task = idempotency.find(session, ident.user_id or 0, idem.key)
            return None if task is None else reviews.annotate(session, idempotency.check_same(task, idem))
        return await self.store.run(_find)

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
                                            timeout=self.timeouts.explain)
            estimate = int(sum(int(n) for n in reply.rows or []))
            return estimate, {"row_estimate": estimate, "statements": len(statements[:10])}
        except (Unavailable, TypeError, ValueError) as exc:
            return None, {"error": str(getattr(exc, "message", exc))}

    async def ensure_fresh(self, task: Task) -> Task:
        """An approved task past its approval window expires instead of starting."""
        if task.status != tasks.APPROVED or task.expires_at is None:
            return task
        expires = aware(task.expires_at)
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

    async def review(self, ident: Identity, task_id: int, decision: str, comment: str, code_sha256: str | None) -> Task:
        if not access.may_decide_reviews(ident):
            raise Forbidden(access.ONLY_USERS_REVIEW)
        await self.store.run(reviews.decide, task_id, ident.user_id, decision, comment, code_sha256)
        self.events.notify(task_id)
        return await self.get_task(task_id)

    async def cancel(self, task_id: int, ident: Identity, reason: str) -> Task:
        def _cancel(session: Session) -> Task:
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"task {task_id} not found")
            if not access.may_cancel_task(ident, task):
                raise Forbidden(f"only the author of task {task_id} or an admin can cancel it")
            if task.status not in (tasks.SUBMITTED, tasks.PENDING_REVIEW, tasks.APPROVED):
                raise Conflict(f"task {task_id} is {task.status}; only a task that has not started can be cancelled")
            return tasks.transition(session, task_id, task.status, tasks.CANCELLED, ident.actor, {"reason": reason},
                                    decided_by=ident.name, decision_comment=reason)
        await self.store.run(_cancel)
        self.events.notify(task_id)
        return await self.get_task(task_id)

    async def cancel_approved(self, task_id: int, why: str) -> Task:
        """An approved task that must not start after all (its sender's token was revoked): cancelled by the gateway."""
        def _tx(session: Session) -> None:
            tasks.transition(session, task_id, tasks.APPROVED, tasks.CANCELLED, "gateway", {"reason": why},
                             decided_by="gateway", decision_comment=why)
        try:
            await self.store.run(_tx)
        except tasks.TransitionError as exc:
            log.info("task %s: %s", task_id, exc)
        self.events.notify(task_id)
        return await self.get_task(task_id)

    async def check_target(self, ident: Identity, target_name: str) -> Target:
        target: Target | None = await self.store.run(lambda s: s.get(Target, target_name))
        if target is None or not access.may_submit(ident, target):
            # the same answer for "absent" and "not yours": names of targets are not disclosed
            raise NotFound(f"target {target_name!r} not found (or you may not use it); see `cellgate targets`")
        return target
