"""Slack speaks SQL in a direct message, against the real gateway and agent: events signed as Slack
signs them (``/slack/events``), the conversation (``help``, ``targets``, ``target NAME``), code run as a
task on the chosen target with its decision and result threaded under the message, and what is
refused or ignored (links Slack made, redeliveries, bots, channels, unsigned requests).

Target ``ledger`` (the agent's SQLite file ``world.ledger``, table ``entries``: ids 1-20, amount id × 100)
auto-approves read-only SQL and has dba review the rest; who may submit: developers, dba and ``dmers``.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from harness import wait_until
from slack_standin import BOT_USER, Call, block_action, event_body, form, im_message, post, send_event, sign, sign_json
from slack_world import SECRET, World, notice_of


@pytest.fixture(scope="module", autouse=True)
def ledger(world: World) -> None:
    world.gw.user("dana", ("dmers",))
    with world.gw.admin() as api:
        r = api.put("/api/v1/targets/ledger", json={"review_groups": ["dba"], "submit_groups": ["developers", "dba", "dmers"],
                                                     "policy": {"auto_approve": "read-only"}})
        assert r.status_code == 200, r.text
        assert api.put("/api/v1/slack/links/UDANA", json={"user": "dana"}).status_code == 200


# ------------------------------------------------------------------------------ helpers
@dataclass
class Sent:
    """A message sent to the app: its event, and how many Web API calls the stand-in had seen before."""

    envelope: dict[str, Any]
    since: int

    @property
    def ts(self) -> str:
        return str(self.envelope["event"]["ts"])

    @property
    def channel(self) -> str:
        return str(self.envelope["event"]["channel"])


def dm(world: World, slack_user: str, text: str, **kw: Any) -> Sent:
    """``slack_user`` sends ``text`` in their DM with the app (acknowledged with an empty 200)."""
    envelope = im_message(text, slack_user, **kw)
    since = len(world.standin.calls)
    resp = send_event(world.gw.url, SECRET, envelope)
    assert resp.status_code == 200 and resp.content == b"", resp.text
    return Sent(envelope, since)


def reply(world: World, sent: Sent, check: Callable[[str], bool] = lambda t: True, *, threaded: bool = False,
          timeout: float = 20) -> Call:
    """The app's answer to ``sent``: in the DM itself (posted since), or (``threaded``) in the message's thread."""
    def answered() -> Call | None:
        for call in list(world.standin.calls)[0 if threaded else sent.since:]:
            if (call.method == "chat.postMessage" and call.params.get("channel") == sent.channel
                    and call.params.get("thread_ts") == (sent.ts if threaded else None) and check(call.params["text"])):
                return call
        return None
    found: Call = wait_until(answered, timeout, f"a reply to {sent.envelope['event']['text']!r}", world.gw.proc.log)
    return found


def thread(world: World, sent: Sent) -> list[str]:
    return [c.params["text"] for c in world.standin.of("chat.postMessage", channel=sent.channel, thread_ts=sent.ts)]


def tasks_with(world: World, code: str) -> list[dict[str, Any]]:
    with sqlite3.connect(world.db, timeout=30) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM tasks WHERE code = ? ORDER BY id", (code,))]
    return [world.task(i) for i in ids]


def one_task(world: World, code: str, timeout: float = 20) -> dict[str, Any]:
    found = wait_until(lambda: tasks_with(world, code), timeout, f"a task of {code!r}", world.gw.proc.log)
    assert len(found) == 1, found
    return found[0]


def entry(world: World, entry_id: int) -> tuple[str, int] | None:
    """(note, amount) of the ledger's entry, read from the target database itself."""
    assert world.ledger is not None
    with sqlite3.connect(world.ledger, timeout=30) as conn:
        row = conn.execute("SELECT note, amount FROM entries WHERE id = ?", (entry_id,)).fetchone()
    return None if row is None else (row[0], row[1])


def choose(world: World, slack_user: str, target: str = "ledger") -> None:
    sent = dm(world, slack_user, f"target {target}")
    assert "now run on" in reply(world, sent, lambda t: "run on" in t or "may not" in t).params["text"]


def logged(world: World, text: str, timeout: float = 20) -> None:
    wait_until(lambda: text in world.log(), timeout, f"the gateway log saying {text!r}", world.gw.proc.log)


