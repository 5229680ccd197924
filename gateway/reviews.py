"""Review decisions: recording them, and when a task counts as approved.

Who may decide is ``access.review_refusal``'s rule, asked here at decision time with the
reviewer's groups read from the store (never from a cached identity): the reviewer is not the
author (admins included), is active and a member of one of the task's review groups now. The
reviewer approves the exact code (its SHA-256). One rejection rejects. The task is approved once
the task's review rule is met (a distinct person for each group, one from any group, or N distinct
people): approvals count people, so one person in two groups never stands in for two reviewers.
Two reviewers deciding at the same instant give exactly one outcome: the transition is a compare-and-set.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import access, audit, tasks
from .auth import user_groups
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .models import Review, Task, User, utcnow

DECISIONS = ("approve", "reject")


def missing_approvals(session: Session, task: Task) -> list[str]:
    """What the task still needs, in words (empty: approved). Membership is read now.

    The rule is the one recorded on the task at submission (``review_rule``); approvals count
    people, never memberships:

    - ``all``: a *distinct* approver for each review group (one person in two groups covers one
      of them; which one is a bipartite matching of approvers to groups);
    - ``any``: one approval from a member of any of the groups;
    - ``count``: N distinct approvers who are members of any of the groups (each person once,
      whatever groups they are in).
    """
    rule = task.review_rule or {}
    mode = rule.get("mode", "all")
    groups = list(task.review_groups)
    names = {r.user_id: r.user.name for r in task.reviews}
    approvers: dict[int, set[str]] = {}
    for r in task.reviews:
        if r.decision == "approve":
            member_of = set(user_groups(session, r.user_id)) & set(groups)
            if member_of:
                approvers[r.user_id] = member_of
    if mode == "any":
        return [] if approvers else [f"an approval from any of {', '.join(groups)}"]
    if mode == "count":
        needed = int(rule.get("approvals", 1)) - len(approvers)
        if needed <= 0:
            return []
        several = [names.get(u, "?") for u, member_of in approvers.items() if len(member_of) > 1]
        already = f" ({', '.join(several)} already counted: each person counts once)" if several else ""
        return [f"{needed} more approval{'s' if needed > 1 else ''} from {' or '.join(groups)}{already}"]
    assigned = match_approvers(approvers, groups)
    missing = []
    for g in groups:
        if g in assigned:
            continue
        # members of g who approved but are needed for another group
        taken = [f"{names.get(u, '?')}'s approval already counts for {assigned_group}"
                 for assigned_group, u in assigned.items() if g in approvers[u]]
        missing.append(f"an approval from {g}" + (f" ({'; '.join(taken)})" if taken else ""))
    return missing


def match_approvers(approvers: dict[int, set[str]], groups: list[str]) -> dict[str, int]:
    """A maximum matching of groups to distinct approvers (group → user id); augmenting paths.

    ``approvers`` maps each approver to the review groups they are a member of now. Groups are
    tried in the task's order, approvers in the order they approved, so the result is stable.
    """
    owner: dict[str, int] = {}  # group → approver
    for user in approvers:
        _augment(user, approvers, owner, set())
    return {g: owner[g] for g in groups if g in owner}


def _augment(user: int, approvers: dict[int, set[str]], owner: dict[str, int], seen: set[str]) -> bool:
    for g in sorted(approvers[user]):
        if g in seen:
            continue
        seen.add(g)
        if g not in owner or _augment(owner[g], approvers, owner, seen):
            owner[g] = user
            return True
    return False


def annotate(session: Session, task: Task) -> Task:
    """Fill ``task.missing_approvals`` (for pending tasks) so views can show what is missing."""
    task.missing_approvals = tuple(missing_approvals(session, task)) if task.status == tasks.PENDING_REVIEW else ()
    return task


def check_reviewer(session: Session, task: Task, reviewer: User) -> None:
    """Raise :class:`Forbidden` unless ``reviewer`` may decide on ``task`` now (``access.review_refusal``,
    with the reviewer's groups read from the store)."""
    why = access.review_refusal(task, reviewer, user_groups(session, reviewer.id))
    if why is not None:
        raise Forbidden(why)


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
    missing = missing_approvals(session, task)
    if missing:
        audit.append(session, reviewer.name, "task.approval_recorded", task_id=task.id, target=task.target,
                     detail={**detail, "missing": missing})
        return task
    return tasks.transition(session, task.id, tasks.PENDING_REVIEW, tasks.APPROVED, reviewer.name, detail,
                            decided_by=reviewer.name, decision_comment=comment, **approval_fields(task))


def approval_fields(task: Task) -> dict[str, object]:
    """``approved_at`` and ``expires_at`` (approval window from the rule recorded at submission; a
    schedule's review never expires: it approves the schedule's runs until withdrawn)."""
    now = utcnow()
    if task.kind == "schedule":
        return {"approved_at": now, "expires_at": None}
    window = int((task.review_rule or {}).get("approval_window", 3600))
    return {"approved_at": now, "expires_at": now + dt.timedelta(seconds=window)}


def inbox(session: Session, reviewer_id: int) -> list[Task]:
    """Pending tasks this user may decide."""
    mine = user_groups(session, reviewer_id)
    pending = session.execute(
        select(Task).where(Task.status == tasks.PENDING_REVIEW, access.reviewable_tasks(reviewer_id, mine)).order_by(Task.id)
    ).unique().scalars()
    return [annotate(session, t) for t in pending if not any(r.user_id == reviewer_id for r in t.reviews)]
