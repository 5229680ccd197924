"""Schedules: a template run on a cron schedule, reviewed once, each due run approved by that review.

Creating a schedule renders the template with its values (the same checks as a template run:
the caller may run it, on that target, every value passes its declaration) and submits a
**review task** of kind ``schedule`` whose code is the rendered code: policy, risk analysis and
reviewers see exactly what every run will run, and its approval (which never expires) activates
the schedule. Each due run is a task of the template's kind with that very code (byte-identical:
the hash is the reviewed one), submitted as its author (their groups now: a removed member's
runs are denied) and approved by the schedule's review where policy would ask for one (deny rules
still hold); it is audited as such (``schedule.due``, and the task's ``decided_by`` is
``schedule:<name>``). Its result is posted to Slack: the schedule's channel, or the author.

A new commit of the template repository is checked against each active schedule: if the template
renders differently (or cannot be rendered, or its author may no longer run it), the schedule is
suspended and its approval withdrawn (the review task ends ``cancelled``) until it is submitted
again (``cellgate schedules resubmit NAME``) and approved.

Each due occurrence is claimed once, in one transaction: the schedule's row is locked (``SELECT …
FOR UPDATE`` on PostgreSQL; SQLite has one writer), its ``next_run_at`` must still be that
occurrence, and ``schedule_runs`` gets the occurrence as its primary key. Two replicas ticking at
once make one run. A gateway that stops between the claim and the submission loses that run (at
most once, never twice); one that was down when runs were due runs the schedule once on start or
skips it, as ``on_missed`` says (``timing.tick``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import audit, tasks
from ..access import may_manage_schedule, may_see_schedule
from ..auth import Identity
from ..errors import BadRequest, CellgateError, Conflict, Forbidden, NotFound, StoreUnavailable
from ..events import TaskEvents
from ..flow import TaskFlow, identity_of
from ..models import Schedule, ScheduleRun, Task, utcnow
from ..scripts import Scripts
from ..store import Store
from ..templates.library import TemplateLibrary
from ..templates.runs import prepare_run
from . import timing

log = logging.getLogger("cellgate.gateway.schedules")

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
ACTIVE, PENDING, SUSPENDED, REJECTED, DELETED = "active", "pending_review", "suspended", "rejected", "deleted"
#: posts a line about a run (the schedule, the run's task) where the schedule says; set by the Slack integration
Poster = Callable[[Schedule, Task], Awaitable[None]]


def schedule_json(s: Schedule, author: str) -> dict[str, Any]:
    return {"name": s.name, "user": author, "template": s.template, "target": s.target, "parameters": s.parameters,
            "cron": s.cron, "on_missed": s.on_missed, "notify": s.notify, "why": s.why, "status": s.status,
            "status_reason": s.status_reason, "kind": s.kind, "code_sha256": s.code_sha256,
            "commit": (s.record or {}).get("commit"), "review_task_id": s.review_task_id,
            "next_run_at": _iso(s.next_run_at) if s.status == ACTIVE else None, "created_at": _iso(s.created_at)}


def _iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    return timing.as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


class Schedules:
    def __init__(self, store: Store, flow: TaskFlow, scripts: Scripts, library: TemplateLibrary, events: TaskEvents,
                 *, interval: float = 15.0, late_after: float = timing.LATE_AFTER) -> None:
        self.store, self.flow, self.scripts, self.library, self.events = store, flow, scripts, library, events
        self.interval, self.late_after = interval, late_after
        self.poster: Poster | None = None
        self._watching: set[int] = set()

    # ------------------------------------------------------------------ what people do
    async def create(self, ident: Identity, name: str, template: str, target: str, values: dict[str, Any], cron: str,
                     on_missed: str = "skip", notify: str = "", why: str = "") -> tuple[Schedule, Task]:
        if not NAME.match(name):
            raise BadRequest(f"schedule name {name!r}: lower-case letters, digits, '.', '_' or '-', at most 100 "
                             "characters, e.g. daily-refunds")
        if on_missed not in timing.ON_MISSED:
            raise BadRequest(f"on_missed {on_missed!r}: one of {', '.join(timing.ON_MISSED)} (a run missed while the "
                             "gateway was down: run it once on start, or skip it)")
        try:
            cron = timing.check_cron(cron)
        except timing.ScheduleError as exc:
            raise BadRequest(str(exc)) from None
        if await self.store.run(lambda s: s.execute(select(Schedule.id).where(Schedule.name == name)).first()) is not None:
            raise Conflict(f"schedule {name} exists; pick another name, or delete it first")
        prepared = await prepare_run(self.library, self.store, ident, template, target, values)
        review = await self._review(ident, name, cron, prepared, why)

        def _tx(session: Session) -> Schedule:
            row = Schedule(name=name, user_id=ident.user_id, template=template, target=target, parameters=dict(values),
                           cron=cron, on_missed=on_missed, notify=notify, why=why, status=PENDING, kind=prepared.kind,
                           code=prepared.code, code_sha256=tasks.sha256(prepared.code), record=prepared.record,
                           review_task_id=review.id)
            session.add(row)
            session.flush()
            audit.append(session, ident.actor, "schedule.created", target=target, task_id=review.id,
                         detail={"schedule": name, "cron": cron, "on_missed": on_missed, "template": prepared.record})
            self._settle(session, row, review)
            return row
        try:
            schedule = await self.store.run(_tx)
        except IntegrityError:
            raise Conflict(f"schedule {name} exists; pick another name, or delete it first") from None
        return schedule, review

    async def _review(self, ident: Identity, name: str, cron: str, prepared: Any, why: str) -> Task:
        record = {**prepared.record, "schedule": name, "cron": cron, "kind": prepared.kind}
        return await self.flow.submit(ident, prepared.target, prepared.code, kind="schedule",
                                      why=f"schedule {name} ({cron} UTC)" + (f": {why}" if why else ""), template=record)

    async def resubmit(self, ident: Identity, name: str) -> tuple[Schedule, Task]:
        """A new review of a suspended or rejected schedule, rendered at the repository's current commit."""
        schedule = await self.get(ident, name, manage=True)
        if schedule.status not in (SUSPENDED, REJECTED):
            raise Conflict(f"schedule {name} is {schedule.status.replace('_', ' ')}; only a suspended or rejected one "
                           "is submitted again")
        prepared = await prepare_run(self.library, self.store, ident, schedule.template, schedule.target, schedule.parameters)
        review = await self._review(ident, name, schedule.cron, prepared, schedule.why)

        def _tx(session: Session) -> Schedule:
            row = session.get(Schedule, schedule.id, with_for_update=True)
            assert row is not None
            row.kind, row.code, row.code_sha256, row.record = prepared.kind, prepared.code, tasks.sha256(prepared.code), prepared.record
            row.review_task_id, row.status, row.status_reason = review.id, PENDING, ""
            audit.append(session, ident.actor, "schedule.resubmitted", target=row.target, task_id=review.id,
                         detail={"schedule": name, "template": prepared.record})
            self._settle(session, row, review)
            return row
        return await self.store.run(_tx), review

    async def delete(self, ident: Identity, name: str) -> Schedule:
        schedule = await self.get(ident, name, manage=True)

        def _tx(session: Session) -> Schedule:
            row = session.get(Schedule, schedule.id, with_for_update=True)
            assert row is not None
            self._withdraw(session, row, DELETED, f"deleted by {ident.name}", ident.actor)
            return row
        return await self.store.run(_tx)

    async def get(self, ident: Identity, name: str, *, manage: bool = False) -> Schedule:
        """One schedule: its author's and admins' (and, to read, whoever may see its review task); else 404."""
        def _tx(session: Session) -> Schedule | None:
            row = session.execute(select(Schedule).where(Schedule.name == name, Schedule.status != DELETED)).scalar_one_or_none()
            if row is None:
                return None
            review = session.get(Task, row.review_task_id) if row.review_task_id else None
            if not may_see_schedule(ident, row.user_id, review):
                return None  # not disclosed: as absent
            if manage and not may_manage_schedule(ident, row.user_id):
                raise Forbidden(f"schedule {name} is {self._author(session, row)}'s: only they or an admin may change it")
            return row
        found = await self.store.run(_tx)
        if found is None:
            raise NotFound(f"schedule {name} not found")
        return found

    async def visible(self, ident: Identity) -> list[tuple[Schedule, str]]:
        def _tx(session: Session) -> list[tuple[Schedule, str]]:
            rows = session.execute(select(Schedule).where(Schedule.status != DELETED).order_by(Schedule.name)).scalars()
            found = []
            for row in rows:
                review = session.get(Task, row.review_task_id) if row.review_task_id else None
                if may_see_schedule(ident, row.user_id, review):
                    found.append((row, self._author(session, row)))
            return found
        return await self.store.run(_tx)

    async def runs(self, schedule: Schedule, limit: int = 20) -> list[dict[str, Any]]:
        def _tx(session: Session) -> list[dict[str, Any]]:
            rows = session.execute(select(ScheduleRun).where(ScheduleRun.schedule_id == schedule.id)
                                   .order_by(ScheduleRun.due_at.desc()).limit(limit)).scalars()
            out = []
            for r in rows:
                task = session.get(Task, r.task_id) if r.task_id else None
                out.append({"due_at": _iso(r.due_at), "outcome": r.outcome, "task_id": r.task_id,
                            "status": task.status if task else None})
            return out
        return await self.store.run(_tx)

    @staticmethod
    def _author(session: Session, row: Schedule) -> str:
        from ..models import User
        user = session.get(User, row.user_id)
        return user.name if user else f"user {row.user_id}"

    # ------------------------------------------------------------------ the clock
    async def run(self) -> None:
        """Tick every ``interval`` seconds until cancelled (a failing tick is logged, the next one tries again)."""
        while True:
            try:
                await self.tick()
            except StoreUnavailable as exc:  # an outage, not a bug: one line, the next tick tries again
                log.warning("a schedule tick was skipped: %s", exc.message)
            except Exception:
                log.exception("a schedule tick failed")
            await asyncio.sleep(self.interval)

    async def tick(self, now: dt.datetime | None = None) -> list[int]:
        """Settle reviews, suspend what a new commit changed, start what is due; the tasks started."""
        now = timing.as_utc(now or utcnow())
        await self.store.run(self._settle_reviews)
        await self._check_commits()
        started = []
        due = await self.store.run(lambda s: list(s.execute(select(Schedule.id).where(
            Schedule.status == ACTIVE, Schedule.next_run_at <= now)).scalars()))
        for schedule_id in due:
            task_id = await self._due(schedule_id, now)
            if task_id is not None:
                started.append(task_id)
        return started

    def _settle_reviews(self, session: Session) -> None:
        for row in session.execute(select(Schedule).where(Schedule.status == PENDING)).scalars().all():
            review = session.get(Task, row.review_task_id) if row.review_task_id else None
            if review is not None:
                self._settle(session, row, review)

    def _settle(self, session: Session, row: Schedule, review: Task) -> None:
        """A pending schedule follows its review: approved → active, ended otherwise → rejected."""
        if row.status != PENDING:
            return
        if review.status == tasks.APPROVED:
            row.status, row.status_reason = ACTIVE, f"approved ({review.decided_by}, task #{review.id})"
            row.next_run_at = timing.next_after(row.cron, utcnow())
            audit.append(session, "gateway", "schedule.activated", target=row.target, task_id=review.id,
                         detail={"schedule": row.name, "next_run_at": _iso(row.next_run_at)})
        elif review.status in tasks.FINAL:
            row.status = REJECTED
            row.status_reason = f"its review task #{review.id} was {review.status}" + (
                f": {review.decision_comment}" if review.decision_comment else "")
            audit.append(session, "gateway", "schedule.rejected", target=row.target, task_id=review.id,
                         detail={"schedule": row.name, "review": review.status})

    def _withdraw(self, session: Session, row: Schedule, status: str, reason: str, actor: str) -> None:
        """Suspend or delete: the review's approval is withdrawn (its task ends cancelled)."""
        review = session.get(Task, row.review_task_id) if row.review_task_id else None
        if review is not None and review.status in (tasks.APPROVED, tasks.PENDING_REVIEW, tasks.SUBMITTED):
            tasks.transition(session, review.id, review.status, tasks.CANCELLED, actor, {"reason": reason},
                             decision_comment=reason)
        row.status, row.status_reason = status, reason
        audit.append(session, actor, f"schedule.{status}", target=row.target, task_id=row.review_task_id,
                     detail={"schedule": row.name, "reason": reason})

    async def _check_commits(self) -> None:
        commit = self.library.catalog.commit if self.library.catalog else None
        if not commit:
            return
        stale = await self.store.run(lambda s: [r.id for r in s.execute(select(Schedule).where(Schedule.status == ACTIVE))
                                                .scalars() if (r.record or {}).get("commit") != commit])
        for schedule_id in stale:
            await self._recheck(schedule_id, commit)

    async def _recheck(self, schedule_id: int, commit: str) -> None:
        """An active schedule at a new commit: the approval holds if the template renders the same code."""
        row: Schedule = await self.store.run(lambda s: s.get(Schedule, schedule_id))
        ident = await self.store.run(identity_of, row.user_id)
        prepared = None
        try:
            prepared = await prepare_run(self.library, self.store, ident, row.template, row.target, row.parameters)
            same = tasks.sha256(prepared.code) == row.code_sha256 and prepared.kind == row.kind
            why = "" if same else f"template {row.template} renders differently at commit {commit[:12]}"
        except CellgateError as exc:
            same, why = False, f"template {row.template} cannot run at commit {commit[:12]}: {exc.message}"

        def _tx(session: Session) -> None:
            current = session.get(Schedule, schedule_id, with_for_update=True)
            if current is None or current.status != ACTIVE:
                return
            if same and prepared is not None:  # a commit that does not change what runs: the approval holds
                current.record = {**prepared.record}
                audit.append(session, "gateway", "schedule.commit", target=current.target,
                             detail={"schedule": current.name, "commit": commit})
            else:
                self._withdraw(session, current, SUSPENDED, f"{why}: submit it again for review "
                               f"(cellgate schedules resubmit {current.name})", "gateway")
        await self.store.run(_tx)

    async def _due(self, schedule_id: int, now: dt.datetime) -> int | None:
        """Claim the occurrence (once, whichever replica gets there first), then run it or skip it."""
        def _claim(session: Session) -> tuple[Schedule, timing.Tick] | None:
            row = session.get(Schedule, schedule_id, with_for_update=True)
            if row is None or row.status != ACTIVE or row.next_run_at is None:
                return None
            tick = timing.tick(row.cron, row.next_run_at, now, row.on_missed, self.late_after)
            if tick is None:
                return None
            outcome = "ran" if tick.run else "skipped"
            session.add(ScheduleRun(schedule_id=row.id, due_at=tick.due_at, outcome=outcome))
            row.next_run_at = tick.next_run_at
            session.flush()  # the occurrence is the key: a second claim fails here
            audit.append(session, "gateway", "schedule.due", target=row.target, task_id=row.review_task_id,
                         detail={"schedule": row.name, "due_at": _iso(tick.due_at), "missed": tick.missed,
                                 "outcome": outcome, "next_run_at": _iso(tick.next_run_at)})
            return row, tick
        try:
            claimed = await self.store.run(_claim)
        except IntegrityError:
            return None  # another replica claimed it
        if claimed is None or not claimed[1].run:
            return None
        row, tick = claimed
        ident = await self.store.run(identity_of, row.user_id)
        reason = f"approved by the review of schedule {row.name} (task #{row.review_task_id})"
        try:
            task = await self.scripts.submit(ident, row.target, row.code, f"schedule {row.name}, due {_iso(tick.due_at)}",
                                             template={**row.record, "schedule": row.name}, kind=row.kind,
                                             preapproved=(f"schedule:{row.name}", reason))
        except CellgateError as exc:  # the target is gone, the code is over the size limit now…: said, not retried
            log.warning("schedule %s: its run due %s was refused: %s", row.name, _iso(tick.due_at), exc.message)
            await self.store.run(lambda s: s.execute(update(ScheduleRun).where(
                ScheduleRun.schedule_id == row.id, ScheduleRun.due_at == tick.due_at).values(outcome="refused")))
            return None
        await self.store.run(lambda s: s.execute(update(ScheduleRun).where(
            ScheduleRun.schedule_id == row.id, ScheduleRun.due_at == tick.due_at).values(task_id=task.id)))
        if self.poster is not None:
            self.scripts.background.spawn(self._post_when_done(row, task.id))
        return task.id

    async def _post_when_done(self, row: Schedule, task_id: int) -> None:
        task = await self.flow.get_task(task_id)
        while task.status not in tasks.FINAL:
            await self.events.wait(task_id, 5.0)
            task = await self.flow.get_task(task_id)
        if self.poster is not None:
            try:
                await self.poster(row, task)
            except Exception:
                log.exception("posting the result of schedule %s (task %s) failed", row.name, task_id)