# ------------------------------------------------------------------------------ signatures and the URL
def test_slack_verifies_the_url_and_unsigned_forged_stale_and_replayed_events_are_refused(world: World) -> None:
    challenge = {"token": "unused", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}
    body = event_body(challenge)
    resp = post(world.gw.url, "/slack/events", body, sign_json(SECRET, body))
    assert resp.status_code == 200 and resp.json() == {"challenge": challenge["challenge"]}
    assert post(world.gw.url, "/slack/events", body, {"Content-Type": "application/json"}).status_code == 401

    code = "DELETE FROM entries WHERE id = 20"
    body = event_body(im_message(code, "UDEV"))
    unsigned = post(world.gw.url, "/slack/events", body, {"Content-Type": "application/json"})
    assert unsigned.status_code == 401 and "X-Slack-Signature" in unsigned.json()["message"]
    forged = post(world.gw.url, "/slack/events", body, sign_json("not-the-secret", body))
    assert forged.status_code == 401 and "signature" in forged.json()["message"]
    stale = post(world.gw.url, "/slack/events", body, sign_json(SECRET, body, int(time.time()) - 360))
    assert stale.status_code == 401 and "5 minutes" in stale.json()["message"]
    tampered = post(world.gw.url, "/slack/events", body.replace("UDEV", "UREV"), sign_json(SECRET, body))
    assert tampered.status_code == 401
    assert post(world.gw.url, "/slack/events", "not json", sign_json(SECRET, "not json")).status_code == 400
    # a cellgate token counts for nothing here
    resp = httpx.post(world.gw.url + "/slack/events", content=body.encode(), timeout=30,
                      headers={"Authorization": f"token {world.token('dev')}", "Content-Type": "application/json"})
    assert resp.status_code == 401

    ops = event_body(im_message(code, "UOPS"))  # ops never chooses a target: told how to
    headers = sign_json(SECRET, ops)
    since = len(world.standin.calls)
    assert post(world.gw.url, "/slack/events", ops, headers).status_code == 200
    replay = post(world.gw.url, "/slack/events", ops, headers)
    assert replay.status_code == 401 and "replay" in replay.json()["message"]
    world.standin.wait_for("chat.postMessage", lambda c: "choose a target first" in c.params["text"], channel="DUOPS")
    time.sleep(0.5)
    assert len([c for c in world.standin.calls[since:] if c.params.get("channel") == "DUOPS"]) == 1  # answered once
    assert tasks_with(world, code) == []
    assert entry(world, 20) == ("entry 20", 2000)


# ------------------------------------------------------------------------------ the conversation
def test_help_targets_and_target_choose_where_the_messages_run(world: World) -> None:
    help_ = reply(world, dm(world, "UNOBODY", "  HELP "), lambda t: "`target NAME`" in t)
    assert "code block" in help_.params["text"] and help_.token and help_.token.startswith("xoxb-")

    # not linked: the way out, and nothing else
    for text in ("targets", "target ledger", "SELECT 1"):
        sent = dm(world, "UNOBODY", text)
        said = reply(world, sent, lambda t: "not linked" in t, threaded=text == "SELECT 1").params["text"]
        assert "cellgate slack link UNOBODY" in said

    listed = reply(world, dm(world, "UOPS", "Targets"), lambda t: "Targets you may use" in t).params["text"]
    assert "*ledger*" not in listed and "*payments*" in listed  # ops may submit to payments (no submit groups), not ledger
    listed = reply(world, dm(world, "UREV2", "targets"), lambda t: "Targets you may use" in t).params["text"]
    assert "*ledger*" in listed and "*vault*" in listed and "reviewed by dba" in listed  # rev2: linked by verified email

    # a target one may not submit to (or none by that name): refused alike, not remembered
    assert "no target chosen yet" in reply(world, dm(world, "UOPS", "target"), lambda t: "target" in t).params["text"]
    for name in ("ledger", "vault", "nosuch"):
        refused = reply(world, dm(world, "UOPS", f"target {name}"), lambda t: "may not run code" in t).params["text"]
        assert f"`{name}`" in refused and "nothing changed" in refused
    assert "no target chosen yet" in reply(world, dm(world, "UOPS", "target"), lambda t: "target" in t).params["text"]

    chose = reply(world, dm(world, "UREV2", " TARGET  Ledger "), lambda t: "run on" in t).params["text"]
    assert chose.startswith("your messages now run on *ledger* (sql; reviewed by dba)")
    shown = reply(world, dm(world, "UREV2", "target"), lambda t: "run on" in t).params["text"]
    assert shown == "your messages run on *ledger* (sql; reviewed by dba)"
    refused = reply(world, dm(world, "UREV2", "target py-nope"), lambda t: "may not" in t).params["text"]
    assert "nothing changed" in refused
    assert "run on *ledger*" in reply(world, dm(world, "UREV2", "target"), lambda t: "run on" in t).params["text"]
    dm(world, "UREV2", "target", thread_ts="1700000000.000001")  # sent in a thread: answered there
    world.standin.wait_for("chat.postMessage", lambda c: "run on *ledger*" in c.params["text"], channel="DUREV2",
                           thread_ts="1700000000.000001")


