"""The task state machine: the one place that knows which transitions exist.

::

    submitted ─► denied | approved | pending_review | cancelled
    pending_review ─► approved | rejected | cancelled | expired
    approved ─► dispatched | expired | cancelled | failed (could not be dispatched: no agent)
    dispatched ─► running | succeeded | failed | killed | lost
    running ─► succeeded | failed | killed | lost

Every transition is a compare-and-set (``UPDATE … WHERE id = ? AND status = ?``) that writes its
audit event in the same transaction; of two concurrent attempts exactly one wins, the other gets
:class:`TransitionConflict`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, lazyload

from . import audit
from .models import Task, utcnow

SUBMITTED = "submitted"
DENIED = "denied"
PENDING_REVIEW = "pending_review"
APPROVED = "approved"
REJECTED = "rejected"
CANCELLED = "cancelled"
EXPIRED = "expired"
DISPATCHED = "dispatched"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
KILLED = "killed"
LOST = "lost"

TRANSITIONS: dict[str, frozenset[str]] = {
    SUBMITTED: frozenset({DENIED, APPROVED, PENDING_REVIEW, CANCELLED}),
    PENDING_REVIEW: frozenset({APPROVED, REJECTED, CANCELLED, EXPIRED}),
    APPROVED: frozenset({DISPATCHED, EXPIRED, CANCELLED, FAILED}),
    DISPATCHED: frozenset({RUNNING, SUCCEEDED, FAILED, KILLED, LOST}),
    RUNNING: frozenset({SUCCEEDED, FAILED, KILLED, LOST}),
}
FINAL = frozenset({DENIED, REJECTED, CANCELLED, EXPIRED, SUCCEEDED, FAILED, KILLED, LOST})
ALL = frozenset(TRANSITIONS) | FINAL
#: statuses in which the task will never run (the cell ends with an error)
NOT_RUN = frozenset({DENIED, REJECTED, CANCELLED, EXPIRED})


class TransitionError(Exception):
    """Base: the task could not move."""


class IllegalTransition(TransitionError):
    """The state machine has no such edge (a programming error, or a forged request)."""

    def __init__(self, source: str, dest: str) -> None:
        super().__init__(f"a task cannot go from {source} to {dest}")
        self.source, self.dest = source, dest


class TransitionConflict(TransitionError):
    """The task was not in the expected status any more (someone else moved it first)."""

    def __init__(self, task_id: int, expected: str, dest: str, actual: str | None) -> None:
        super().__init__(f"task {task_id} is {actual or 'gone'}, not {expected}; it cannot become {dest}")
        self.task_id, self.expected, self.dest, self.actual = task_id, expected, dest, actual


def sha256(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def sources_of(dest: str) -> list[str]:
    return sorted(src for src, dests in TRANSITIONS.items() if dest in dests)


def create(session: Session, actor: str, **fields: Any) -> Task:
    """Insert a task in ``submitted`` and audit it (the code and its hash go in the event)."""
    task = Task(status=SUBMITTED, code_sha256=sha256(fields["code"]), **fields)
    session.add(task)
    session.flush()
    audit.append(
        session,
        actor,
        "task.submitted",
        task_id=task.id,
        target=task.target,
        kernel_id=task.kernel_id,
        detail={
            "kind": task.kind,
            "code": task.code,
            "code_sha256": task.code_sha256,
            "why": task.why,
            "notebook_path": task.notebook_path,
            "cell_id": task.cell_id,
            **({"template": task.template} if task.template else {}),
        },
    )
    return task


def transition(
    session: Session,
    task_id: int,
    source: str,
    dest: str,
    actor: str,
    detail: dict[str, Any] | None = None,
    **fields: Any,
) -> Task:
    """Move task ``task_id`` from ``source`` to ``dest`` or raise; audits in the same transaction."""
    if dest not in TRANSITIONS.get(source, frozenset()):
        raise IllegalTransition(source, dest)
    now = utcnow()
    values: dict[str, Any] = {"status": dest, "updated_at": now, **fields}
    if dest == RUNNING:
        values.setdefault("started_at", now)
    if dest in FINAL:
        values.setdefault("finished_at", now)
    with session.no_autoflush:  # audit events queued so far are written together at commit
        task = session.execute(
            update(Task).where(Task.id == task_id, Task.status == source).values(**values).returning(Task)
            .options(lazyload(Task.reviews), lazyload(Task.user))
            .execution_options(synchronize_session=False, populate_existing=True)
        ).scalar_one_or_none()
    if task is None:
        actual = session.execute(select(Task.status).where(Task.id == task_id)).scalar_one_or_none()
        raise TransitionConflict(task_id, source, dest, actual)
    audit.append(
        session,
        actor,
        f"task.{dest}",
        task_id=task_id,
        target=task.target,
        kernel_id=task.kernel_id,
        detail={"from": source, "code_sha256": task.code_sha256, **(detail or {})},
    )
    return task


def advance(session: Session, task_id: int, dest: str, actor: str, detail: dict[str, Any] | None = None, **fields: Any) -> Task:
    """Transition from whatever legal source the task is in now (still a compare-and-set)."""
    current = session.execute(select(Task.status).where(Task.id == task_id)).scalar_one_or_none()
    if current is None:
        raise TransitionConflict(task_id, "?", dest, None)
    return transition(session, task_id, current, dest, actor, detail, **fields)
