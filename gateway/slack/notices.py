"""Review notices: post when a task waits for review, update in place as it moves, thread the rest.

:class:`Notifier` listens to :class:`~cellgate.gateway.events.TaskEvents`. The listener only marks
the task and starts (at most) one background worker per task, so the task flow never waits for
Slack; the worker reads the task and its :class:`~cellgate.gateway.models.SlackMessage` and
brings Slack up to date:

- a task entering ``pending_review`` gets a notice in its target's channel (``Slack.channels``,
  else ``Slack.default_channel``), with Approve and Reject buttons;
- each later change updates that message in place (``chat.update``); approvals, the decision and
  the result are posted in its thread; the author gets a direct message when the task is decided
  and when it finishes.

``SlackMessage.shown_status`` records what the message shows (the status, plus ``+N`` for N
approvals recorded on a task still waiting) and is moved by compare-and-set before anything is
posted, so each step is posted once even with several workers or gateway replicas. A Slack call
that still fails after its retries is logged and dropped: the next step re-renders the whole
message anyway.
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
from ..models import SlackLink, SlackMessage, Task, TaskOutput, utcnow
from ..background import Background
from ..events import TaskEvents
from ..flow import TaskFlow
from ..store import Store
from . import links, messages
from .client import SlackCallFailed, SlackClient
from .config import Slack
from .messages import FINISHED, NOT_RUN, RAN, Facts

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


def _decided(status: str) -> bool:
    return status in RAN or status in NOT_RUN


@dataclass
class Snapshot:
    """A task as the notifier sees it; ``task`` is None when there is nothing to show (no notice, not waiting)."""

    status: str
    task: Task | None = None
    message: SlackMessage | None = None
    facts: Facts = field(default_factory=Facts)


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
            session.execute(delete(SlackMessage).where(SlackMessage.ts == "", SlackMessage.updated_at < stale))
            return list(session.execute(select(SlackMessage.task_id)
                                        .where(SlackMessage.shown_status.not_in(sorted(tasks.FINAL)))).scalars())
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
        if message is None:
            await self._post_notice(snap)
            return
        if not message.ts:
            return  # being posted (another replica); it will render the latest state
        new = shown_key(task)
        old = message.shown_status
        if new == old or not await self.store.run(self._claim, task_id, old, new):
            return
        if task.status in tasks.FINAL:
            self._be_quiet(task_id)
        await self._update(snap)
        await self._thread_and_dm(snap, _status_of(old))

    def _snapshot(self, session: Session, task_id: int) -> Snapshot | None:
        """The task, its notice and the facts shown; only two small reads for a task Slack never saw."""
        message = session.get(SlackMessage, task_id, populate_existing=True)
        status = session.execute(select(Task.status).where(Task.id == task_id)).scalar_one_or_none()
        if status is None:
            return None
        if message is None and status != tasks.PENDING_REVIEW:
            return Snapshot(status)
        task = session.get(Task, task_id, populate_existing=True)
        assert task is not None
        _ = task.user, task.reviews
        reviews.annotate(session, task)
        facts = Facts(author_slack_id=links.slack_id_of(session, task.user_id))
        if task.status in FINISHED and message is not None:
            outputs = [o.output for o in session.execute(select(TaskOutput).where(TaskOutput.task_id == task_id)
                                                         .order_by(TaskOutput.seq).limit(MAX_OUTPUTS)).scalars()]
            facts.outputs = session.execute(select(func.count()).select_from(TaskOutput)
                                            .where(TaskOutput.task_id == task_id)).scalar_one()
            facts.rows, facts.excerpt = messages.summarize(outputs)
        return Snapshot(task.status, task, message, facts)

    @staticmethod
    def _claim(session: Session, task_id: int, old: str, new: str) -> bool:
        # an UPDATE's result is a CursorResult (SQLAlchemy's typing says only Result: cast, as its docs do)
        result = cast(CursorResult[Any], session.execute(
            update(SlackMessage).where(SlackMessage.task_id == task_id, SlackMessage.shown_status == old)
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
        if _decided(task.status) and not _decided(before):
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
        if not dms:
            return
        author = snap.facts.author_slack_id or await self._find_author(task)
        if author is None:
            log.debug("task %s: its author %s has no Slack account linked; no direct message", task.id, task.user.name)
            return
        for text in dms:
            await self._dm(task, author, text)

    async def _dm(self, task: Task, slack_user_id: str, text: str) -> None:
        channel = self._dm_channels.get(slack_user_id)
        if channel is None:
            opened = await self._try("open a direct message for", task.id, "conversations.open", users=slack_user_id)
            channel = str(((opened or {}).get("channel") or {}).get("id") or "")
            if not channel:
                return
            self._dm_channels[slack_user_id] = channel
        await self._try("send a direct message about", task.id, "chat.postMessage", channel=channel, text=text, unfurl_links=False)

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