# ------------------------------------------------------------------------------ code, threaded
def test_a_read_only_select_runs_at_once_and_its_result_is_threaded_under_the_message(world: World) -> None:
    choose(world, "UDEV")
    code = "SELECT id, note FROM entries WHERE id IN (2, 3) ORDER BY id"
    sent = dm(world, "UDEV", code)
    task = one_task(world, code)
    assert (task["user"], task["target"], task["kind"], task["why"]) == ("dev", "ledger", "script", "from Slack (direct message)")
    first = reply(world, sent, lambda t: f"cellgate task #{task['id']}>" in t, threaded=True).params["text"]
    assert "on *ledger*: approved" in first and "Approved by policy: read-only SQL is auto-approved" in first
    result = reply(world, sent, lambda t: "Succeeded" in t, threaded=True, timeout=60).params["text"]
    assert "2 rows" in result and "entry 2" in result and "entry 3" in result
    assert world.task(task["id"])["status"] == "succeeded"
    assert not [c for c in world.standin.of("chat.postMessage") if "thread_ts" not in c.params
                and c.params["text"].startswith(f"cellgate task #{task['id']} on ")]  # no review notice
    assert len(thread(world, sent)) == 2  # the decision, then the result: nothing twice
    log = world.log()
    assert "Traceback" not in log and SECRET not in log


def test_a_write_waits_for_review_and_the_decision_and_result_are_threaded(world: World) -> None:
    choose(world, "UDEV")
    code = "UPDATE entries SET amount = amount + 1 WHERE id = 7"
    sent = dm(world, "UDEV", code)
    task = one_task(world, code)
    first = reply(world, sent, lambda t: f"cellgate task #{task['id']}>" in t, threaded=True).params["text"]
    assert "pending review" in first and "Awaiting review by dba" in first and "an approval from dba" in first
    notice = notice_of(world.standin, task["id"])  # the reviewers' notice, as for any task
    assert notice.params["channel"] == "CREVIEWS" and "from Slack (direct message)" in str(notice.params["blocks"])
    body = form(block_action(task["id"], "cellgate_approve", "UDEV"))  # its author cannot approve it from Slack either
    assert post(world.gw.url, "/slack/interactions", body, sign(SECRET, body)).status_code == 200
    world.standin.wait_for("chat.postEphemeral", lambda c: "403" in c.params["text"], user="UDEV")
    assert world.task(task["id"])["status"] == "pending_review" and entry(world, 7) == ("entry 7", 700)

    body = form(block_action(task["id"], "cellgate_approve", "UREV"))
    assert post(world.gw.url, "/slack/interactions", body, sign(SECRET, body)).status_code == 200
    reply(world, sent, lambda t: t.startswith("✅ Approved by rev"), threaded=True)
    result = reply(world, sent, lambda t: "Succeeded" in t, threaded=True, timeout=60).params["text"]
    assert "in " in result
    texts = thread(world, sent)
    assert len(texts) == 3 and texts[0] == first, texts
    # the thread replaces the author's direct messages about this task
    assert not [c for c in world.standin.of("chat.postMessage", channel="DUDEV")
                if f"cellgate task #{task['id']}>" in c.params["text"] and "thread_ts" not in c.params]
    assert entry(world, 7) == ("entry 7", 701)  # ran once


