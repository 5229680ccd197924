"""A Slack Web API stand-in, and Slack's side of a request: signed interaction payloads, commands and events.

:class:`SlackStandIn` is a small tornado app on 127.0.0.1 (its own thread and loop) that records
every call (method, parameters from the JSON body, form or query) and answers as Slack does.
``fail_with = 500`` makes it answer every call with that status; :meth:`down` stops it listening
(connection refused) until :meth:`up`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from tornado import httpserver, netutil, web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Call:
    method: str
    params: dict[str, Any]
    token: str | None
    #: what the stand-in answered (e.g. the ``ts`` of a posted message)
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class SlackUser:
    email: str
    team_id: str = "T0CELLGATE"
    email_confirmed: bool = True


@dataclass
class SlackStandIn:
    users: dict[str, SlackUser] = field(default_factory=dict)
    fail_with: int | None = None
    calls: list[Call] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._ts = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: httpserver.HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SlackStandIn:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._listen()
            loop.call_soon(ready.set)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="slack-standin", daemon=True)
        self._thread.start()
        assert ready.wait(10), "the Slack stand-in did not start"
        return self

    def _in_loop(self, fn: Callable[[], Any]) -> None:
        assert self._loop is not None
        done = threading.Event()

        def call() -> None:
            fn()
            done.set()
        self._loop.call_soon_threadsafe(call)
        assert done.wait(10)

    def down(self) -> None:
        """Stop listening: calls are refused at the TCP level."""
        self._in_loop(lambda: self._server.stop())  # type: ignore[union-attr]

    def up(self) -> None:
        self._in_loop(self._listen)

    def _listen(self) -> None:
        app = web.Application([(r"/api/(?P<method>[\w.]+)", _ApiHandler, {"standin": self})])
        self._server = httpserver.HTTPServer(app)
        self._server.add_sockets(netutil.bind_sockets(self.port, "127.0.0.1"))

    def stop(self) -> None:
        if self._loop is None:
            return
        self._in_loop(lambda: self._server.stop())  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    # ------------------------------------------------------------------ what was called
    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def of(self, method: str, **match: Any) -> list[Call]:
        """Calls of ``method`` whose parameters equal ``match``."""
        with self._lock:
            found = list(self.calls)
        return [c for c in found if c.method == method and all(c.params.get(k) == v for k, v in match.items())]

    def wait_for(self, method: str, predicate: Callable[[Call], bool] = lambda c: True, timeout: float = 20,
                 **match: Any) -> Call:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.of(method, **match):
                if predicate(call):
                    return call
            time.sleep(0.05)
        seen = [(c.method, json.dumps(c.params)[:300]) for c in self.of(method)]
        raise AssertionError(f"no {method} call matching {match} within {timeout}s; {method} calls: {seen}")

    def next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._ts):06d}"

    # ------------------------------------------------------------------ answers
    def answer(self, method: str, p: dict[str, Any]) -> dict[str, Any]:
        if method == "chat.postMessage":
            channel = str(p.get("channel", ""))
            return {"ok": True, "channel": channel, "ts": self.next_ts(), "message": {"text": p.get("text", "")}}
        if method == "chat.update":
            return {"ok": True, "channel": p.get("channel"), "ts": p.get("ts"), "text": p.get("text", "")}
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": self.next_ts()}
        if method == "views.open":
            return {"ok": True, "view": {"id": "V" + uuid.uuid4().hex[:8].upper(), **(p.get("view") or {})}}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(p.get("users", "")).split(",")[0]}}
        if method == "users.info":
            user = self.users.get(str(p.get("user", "")))
            if user is None:
                return {"ok": False, "error": "user_not_found"}
            return {"ok": True, "user": {"id": p["user"], "team_id": user.team_id, "deleted": False, "is_bot": False,
                                         "is_email_confirmed": user.email_confirmed, "profile": {"email": user.email}}}
        if method == "users.lookupByEmail":
            for slack_id, user in self.users.items():
                if user.email == p.get("email"):
                    return {"ok": True, "user": {"id": slack_id, "team_id": user.team_id, "deleted": False, "is_bot": False}}
            return {"ok": False, "error": "users_not_found"}
        return {"ok": False, "error": "unknown_method"}


class _ApiHandler(web.RequestHandler):
    def initialize(self, standin: SlackStandIn) -> None:
        self.standin = standin

    def check_xsrf_cookie(self) -> None:
        return None

    def _params(self) -> dict[str, Any]:
        params: dict[str, Any] = {k: self.get_query_argument(k) for k in self.request.query_arguments}
        body = self.request.body or b""
        if self.request.headers.get("Content-Type", "").startswith("application/json") and body:
            params.update(json.loads(body))
        elif body:
            params.update(dict(parse_qsl(body.decode())))
        return params

    def _serve(self, method: str) -> None:
        auth = self.request.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        params = self._params()
        if self.standin.fail_with:
            self.standin.record(Call(method, params, token))
            self.set_status(self.standin.fail_with)
            self.finish("upstream trouble")
            return
        answer = self.standin.answer(method, dict(params)) if token is not None else {"ok": False, "error": "not_authed"}
        self.standin.record(Call(method, params, token, answer))
        self.finish(answer)

    def post(self, method: str) -> None:
        self._serve(method)

    def get(self, method: str) -> None:
        self._serve(method)


# ---------------------------------------------------------------------- Slack's requests
def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with ``body``: ``v0=HMAC-SHA256(secret, "v0:{ts}:{body}")``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


def form(payload: dict[str, Any]) -> str:
    """An interaction's body as Slack sends it: ``payload=<url-encoded JSON>``."""
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))})


