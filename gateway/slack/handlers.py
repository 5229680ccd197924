"""Slack's requests (``/slack/interactions``, ``/slack/commands``, ``/slack/events``) and the links admin API
(``/api/v1/slack/links``)."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import parse_qs

from ..errors import BadRequest
from ..handlers.base import APIHandler
from ..handlers.inputs import STRING, Operation, Query, obj, parse_json
from . import actions, dm, links
from .integration import SlackIntegration
from .verify import RequestVerifier

log = logging.getLogger("cellgate.gateway.slack")

#: Slack user and workspace IDs (U024BE7LH, W012A3CDE, T061EG9R6)
SLACK_ID_RE = re.compile(r"^[A-Z0-9]{2,64}$")


class SlackRequestHandler(APIHandler):
    """A request from Slack itself.

    Authorization: these routes are ``anonymous`` at the HTTP level because Slack sends no cellgate
    token; they authenticate **inside the handler**, by Slack's request signature
    (:class:`~cellgate.gateway.slack.verify.RequestVerifier`: signing secret configured, timestamp
    within five minutes, valid ``v0=`` HMAC-SHA256, not a replay — checked in the store) before the body is even parsed,
    and every refusal is a 401. The person acting is then the cellgate user the Slack user is
    linked to, and what they may do is checked by the gateway as for any other client.
    """

    @property
    def slack(self) -> SlackIntegration | None:
        return self.settings.get("slack")

    async def verified(self) -> SlackIntegration:
        """The integration, once the request (its raw body) is proven to be Slack's; else 401.

        The replay check is a store insert (on the store's thread pool): refused across restarts and replicas.
        """
        slack = self.slack
        if slack is None:
            RequestVerifier("").check(self.request.body, self.request.headers)  # refuses: nothing configured
        assert slack is not None
        await slack.verifier.verify(self.request.body, self.request.headers)
        return slack

    async def verified_form(self) -> tuple[SlackIntegration, dict[str, str]]:
        """The integration and the request's form fields, once the request is proven to be Slack's (:meth:`verified`)."""
        slack = await self.verified()
        try:
            fields = parse_qs(self.request.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest("the request body is not UTF-8") from None
        return slack, {key: values[0] for key, values in fields.items()}

    def answer(self, body: dict[str, Any] | None) -> None:
        """Slack reads an empty 200 as "done" (a modal closes); a JSON body as instructions."""
        if body is None:
            self.set_status(200)
            self.finish()
        else:
            self.send(body)


class SlackInteractionsHandler(SlackRequestHandler):
    """Button clicks and modal submissions (the Slack app's Interactivity Request URL).

    Anonymous at the HTTP level; authenticated by Slack's signature inside (see the base class).
    """

    access = {"POST": "anonymous"}

    async def post(self) -> None:
        slack, form = await self.verified_form()
        try:
            payload = parse_json(form.get("payload", ""), "the Slack payload")
        except BadRequest as exc:
            raise BadRequest(f"an interaction carries a JSON `payload` form field: {exc.message}") from None
        if not isinstance(payload, dict):
            raise BadRequest("the interaction payload must be a JSON object")
        self.answer(await actions.interaction(slack, payload))


class SlackCommandsHandler(SlackRequestHandler):
    """``/cellgate`` (the slash command's Request URL).

    Anonymous at the HTTP level; authenticated by Slack's signature inside (see the base class).
    """

    access = {"POST": "anonymous"}

    async def post(self) -> None:
        slack, form = await self.verified_form()
        self.answer(await actions.command(slack, form))


class SlackEventsHandler(SlackRequestHandler):
    """The Events API (the Slack app's Event Subscriptions Request URL): ``message.im``, a direct message.

    Anonymous at the HTTP level; authenticated by Slack's signature over the raw JSON body before it
    is parsed (see the base class). ``url_verification`` is answered with its ``challenge``; an
    ``event_callback`` is acknowledged at once (Slack redelivers after 3 s) and handled in the
    background (``dm.py``); a redelivery (``X-Slack-Retry-Num``) is acknowledged and ignored, and an
    event ID seen before is handled once.
    """

    access = {"POST": "anonymous"}

    async def post(self) -> None:
        slack = await self.verified()
        try:
            envelope = parse_json(self.request.body, "a Slack event")
        except BadRequest as exc:
            raise BadRequest(f"a Slack event is a JSON object: {exc.message}") from None
        if not isinstance(envelope, dict):
            raise BadRequest("a Slack event is a JSON object")
        kind = envelope.get("type")
        if kind == "url_verification":
            self.send({"challenge": str(envelope.get("challenge") or "")})
            return
        retry = self.request.headers.get("X-Slack-Retry-Num")
        if kind == "event_callback" and retry:
            log.info("Slack event %s is a redelivery (X-Slack-Retry-Num %s): ignored", str(envelope.get("event_id"))[:64],
                     retry[:8])
        elif kind == "event_callback":
            await dm.receive(slack, envelope)
        self.answer(None)


def _slack_id(value: str, what: str) -> str:
    if not SLACK_ID_RE.match(value):
        raise BadRequest(f"{what} {value!r} is not a Slack ID (capital letters and digits, e.g. U024BE7LH)")
    return value


class SlackLinksHandler(APIHandler):
    access = {"GET": "admin"}

    async def get(self) -> None:
        self.send({"links": await self.store.run(links.all_links)})


class SlackLinkHandler(APIHandler):
    """``PUT {"user": NAME, "team_id": T?}`` links a Slack user to a cellgate user; ``DELETE`` removes the link.

    A link without ``team_id`` holds for that Slack user ID in any workspace.
    """

    access = {"PUT": "admin", "DELETE": "admin"}
    api = {"PUT": Operation(body=obj(("user",), user=STRING, team_id=STRING)),
           "DELETE": Operation(query=(Query("team_id", default="", help="the workspace of the link"),))}

    async def put(self, slack_user_id: str) -> None:
        data = self.body()
        user = self.field(data, "user")
        team_id = self.field(data, "team_id", required=False, default="")
        _slack_id(slack_user_id, "Slack user")
        if team_id:
            _slack_id(team_id, "Slack workspace")
        body = await self.store.run(links.link, slack_user_id, user, team_id=team_id, how="manual",
                                            actor=self.user.actor)
        self.send(body)

    async def delete(self, slack_user_id: str) -> None:
        team_id = self.argument("team_id")
        await self.store.run(links.unlink, slack_user_id, team_id=team_id, actor=self.user.actor)
        self.send({"slack_user_id": slack_user_id, "team_id": team_id, "unlinked": True})


default_handlers = [
    (r"/slack/interactions", SlackInteractionsHandler),
    (r"/slack/commands", SlackCommandsHandler),
    (r"/slack/events", SlackEventsHandler),
    (r"/api/v1/slack/links/?", SlackLinksHandler),
    (r"/api/v1/slack/links/(?P<slack_user_id>[^/]+)/?", SlackLinkHandler),
]