def test_a_rejected_write_says_why_in_the_thread_and_never_runs(world: World) -> None:
    choose(world, "UDEV")
    code = "DELETE FROM entries WHERE id = 8"
    sent = dm(world, "UDEV", code)
    task = one_task(world, code)
    reply(world, sent, lambda t: "Awaiting review by dba" in t, threaded=True)
    with world.api("rev") as api:
        r = api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "reject", "comment": "not <today> & never"})
        assert r.status_code == 200, r.text
    said = reply(world, sent, lambda t: "Rejected" in t, threaded=True).params["text"]
    assert said == "🚫 Rejected by rev: not &lt;today&gt; &amp; never"
    assert world.task(task["id"])["status"] == "rejected"
    assert entry(world, 8) == ("entry 8", 800)


def test_a_code_block_and_slacks_entities_arrive_as_the_sql_typed(world: World) -> None:
    choose(world, "UDEV")
    typed = "SELECT id FROM entries WHERE amount < 250 AND note <> 'a&b' AND note <> '&lt;'"
    fenced = "```\nSELECT id FROM entries WHERE amount &lt; 250 AND note &lt;&gt; 'a&amp;b' AND note &lt;&gt; '&amp;lt;'\n```"
    sent = dm(world, "UDEV", fenced)
    task = one_task(world, typed)
    assert task["code"] == typed
    result = reply(world, sent, lambda t: "Succeeded" in t, threaded=True, timeout=60).params["text"]
    assert "2 rows" in result

    inline = "SELECT count(*) AS n FROM entries WHERE id > 18"
    sent = dm(world, "UDEV", f"`{inline}`")
    assert one_task(world, inline)["code"] == inline
    assert "1 row" in reply(world, sent, lambda t: "Succeeded" in t, threaded=True, timeout=60).params["text"]


@pytest.mark.parametrize("text", [
    "DELETE FROM entries WHERE note = '<mailto:x@example.com|x@example.com>' OR id = 9",
    "DELETE FROM entries WHERE id = 9 -- for <@UREV>",
    "DELETE FROM entries WHERE id = 9 -- see <https://example.com/x|example.com/x> and <#C0123|ops>",
    "look:\n```DELETE FROM entries WHERE id = 9```",
], ids=["email", "mention", "link-and-channel", "text-around-a-block"])
def test_a_message_slack_rewrote_is_refused_and_runs_nothing(world: World, text: str) -> None:
    choose(world, "UDEV")
    before = tasks_with(world, "DELETE FROM entries WHERE id = 9")
    sent = dm(world, "UDEV", text)
    said = reply(world, sent, lambda t: "cellgate refused this message" in t, threaded=True).params["text"]
    assert "code block" in said and "nothing was run" in said
    time.sleep(0.5)
    with sqlite3.connect(world.db, timeout=30) as conn:
        assert conn.execute("SELECT count(*) FROM tasks WHERE code LIKE '%entries WHERE%id = 9%'").fetchone()[0] == len(before)
    assert entry(world, 9) == ("entry 9", 900)


# ------------------------------------------------------------------------------ at most once; ignored
def test_a_redelivery_or_a_duplicate_event_creates_no_second_task(world: World) -> None:
    choose(world, "UDEV")
    code = "UPDATE entries SET amount = amount + 1 WHERE id = 10"
    envelope = im_message(code, "UDEV")
    sent = Sent(envelope, len(world.standin.calls))
    now = int(time.time())  # each delivery is signed anew (another timestamp): none of them is a replay
    # a redelivery (X-Slack-Retry-Num) is acknowledged and ignored, even the first one to arrive
    resp = send_event(world.gw.url, SECRET, envelope, retry=1, timestamp=now - 40)
    assert resp.status_code == 200 and resp.content == b""
    logged(world, f"Slack event {envelope['event_id']} is a redelivery (X-Slack-Retry-Num 1): ignored")
    assert tasks_with(world, code) == []

    assert send_event(world.gw.url, SECRET, envelope, timestamp=now - 30).status_code == 200
    task = one_task(world, code)
    reply(world, sent, lambda t: f"cellgate task #{task['id']}>" in t, threaded=True)
    for retry in (1, 2):
        assert send_event(world.gw.url, SECRET, envelope, retry=retry, timestamp=now - 20 + retry).status_code == 200
    # the same event ID delivered again without the header: handled once
    resp = send_event(world.gw.url, SECRET, envelope, timestamp=now - 10)
    assert resp.status_code == 200 and resp.content == b""
    logged(world, f"Slack event {envelope['event_id']} was delivered again; handled once")
    with world.api("rev") as api:
        assert api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "approve"}).status_code == 200
    reply(world, sent, lambda t: "Succeeded" in t, threaded=True, timeout=60)
    assert [t["id"] for t in tasks_with(world, code)] == [task["id"]]
    assert len(thread(world, sent)) == 3
    assert entry(world, 10) == ("entry 10", 1001)  # ran exactly once


