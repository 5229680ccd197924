"""Review notices: post when a task waits for review, update in place as it moves, thread the rest.

:class:`Notifier` listens to :class:`~cellgate.gateway.events.TaskEvents`. The listener only marks
the task and starts (at most) one background worker per task, so the task flow never waits for
Slack; the worker reads the task and its :class:`~cellgate.gateway.models.SlackMessage` and
brings Slack up to date:

- a task entering ``pending_review`` gets a notice in its target's channel (``Slack.channels``,
  else ``Slack.default_channel``), with Approve and Reject buttons;
- each later change updates that message in place (``chat.update``); approvals, the decision and
  the result are posted in its thread; the author gets a direct message when the task is decided
  and when it finishes;
- a template run from a Slack form is announced to the user who ran it in a direct message
  (:meth:`Notifier.announce_run`, a :class:`~cellgate.gateway.models.SlackRunThread`); its
  decision and its result are posted in that message's thread (instead of the author's DMs);
- code sent in a direct message (``dm.py``) gets the same thread, under the user's own message
  (:meth:`Notifier.thread_task`).

``SlackMessage.shown_status`` records what the message shows (the status, plus ``+N`` for N
approvals recorded on a task still waiting), ``SlackRunThread.shown_status`` the status its thread
told last; each is moved by compare-and-set before anything is posted, so each step is posted
once even with several workers or gateway replicas. A Slack call that still fails after its
retries is logged and dropped: the next step re-renders the whole message anyway.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import reviews, tasks
from ..models import SlackLink, SlackMessage, SlackRunThread, Task, TaskOutput, utcnow
from ..background import Background
from ..events import TaskEvents
from ..flow import TaskFlow
from ..store import Store
from . import links, messages
from .client import SlackCallFailed, SlackClient
from .config import Slack
from .messages import FINISHED, Facts, decided

log = logging.getLogger("cellgate.gateway.slack")

#: outputs read for the thread's excerpt and the row count
MAX_OUTPUTS = 500
#: seconds after which a claimed but unposted notice is taken for abandoned
STALE_CLAIM = 600
#: tasks remembered as needing nothing more from Slack (so later events cost no store read)
MAX_QUIET = 10_000


def shown_key(task: Task) -> str:
    """What the message shows, as stored in ``SlackMessage.shown_status`` (at most 20 characters)."""
    approvals = sum(1 for r in task.reviews if r.decision == "approve")
    if task.status == tasks.PENDING_REVIEW and approvals:
        return f"{tasks.PENDING_REVIEW}+{min(approvals, 99)}"
    return task.status


def _status_of(key: str) -> str:
    return key.split("+", 1)[0]


@dataclass
class Snapshot:
    """A task as the notifier sees it; ``task`` is None when there is nothing to show (no notice, no run thread, not waiting)."""

    status: str
    task: Task | None = None
    message: SlackMessage | None = None
    facts: Facts = field(default_factory=Facts)
    run: SlackRunThread | None = None


class Notifier:
    def __init__(self, store: Store, flow: TaskFlow, events: TaskEvents, background: Background, config: Slack,
                 client: SlackClient) -> None:
        self.store = store
        self.flow = flow
        self.events = events
        self.background = background
        self.config = config
        self.client = client
        self._dirty: set[int] = set()
        self._workers: dict[int, asyncio.Task[Any]] = {}
        self._quiet: OrderedDict[int, None] = OrderedDict()
        self._no_channel_logged: set[str] = set()
        self._dm_channels: dict[str, str] = {}

    def start(self) -> None:
        """Listen to task changes, and catch up with those made while no gateway was listening."""
        self.events.subscribe(self.on_task_changed)
        self.background.spawn(self.catch_up())

    async def catch_up(self) -> None:
        """Sync every notice not showing a final status (e.g. held cells a restart cancelled); forget a
        notice whose posting was claimed long ago and never finished (its process died), so it is posted again."""
        def _open(session: Session) -> list[int]:
            stale = utcnow() - dt.timedelta(seconds=STALE_CLAIM)
            found: set[int] = set()
            for model in (SlackMessage, SlackRunThread):
                session.execute(delete(model).where(model.ts == "", model.updated_at < stale))
                found.update(session.execute(select(model.task_id).where(model.shown_status.not_in(sorted(tasks.FINAL))))
                             .scalars())
            return sorted(found)
        try:
            open_ids = await self.store.run(_open)
        except Exception:
            log.exception("could not read the open Slack notices; they catch up at their next change")
            return
        for task_id in open_ids:
            self.on_task_changed(task_id)

    # ------------------------------------------------------------------ the listener
    def on_task_changed(self, task_id: int) -> None:
        """Called by ``TaskEvents.notify``: cheap, never blocks, never raises into the caller."""
        if task_id in self._quiet:
            return
        self._dirty.add(task_id)
        if task_id not in self._workers:
            try:
                self._workers[task_id] = self.background.spawn(self._work(task_id))
            except RuntimeError:  # no running loop (a notify from a thread): nothing to do it on
                self._dirty.discard(task_id)
                log.warning("task %s changed outside the event loop; its Slack notice is not updated", task_id)

    async def _work(self, task_id: int) -> None:
        try:
            while task_id in self._dirty:
                self._dirty.discard(task_id)
                try:
                    await self.sync(task_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("Slack notice of task %s: unexpected error (the task is not affected)", task_id)
        finally:
            self._workers.pop(task_id, None)

    def _be_quiet(self, task_id: int) -> None:
        self._quiet[task_id] = None
        while len(self._quiet) > MAX_QUIET:
            self._quiet.popitem(last=False)

    # ------------------------------------------------------------------ one step
    async def sync(self, task_id: int) -> None:
        """Bring Slack up to date with task ``task_id``."""
        snap = await self.store.run(self._snapshot, task_id)
        if snap is None:
            return
        task, message = snap.task, snap.message
        if task is None:
            if snap.status != tasks.SUBMITTED:
                self._be_quiet(task_id)  # never reviewed here, or its notice could not be posted
            return
        if snap.run is not None:
            await self._thread_run(snap)
        if message is None:
            if task.status == tasks.PENDING_REVIEW:
                await self._post_notice(snap)
            elif task.status in tasks.FINAL:
                self._be_quiet(task_id)  # a run's thread told its end; there is no notice
            return
        if not message.ts:
            return  # being posted (another replica); it will render the latest state
        new = shown_key(task)
        old = message.shown_status
        if new == old or not await self.store.run(self._claim, SlackMessage, task_id, old, new):
            return
        if task.status in tasks.FINAL:
            self._be_quiet(task_id)
        await self._update(snap)
        await self._thread_and_dm(snap, _status_of(old))

    def _snapshot(self, session: Session, task_id: int) -> Snapshot | None:
        """The task, its notice, its run thread and the facts shown; only three small reads for a task Slack never saw."""
        message = session.get(SlackMessage, task_id, populate_existing=True)
        run = session.get(SlackRunThread, task_id, populate_existing=True)
        status = session.execute(select(Task.status).where(Task.id == task_id)).scalar_one_or_none()
        if status is None:
            return None
        if message is None and run is None and status != tasks.PENDING_REVIEW:
            return Snapshot(status)
        task = session.get(Task, task_id, populate_existing=True)
        assert task is not None
        _ = task.user, task.reviews
        reviews.annotate(session, task)
        facts = Facts(author_slack_id=links.slack_id_of(session, task.user_id))
        if task.status in FINISHED and (message is not None or run is not None):
            outputs = [o.output for o in session.execute(select(TaskOutput).where(TaskOutput.task_id == task_id)
                                                         .order_by(TaskOutput.seq).limit(MAX_OUTPUTS)).scalars()]
            facts.outputs = session.execute(select(func.count()).select_from(TaskOutput)
                                            .where(TaskOutput.task_id == task_id)).scalar_one()
            facts.rows, facts.excerpt = messages.summarize(outputs)
        return Snapshot(task.status, task, message, facts, run)

    @staticmethod
    def _claim(session: Session, model: type[SlackMessage] | type[SlackRunThread], task_id: int, old: str, new: str) -> bool:
        """Move what ``model``'s row of the task shows from ``old`` to ``new``; False if someone else did."""
        # an UPDATE's result is a CursorResult (SQLAlchemy's typing says only Result: cast, as its docs do)
        result = cast(CursorResult[Any], session.execute(
            update(model).where(model.task_id == task_id, model.shown_status == old)
            .values(shown_status=new, updated_at=utcnow())))
        return result.rowcount == 1

    async def _post_notice(self, snap: Snapshot) -> None:
        task = snap.task
        assert task is not None
        channel = self.config.channel_for(task.target)
        if not channel:
            if task.target not in self._no_channel_logged:
                self._no_channel_logged.add(task.target)
                log.info("no Slack channel for target %s (set Slack.channels or Slack.default_channel): no review notices", task.target)
            return

        def _claim_new(session: Session) -> bool:
            try:
                with session.begin_nested():
                    session.add(SlackMessage(task_id=task.id, channel=channel, ts="", shown_status=shown_key(task)))
                return True
            except IntegrityError:
                return False
        if not await self.store.run(_claim_new):
            return
        text, blocks = messages.notice(task, self.flow.task_url(task.id), snap.facts)
        try:
            posted = await self.client.call("chat.postMessage", channel=channel, text=text, blocks=blocks, unfurl_links=False)
        except SlackCallFailed as exc:
            log.warning("task %s: review notice not posted to Slack channel %s: %s", task.id, channel, exc)
            await self.store.run(lambda s: s.execute(delete(SlackMessage).where(SlackMessage.task_id == task.id)))
            self._be_quiet(task.id)
            return
        ts, where = str(posted.get("ts") or ""), str(posted.get("channel") or channel)
        await self.store.run(lambda s: s.execute(update(SlackMessage).where(SlackMessage.task_id == task.id)
                                                         .values(ts=ts, channel=where, updated_at=utcnow())))
        log.info("task %s: review notice posted to Slack channel %s", task.id, where)
        self._dirty.add(task.id)  # render whatever happened meanwhile

    async def _update(self, snap: Snapshot) -> None:
        task, message = snap.task, snap.message
        assert task is not None and message is not None
        text, blocks = messages.notice(task, self.flow.task_url(task.id), snap.facts)
        await self._try("update the notice of", task.id, "chat.update", channel=message.channel, ts=message.ts,
                        text=text, blocks=blocks)

    async def _thread_and_dm(self, snap: Snapshot, before: str) -> None:
        task, message = snap.task, snap.message
        assert task is not None and message is not None
        url = self.flow.task_url(task.id)
        posts: list[str] = []
        dms: list[str] = []
        if task.status == tasks.PENDING_REVIEW:
            posts.append(messages.approvals_post(task))
        if decided(task.status) and not decided(before):
            line = messages.decision_post(task)
            if line:
                posts.append(line)
            if task.status != tasks.CANCELLED or task.decided_by != task.user.name:  # not when they cancelled it
                dms.append(messages.author_dm(task, url, snap.facts, finished=False))
        if task.status in FINISHED and before not in FINISHED:
            posts.append(messages.result_post(task, url, snap.facts, self.config.post_output == "excerpt"))
            dms.append(messages.author_dm(task, url, snap.facts, finished=True))
        for text in posts:
            await self._try("thread a reply under the notice of", task.id, "chat.postMessage", channel=message.channel,
                            thread_ts=message.ts, text=text, unfurl_links=False)
        if not dms or snap.run is not None:  # a run from Slack: its own thread tells its author
            return
        author = snap.facts.author_slack_id or await self._find_author(task)
        if author is None:
            log.debug("task %s: its author %s has no Slack account linked; no direct message", task.id, task.user.name)
            return
        for text in dms:
            await self._dm(task, author, text)

    # ------------------------------------------------------------------ runs from a Slack form
    async def announce_run(self, task_id: int, slack_user_id: str) -> None:
        """Tell ``slack_user_id`` in a direct message that task ``task_id`` (a template they ran from
        Slack) was submitted; its decision and its result follow in that message's thread. Never raises."""
        try:
            await self._announce(task_id, slack_user_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s: could not announce its run in Slack (the task is not affected)", task_id)

    async def _announce(self, task_id: int, slack_user_id: str) -> None:
        def _claim_new(session: Session) -> Task | None:
            task = session.get(Task, task_id)
            if task is None:
                return None
            try:
                with session.begin_nested():
                    session.add(SlackRunThread(task_id=task_id, slack_user_id=slack_user_id, channel="", ts="",
                                               shown_status=task.status))
            except IntegrityError:
                return None  # announced already
            _ = task.user, task.reviews
            return task
        task = await self.store.run(_claim_new)
        if task is None:
            return
        posted = await self._dm(task, slack_user_id, messages.run_announced(task, self.flow.task_url(task_id)))
        ts = str((posted or {}).get("ts") or "")
        if not ts:
            await self.store.run(lambda s: s.execute(delete(SlackRunThread).where(SlackRunThread.task_id == task_id)))
            return
        channel = str((posted or {}).get("channel") or self._dm_channels.get(slack_user_id) or "")
        await self.store.run(lambda s: s.execute(update(SlackRunThread).where(SlackRunThread.task_id == task_id)
                                                 .values(ts=ts, channel=channel, updated_at=utcnow())))
        log.info("task %s: its run was announced to Slack user %s", task_id, slack_user_id)
        self._quiet.pop(task_id, None)  # it may have moved (or ended) meanwhile: tell what it did since
        self.on_task_changed(task_id)

    async def thread_task(self, task: Task, slack_user_id: str, channel: str, thread_ts: str) -> None:
        """Thread the decision and the result of ``task`` under a message that exists already: the
        direct message of ``slack_user_id`` whose code it is (``dm.py``). ``task`` is as submitted: the
        first reply says where it stood then, the thread tells every step since. Never raises."""
        try:
            await self._thread_under(task, slack_user_id, channel, thread_ts)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("task %s: could not thread it under its Slack message (the task is not affected)", task.id)

    async def _thread_under(self, task: Task, slack_user_id: str, channel: str, thread_ts: str) -> None:
        def _claim_new(session: Session) -> bool:
            try:
                with session.begin_nested():  # ts "" while the first reply is posted: the thread waits for it
                    session.add(SlackRunThread(task_id=task.id, slack_user_id=slack_user_id, channel=channel, ts="",
                                               shown_status=task.status))
                return True
            except IntegrityError:
                return False
        if not await self.store.run(_claim_new):
            return
        await self._try("post the first reply under the message of", task.id, "chat.postMessage", channel=channel,
                        thread_ts=thread_ts, text=messages.dm_submitted(task, self.flow.task_url(task.id)),
                        unfurl_links=False)
        await self.store.run(lambda s: s.execute(update(SlackRunThread).where(SlackRunThread.task_id == task.id)
                                                 .values(ts=thread_ts, updated_at=utcnow())))
        log.info("task %s: threaded under the direct message of Slack user %s", task.id, slack_user_id)
        self._quiet.pop(task.id, None)  # it may have moved (or ended) meanwhile: tell what it did since
        self.on_task_changed(task.id)

    async def _thread_run(self, snap: Snapshot) -> None:
        """Post in the run's thread what happened since it last told (the decision, the result)."""
        task, run = snap.task, snap.run
        assert task is not None and run is not None
        if not run.ts:
            return  # being announced; the announcer syncs it then
        old = run.shown_status
        if task.status == old or not await self.store.run(self._claim, SlackRunThread, task.id, old, task.status):
            return
        for text in messages.run_posts(task, old, self.flow.task_url(task.id), snap.facts, self.config.post_output == "excerpt"):
            await self._try("thread a reply under the run message of", task.id, "chat.postMessage", channel=run.channel,
                            thread_ts=run.ts, text=text, unfurl_links=False)

    async def _dm(self, task: Task, slack_user_id: str, text: str) -> dict[str, Any] | None:
        return await self.direct_message(slack_user_id, text, f"task {task.id}")

    async def direct_message(self, slack_user_id: str, text: str, about: str) -> dict[str, Any] | None:
        """A direct message to ``slack_user_id``; Slack's answer, or None when it failed (logged, with ``about``)."""
        try:
            channel = self._dm_channels.get(slack_user_id)
            if channel is None:
                opened = await self.client.call("conversations.open", users=slack_user_id)
                channel = str((opened.get("channel") or {}).get("id") or "")
                if not channel:
                    raise SlackCallFailed("conversations.open", "no channel in the answer", 1)
                self._dm_channels[slack_user_id] = channel
            return await self.client.call("chat.postMessage", channel=channel, text=text, unfurl_links=False)
        except SlackCallFailed as exc:
            log.warning("%s: could not send a direct message to Slack user %s: %s", about, slack_user_id, exc)
            return None

    async def _find_author(self, task: Task) -> str | None:
        """The author's Slack user by their verified email (``users.lookupByEmail``), linked for next time."""
        user = task.user
        if not (user.email and user.email_verified):
            return None
        try:
            found = await self.client.call("users.lookupByEmail", attempts=1, email=user.email)
        except SlackCallFailed as exc:
            log.info("task %s: no Slack user found for its author's email: %s", task.id, exc.error)
            return None
        member = found.get("user") or {}
        slack_id = str(member.get("id") or "")
        if not slack_id or member.get("deleted") or member.get("is_bot"):
            return None

        def _link(session: Session) -> bool:
            """Link them, unless that Slack user is linked already: then only if to this very user."""
            existing = session.execute(select(SlackLink.user_id).where(SlackLink.slack_user_id == slack_id)).scalars().all()
            if existing:
                return user.id in existing
            links.link(session, slack_id, user.name, team_id=str(member.get("team_id") or ""), how="email", actor="slack")
            return True
        try:
            mine = await self.store.run(_link)
        except IntegrityError:
            return None  # linked meanwhile: next time
        if not mine:
            log.warning("task %s: the Slack user with its author's email (%s) is linked to another cellgate user; "
                        "no direct message", task.id, slack_id)
            return None
        return slack_id

    async def _try(self, what: str, task_id: int, method: str, **params: Any) -> dict[str, Any] | None:
        try:
            return await self.client.call(method, **params)
        except SlackCallFailed as exc:
            log.warning("task %s: could not %s it in Slack: %s", task_id, what, exc)
            return None

