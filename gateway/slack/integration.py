"""The Slack integration of one gateway process: configuration, Web API client, request verifier, notifier."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..agents import AgentRegistry
from ..background import Background
from ..events import TaskEvents
from ..flow import TaskFlow
from ..models import Schedule, Task, TaskOutput
from ..scripts import Scripts
from ..store import Store
from ..templates.library import TemplateLibrary
from .client import SlackCallFailed, SlackClient
from .config import Slack
from . import links
from .notices import Notifier
from .results import schedule_result_text
from .verify import RequestVerifier

log = logging.getLogger("cellgate.gateway.slack")


class SlackIntegration:
    def __init__(self, store: Store, flow: TaskFlow, events: TaskEvents, agents: AgentRegistry, background: Background,
                 config: Slack, templates: TemplateLibrary | None = None, scripts: Scripts | None = None) -> None:
        self.store = store
        self.templates = templates  # what /cellgate templates lists, and the forms run
        self.scripts = scripts  # what runs a template submitted from its form (templates.runs.run_template)
        self.flow = flow
        self.agents = agents  # "online"/"offline" in the target list
        self.background = background
        self.config = config
        self.client = SlackClient(config)
        self.verifier = RequestVerifier(config.signing_secret, store=store)  # replays: in the store
        self.notifier = Notifier(store, flow, events, background, config, self.client)

    def start(self) -> None:
        """Subscribe the notifier (with a bot token); say once what is on and off."""
        if self.client.enabled:
            self.notifier.start()
            where = ", ".join(f"{t} → {c}" for t, c in sorted(self.config.channels.items())) or "none per target"
            log.info("Slack review notices on (API %s; channels: %s; default: %s)", self.config.api_url, where,
                     self.config.default_channel or "none")
        else:
            log.info("Slack review notices are off: no bot token (set Slack.bot_token or CELLGATE_SLACK_BOT_TOKEN)")
        if not self.verifier.configured:
            log.info("Slack buttons and /cellgate are refused: no signing secret "
                     "(set Slack.signing_secret or CELLGATE_SLACK_SIGNING_SECRET)")

    async def tell(self, channel: str | None, slack_user_id: str, text: str) -> None:
        """An ephemeral message only ``slack_user_id`` sees in ``channel`` (errors of their clicks); logged if it fails."""
        if not channel:
            log.info("no channel to tell Slack user %s: %s", slack_user_id, text)
            return
        try:
            await self.client.call("chat.postEphemeral", channel=channel, user=slack_user_id, text=text)
        except SlackCallFailed as exc:
            log.warning("could not tell Slack user %s (%s): %s", slack_user_id, text, exc)

    async def close(self) -> None:
        """Stop calling Slack (the notifier's workers are the gateway's background tasks: cancelled with them)."""
        self.client.close()

    async def post_schedule_result(self, schedule: Schedule, task: Task) -> None:
        """A scheduled run's result: in the schedule's channel, else to its author (linked), else logged."""
        def _tx(session: Session) -> tuple[str | None, list[str]]:
            rows = session.execute(select(TaskOutput).where(TaskOutput.task_id == task.id).order_by(TaskOutput.seq)
                                   .limit(50)).scalars()
            texts = [str(r.output.get("text") or (r.output.get("data") or {}).get("text/plain") or "") for r in rows]
            return schedule.notify or links.slack_id_of(session, schedule.user_id), texts
        channel, outputs = await self.store.run(_tx)
        text = schedule_result_text(schedule, task, self.flow.task_url(task.id), outputs)
        if not channel:
            log.info("schedule %s: no Slack channel and its author is not linked: %s", schedule.name, text)
            return
        try:
            await self.client.call("chat.postMessage", channel=channel, text=text)
        except SlackCallFailed as exc:
            log.warning("schedule %s: could not post the result of task %s: %s", schedule.name, task.id, exc)
