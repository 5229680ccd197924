"""Slack speaks SQL in a direct message (the Events API's ``message.im``; docs/slack.md §7).

In a DM to the app: ``help``; ``targets`` (those one may submit to, as ``/cellgate targets``);
``target NAME`` chooses the DM's target (one may submit to, remembered per Slack user and workspace
in :class:`~cellgate.gateway.models.SlackDmTarget`), ``target`` alone tells it. Any other message is
code (:func:`dm_text.code_of`: as typed, or refused) and is submitted as a ``script`` task on that
target through :meth:`Scripts.submit`, the path of ``cellgate run``, as the cellgate user the Slack
user is linked to (groups read now): the same policy, review and audit, nothing special in the gate.
A user who may no longer submit to their chosen target gets the gate's answer, a ``denied`` task
(audited), told in the thread. Otherwise the task's decision and its result are threaded under the
message (:meth:`Notifier.thread_task`); a task that needs review gets the usual review notice too.

:func:`receive` runs while Slack waits for the answer (3 s): it only picks the messages handled
(a person's, in a DM: not the bot's own, not edits or other subtypes) and records the event's ID
(:meth:`RequestVerifier.first_delivery`: each event once); the conversation runs in the background.
Replies to commands go in the DM (or the thread they were sent in), replies about code in the message's thread.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import tasks
from ..access import may_submit
from ..auth import Identity
from ..errors import CellgateError
from ..models import SlackDmTarget, Target, utcnow
from . import dm_text
from .actions import targets_text
from .callers import identify, refusal
from .client import SlackCallFailed
from .integration import SlackIntegration
from .messages import esc

log = logging.getLogger("cellgate.gateway.slack")


@dataclass(frozen=True)
class Message:
    """A person's message in a direct message to the app."""

    event_id: str
    team_id: str
    slack_user_id: str
    channel: str
    ts: str
    text: str
    #: where replies about it go: its own thread (a message sent in a thread: that thread)
    thread_ts: str

    @property
    def who(self) -> str:
        return f"Slack user {self.slack_user_id}"


def message_of(envelope: dict[str, Any]) -> Message | None:
    """The message an ``event_callback`` carries, if it is one cellgate answers; else None (ignored)."""
    event = envelope.get("event")
    if not isinstance(event, dict) or event.get("type") != "message" or event.get("channel_type") != "im":
        return None
    if event.get("subtype") or event.get("bot_id") or event.get("bot_profile"):
        return None  # edits, deletions, joins, bots (this app's own replies among them)
    user, text = event.get("user"), event.get("text")
    channel, ts, event_id = event.get("channel"), event.get("ts"), envelope.get("event_id")
    if not all(isinstance(v, str) and v for v in (user, channel, ts, event_id)) or not isinstance(text, str):
        return None
    if user in _bots(envelope):
        return None
    team = event.get("team") or envelope.get("team_id") or ""
    return Message(str(event_id), str(team), str(user), str(channel), str(ts), text, str(event.get("thread_ts") or ts))


def _bots(envelope: dict[str, Any]) -> set[str]:
    """The bot users the event was delivered for (this app's own user)."""
    found = envelope.get("authorizations")
    return {str(a.get("user_id")) for a in found if isinstance(a, dict) and a.get("is_bot")} if isinstance(found, list) else set()


async def receive(slack: SlackIntegration, envelope: dict[str, Any]) -> None:
    """An ``event_callback``: the message it carries, if handled and new, is answered in the background."""
    msg = message_of(envelope)
    if msg is None:
        return
    if not await slack.verifier.first_delivery(msg.event_id):
        log.info("Slack event %s was delivered again; handled once", msg.event_id[:64])
        return
    slack.background.spawn(converse(slack, msg))


async def converse(slack: SlackIntegration, msg: Message) -> None:
    """Answer one message. Never raises: the unexpected is logged, and the user told."""
    try:
        await _converse(slack, msg)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a direct message from %s failed", msg.who)
        await say(slack, msg, "cellgate could not handle this message (an unexpected error, logged by the gateway); "
                              "try again, or use `cellgate run`", threaded=True)


async def _converse(slack: SlackIntegration, msg: Message) -> None:
    command = dm_text.command_of(msg.text)
    if command is not None and command.verb == "help":
        await say(slack, msg, dm_text.HELP)
        return
    try:
        ident = await identify(slack, msg.slack_user_id, msg.team_id)
    except CellgateError as exc:
        await say(slack, msg, exc.message, threaded=command is None)
        return
    if command is None:
        await run(slack, msg, ident)
    elif command.verb == "targets":
        await say(slack, msg, await slack.store.run(targets_text, ident, slack))
    elif command.name is None:
        await say(slack, msg, await slack.store.run(current, msg, ident))
    else:
        await say(slack, msg, await slack.store.run(choose, msg, ident, command.name))


