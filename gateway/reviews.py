"""Review decisions: who may decide, and when a task counts as approved.

Checked here, at decision time, against the store (never against a cached identity):
the reviewer is not the author (admins included), is a member of one of the task's review groups
now, and approves the exact code (its SHA-256). One rejection rejects. The task is approved once
every review group has at least one approval. Two reviewers deciding at the same instant give
exactly one outcome: the transition is a compare-and-set.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit, tasks
from .auth import user_groups
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import Review, Task, User

DECISIONS = ("approve", "reject")


def missing_groups(session: Session, task: Task) -> list[str]:
    """Review groups that have not approved yet (membership as of now)."""
    approvers = [r.user_id for r in task.reviews if r.decision == "approve"]
    covered: set[str] = set()
    for user_id in approvers:
        covered |= set(user_groups(session, user_id))
    return [g for g in task.review_groups if g not in covered]


def check_reviewer(session: Session, task: Task, reviewer: User) -> None:
    if task.user_id == reviewer.id:
        raise Forbidden(f"task {task.id} is yours: the author of a task can never review it (ask a member of {', '.join(task.review_groups)})")
    if not reviewer.active:
        raise Forbidden(f"{reviewer.name} is deactivated")
    mine = set(user_groups(session, reviewer.id))
    if not mine & set(task.review_groups):
        raise Forbidden(f"{reviewer.name} is not in a review group of task {task.id} ({', '.join(task.review_groups)})")


def decide(session: Session, task_id: int, reviewer_id: int, decision: str, comment: str,
           code_sha256: str | None = None) -> Task:
    if decision not in DECISIONS:
        raise BadRequest(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    task = session.get(Task, task_id, with_for_update={"of": Task})  # serialise decisions on this task
    reviewer = session.get(User, reviewer_id)
    if task is None or reviewer is None:
        raise NotFound(f"task {task_id} not found")
    check_reviewer(session, task, reviewer)
    if task.status != tasks.PENDING_REVIEW:
        raise Conflict(f"task {task_id} is {task.status}, not pending_review: it cannot be {decision}d")
    if code_sha256 is not None and code_sha256 != task.code_sha256:
        raise Conflict(f"task {task_id}'s code is not the code you reviewed (hash mismatch)")
    if decision == "reject" and not comment.strip():
        raise BadRequest("a rejection needs a reason: pass a comment")
    try:
        with session.begin_nested():
            session.add(Review(task_id=task.id, user_id=reviewer.id, decision=decision, comment=comment,
                               code_sha256=task.code_sha256))
    except IntegrityError:
        raise Conflict(f"{reviewer.name} already decided on task {task_id}") from None
    session.refresh(task, attribute_names=["reviews"])
    detail = {"reviewer": reviewer.name, "comment": comment}
    if decision == "reject":
        return tasks.transition(session, task.id, tasks.PENDING_REVIEW, tasks.REJECTED, reviewer.name, detail,
                                decided_by=reviewer.name, decision_comment=comment)
    missing = missing_groups(session, task)
    if missing:
        audit.append(session, reviewer.name, "task.approval_recorded", task_id=task.id, target=task.target,
                     detail={**detail, "missing": missing})
        return task
    return tasks.transition(session, task.id, tasks.PENDING_REVIEW, tasks.APPROVED, reviewer.name, detail,
                            decided_by=reviewer.name, decision_comment=comment)


def inbox(session: Session, reviewer_id: int) -> list[Task]:
    """Pending tasks this user may decide."""
    mine = set(user_groups(session, reviewer_id))
    pending = session.execute(
        select(Task).where(Task.status == tasks.PENDING_REVIEW, Task.user_id != reviewer_id).order_by(Task.id)
    ).unique().scalars()
    return [t for t in pending if mine & set(t.review_groups)
            and not any(r.user_id == reviewer_id for r in t.reviews)]