def test_bot_edited_and_channel_messages_are_ignored(world: World) -> None:
    choose(world, "UDEV")
    code = "UPDATE entries SET amount = 0 WHERE id = 11"
    ignored = [
        im_message(code, BOT_USER),  # the app's own message, as its events carry it
        im_message(code, "UDEV", bot_id="B0CELLGATE"),
        im_message(code, "UDEV", subtype="bot_message"),
        im_message(code, "UDEV", subtype="message_changed", message={"text": code, "user": "UDEV"}),
        im_message(code, "UDEV", channel="CPAY", channel_type="channel"),  # a channel the bot is in
        im_message(code, "UDEV", channel="GPRIV", channel_type="group"),
        im_message(code, "UDEV", channel="GMPIM", channel_type="mpim"),
        {**im_message(code, "UDEV"), "type": "app_rate_limited"},
    ]
    for envelope in ignored:
        resp = send_event(world.gw.url, SECRET, envelope)
        assert resp.status_code == 200 and resp.content == b""
    # the events are picked before the answer: a message sent after them is answered, they never are
    last = dm(world, "UDEV", "target")
    reply(world, last, lambda t: "run on *ledger*" in t)
    time.sleep(0.5)
    for envelope in ignored:
        assert not world.standin.of("chat.postMessage", thread_ts=envelope["event"]["ts"])
    assert not world.standin.of("chat.postMessage", channel="GPRIV") and not world.standin.of("chat.postMessage", channel="GMPIM")
    assert tasks_with(world, code) == []
    assert entry(world, 11) == ("entry 11", 1100)


# ------------------------------------------------------------------------------ authorization
def test_code_without_a_chosen_target_or_a_link_is_refused_with_the_way_out(world: World) -> None:
    code = f"DELETE FROM entries WHERE id = 12 -- {uuid.uuid4().hex}"
    unlinked = dm(world, "UNOBODY", code)
    assert "cellgate slack link UNOBODY" in reply(world, unlinked, lambda t: "not linked" in t, threaded=True).params["text"]
    no_target = dm(world, "UOPS", code)
    said = reply(world, no_target, lambda t: "choose a target first" in t, threaded=True).params["text"]
    assert "`target NAME`" in said
    time.sleep(0.5)
    assert tasks_with(world, code) == []
    assert entry(world, 12) == ("entry 12", 1200)


def test_someone_removed_from_the_submit_groups_after_choosing_gets_a_denied_task(world: World) -> None:
    """The gate decides each message anew: a ``denied`` task (audited, as from the CLI), told in the thread."""
    choose(world, "UDANA")
    with world.gw.admin() as api:
        assert api.delete("/api/v1/groups/dmers/members/dana").status_code == 200
    code = "UPDATE entries SET amount = 0 WHERE id = 13"
    sent = dm(world, "UDANA", code)
    task = one_task(world, code)
    assert (task["user"], task["status"], task["target"]) == ("dana", "denied", "ledger")
    said = reply(world, sent, lambda t: "denied by policy" in t, threaded=True).params["text"]
    assert said.startswith(f"cellgate refused (403): task #{task['id']} was denied by policy: dana may not run code on ledger")
    shown = reply(world, dm(world, "UDANA", "target"), lambda t: "run on" in t).params["text"]
    assert "you may no longer run code there" in shown
    assert "may not run code" in reply(world, dm(world, "UDANA", "target ledger"), lambda t: "may not" in t).params["text"]
    with sqlite3.connect(world.db, timeout=30) as conn:
        audited = [(r[0], r[1]) for r in conn.execute("SELECT actor, detail FROM audit_events WHERE task_id = ?", (task["id"],))]
    assert any(actor == "dana" for actor, _ in audited) and "may not run code on ledger" in str(audited)
    time.sleep(0.5)
    assert len(thread(world, sent)) == 1
    assert entry(world, 13) == ("entry 13", 1300)