async def run(slack: SlackIntegration, msg: Message, ident: Identity) -> None:
    """The message is code: submit it on the chosen target, thread its decision and result under it."""
    try:
        code = dm_text.code_of(msg.text)
    except dm_text.NotAsTyped as exc:
        log.info("a direct message from %s (%s) is not run: %s", msg.who, ident.name, exc.message[:80])
        await say(slack, msg, exc.message, threaded=True)
        return
    target = await slack.store.run(chosen, msg)
    if target is None:
        await say(slack, msg, dm_text.NO_TARGET, threaded=True)
        return
    if slack.scripts is None:
        await say(slack, msg, "this gateway does not run code from Slack: use `cellgate run`", threaded=True)
        return
    try:
        task = await slack.scripts.submit(ident, target, code, dm_text.WHY)
    except CellgateError as exc:
        log.info("code from %s (%s) on %s refused: %s", msg.who, ident.name, target, exc.message)
        await say(slack, msg, refusal(exc), threaded=True)
        return
    log.info("task %s: code sent by %s (%s) in a direct message, on %s: %s", task.id, ident.name, msg.who, target,
             task.status)
    if task.status == tasks.DENIED:
        await say(slack, msg, f"cellgate refused (403): task #{task.id} was denied by policy: "
                              f"{esc(task.decision_comment or '')}. `targets` lists where you may run code.", threaded=True)
        return
    await slack.notifier.thread_task(task, msg.slack_user_id, msg.channel, msg.thread_ts)


async def say(slack: SlackIntegration, msg: Message, text: str, *, threaded: bool = False) -> None:
    """Reply in the DM (``threaded``, or a message sent in a thread: in its thread); a failure is logged."""
    where: dict[str, Any] = {"thread_ts": msg.thread_ts} if threaded or msg.thread_ts != msg.ts else {}
    try:
        await slack.client.call("chat.postMessage", channel=msg.channel, text=text, unfurl_links=False,
                                unfurl_media=False, **where)
    except SlackCallFailed as exc:
        log.warning("could not answer the direct message of %s: %s", msg.who, exc)


# ---------------------------------------------------------------- the DM's target (in the store)
def chosen(session: Session, msg: Message) -> str | None:
    row = session.get(SlackDmTarget, (msg.team_id, msg.slack_user_id))
    return row.target if row else None


def _about(target: Target) -> str:
    review = f"reviewed by {', '.join(target.review_groups)}" if target.review_groups else "no review"
    return f"{target.kind or 'sql'}; {review}"


def current(session: Session, msg: Message, ident: Identity) -> str:
    """``target``: which target the DM runs on, and whether one may still submit there."""
    name = chosen(session, msg)
    if name is None:
        return "no target chosen yet: " + dm_text.NO_TARGET.removeprefix("choose a target first: ")
    target = session.get(Target, name)
    if target is None or not may_submit(ident, target):
        return (f"your messages run on *{esc(name)}*, but you may no longer run code there: `targets` lists where "
                "you may, `target NAME` chooses one")
    return f"your messages run on *{esc(name)}* ({esc(_about(target))})"


def choose(session: Session, msg: Message, ident: Identity, name: str) -> str:
    """``target NAME``: remember NAME for this Slack user, if ``ident`` may submit there (exact name, else
    the one that differs only in case); else nothing is remembered and the answer says why."""
    target = session.get(Target, name)
    if target is None or not may_submit(ident, target):
        alike = [t for t in session.execute(select(Target).order_by(Target.name)).scalars()
                 if t.name.lower() == name.lower() and may_submit(ident, t)]
        target = alike[0] if len(alike) == 1 else None
    if target is None:  # absent and not allowed answer alike
        return (f"you may not run code on a target `{esc(name[:100])}` (or there is none); nothing changed. "
                "`targets` lists those you may use")
    row = session.get(SlackDmTarget, (msg.team_id, msg.slack_user_id))
    if row is None:
        session.add(SlackDmTarget(team_id=msg.team_id, slack_user_id=msg.slack_user_id, target=target.name))
    else:
        row.target, row.updated_at = target.name, utcnow()
    log.info("%s (%s) runs direct messages on %s", msg.who, ident.name, target.name)
    return (f"your messages now run on *{esc(target.name)}* ({esc(_about(target))}): send code, "
            "its result comes in the thread of your message")