def button_click(action_id: str, value: str, slack_user: str, *, team: str = "T0CELLGATE", channel: str = "CPAY",
                 message_ts: str = "1.000001", block_id: str = "b1", trigger_id: str | None = None) -> dict[str, Any]:
    """A ``block_actions`` payload: ``slack_user`` clicked the button ``action_id`` whose value is ``value``."""
    return {
        "type": "block_actions",
        "user": {"id": slack_user, "username": slack_user.lower(), "name": slack_user.lower(), "team_id": team},
        "api_app_id": "A0CELLGATE",
        "token": "legacy-verification-token-unused",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "trigger_id": trigger_id or f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        "team": {"id": team, "domain": "cellgate-test"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "reviews"},
        "message": {"type": "message", "ts": message_ts, "text": "cellgate task"},
        "state": {"values": {}},
        "response_url": "https://hooks.slack.com/actions/T0CELLGATE/1/unused",
        "actions": [{"action_id": action_id, "block_id": block_id, "value": value,
                     "type": "button", "style": "primary" if action_id.endswith("approve") else "danger",
                     "text": {"type": "plain_text", "text": "Approve", "emoji": True}, "action_ts": str(time.time())}],
    }


def block_action(task_id: int | str, action_id: str, slack_user: str, *, team: str = "T0CELLGATE",
                 channel: str = "CPAY", message_ts: str = "1.000001") -> dict[str, Any]:
    return button_click(action_id, str(task_id), slack_user, team=team, channel=channel, message_ts=message_ts,
                        block_id=f"cellgate_review_{task_id}")


def view_submission(callback_id: str, private_metadata: str, values: dict[str, dict[str, Any]], slack_user: str, *,
                    team: str = "T0CELLGATE") -> dict[str, Any]:
    """A ``view_submission`` payload: ``values`` is the view's state, ``{block_id: {action_id: element state}}``."""
    return {
        "type": "view_submission",
        "team": {"id": team, "domain": "cellgate-test"},
        "user": {"id": slack_user, "username": slack_user.lower(), "name": slack_user.lower(), "team_id": team},
        "api_app_id": "A0CELLGATE",
        "trigger_id": f"{int(time.time())}.1.{uuid.uuid4().hex}",
        "view": {"id": "V0MODAL", "team_id": team, "type": "modal", "callback_id": callback_id,
                 "private_metadata": private_metadata, "hash": "1.abc", "state": {"values": values}},
        "response_urls": [],
    }


def reject_submission(task_id: int | str, reason: str, slack_user: str, *, team: str = "T0CELLGATE") -> dict[str, Any]:
    return view_submission("cellgate_reject", str(task_id),
                           {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}, slack_user, team=team)


def command(text: str, slack_user: str, *, team: str = "T0CELLGATE") -> str:
    """A ``/cellgate`` request body as Slack sends it."""
    return urlencode({"token": "unused", "team_id": team, "team_domain": "cellgate-test", "channel_id": "CPAY",
                      "channel_name": "reviews", "user_id": slack_user, "user_name": slack_user.lower(),
                      "command": "/cellgate", "text": text, "api_app_id": "A0CELLGATE",
                      "response_url": "https://hooks.slack.com/commands/T0CELLGATE/1/unused",
                      "trigger_id": f"{int(time.time())}.2.{uuid.uuid4().hex}"})


def post(gateway_url: str, path: str, body: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(gateway_url + path, content=body.encode(), headers=headers, timeout=30)


# ---------------------------------------------------------------------- the Events API
#: the app's bot user (``authorizations`` of every event; its own messages come back as events too)
BOT_USER = "UCELLGATEBOT"


def im_message(text: str, slack_user: str, *, team: str = "T0CELLGATE", channel: str | None = None,
               channel_type: str = "im", event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """An ``event_callback`` carrying a ``message.im`` event: ``slack_user`` wrote ``text`` in their DM
    with the app (channel ``D{slack_user}``); ``fields`` are more of the event's (``bot_id``, ``subtype``…)."""
    ts = f"{time.time():.6f}"
    event = {"type": "message", "channel": channel or f"D{slack_user}", "user": slack_user, "text": text, "ts": ts,
             "event_ts": ts, "channel_type": channel_type, "team": team, "client_msg_id": str(uuid.uuid4()),
             **fields}
    return {"token": "legacy-verification-token-unused", "team_id": team, "api_app_id": "A0CELLGATE", "event": event,
            "type": "event_callback", "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": int(time.time()), "event_context": "4-" + uuid.uuid4().hex,
            "authorizations": [{"enterprise_id": None, "team_id": team, "user_id": BOT_USER, "is_bot": True,
                                "is_enterprise_install": False}], "is_ext_shared_channel": False}


def event_body(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def sign_json(secret: str, body: str, timestamp: int | None = None, retry: int | None = None) -> dict[str, str]:
    """The headers Slack sends with an event (a JSON body); ``retry``: a redelivery's ``X-Slack-Retry-Num``."""
    headers = {**sign(secret, body, timestamp), "Content-Type": "application/json"}
    if retry is not None:
        headers.update({"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"})
    return headers


def send_event(gateway_url: str, secret: str, envelope: dict[str, Any], retry: int | None = None,
               timestamp: int | None = None) -> httpx.Response:
    """POST ``envelope`` to /slack/events, signed with ``secret`` as Slack signs it (at ``timestamp``: a
    redelivery is signed anew, so a second send of one envelope is no replay)."""
    body = event_body(envelope)
    return post(gateway_url, "/slack/events", body, sign_json(secret, body, timestamp, retry))
