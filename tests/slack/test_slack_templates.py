"""Running a template from Slack, against the real gateway and agent: ``/cellgate templates`` lists
Run… buttons, a click opens a modal built from the template's declarations, its submission runs the
template through the function the REST API uses, and the result is threaded under the announcement.

The submissions are what Slack would send for the modal the gateway opened (``fill``), or forged
(a template, target or commit the form never offered): the gateway checks everything again.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest
from slack_standin import Call, button_click, command, form, post, sign, view_submission
from slack_world import SECRET, World, start_slack_gateway

RUN, MODAL = "cellgate_template_run", "cellgate_template_run_modal"
HOSTILE = "x'); DROP TABLE accounts; --\n\"quoted\" `id` $(id) %s :note ☃ \u202e 𝔘"


@pytest.fixture(scope="module", autouse=True)
def tplvault(world: World) -> None:
    """A SQL target ``fixes/note`` names, for dba only (no agent serves it)."""
    with world.gw.admin() as api:
        r = api.put("/api/v1/targets/tplvault", json={"kind": "sql", "dialect": "sqlite", "review_groups": ["dba"],
                                                       "submit_groups": ["dba"]})
        assert r.status_code == 200, r.text


# ------------------------------------------------------------------------------ helpers
def slash(world: World, text: str, slack_user: str) -> dict[str, Any]:
    body = command(text, slack_user)
    resp = post(world.gw.url, "/slack/commands", body, sign(SECRET, body))
    assert resp.status_code == 200, resp.text
    return resp.json()


def interact(world: World, payload: dict[str, Any]) -> httpx.Response:
    body = form(payload)
    return post(world.gw.url, "/slack/interactions", body, sign(SECRET, body))


def open_form(world: World, slack_user: str, template: str = "fixes/note") -> dict[str, Any]:
    """Click the template's Run… button; the view the gateway opened (views.open with the click's trigger_id)."""
    click = button_click(RUN, template, slack_user)
    assert interact(world, click).status_code == 200
    opened = world.standin.wait_for("views.open", trigger_id=click["trigger_id"])
    return opened.params["view"]


def blocks_of(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if "block_id" in b}


def _initial(element: dict[str, Any]) -> str | None:
    option = element.get("initial_option")
    return option["value"] if option else element.get("initial_date") or element.get("initial_value")


def _state(element_type: str, value: str | None) -> dict[str, Any]:
    if element_type == "static_select":
        return {"type": element_type, "selected_option": None if value is None else
                {"text": {"type": "plain_text", "text": value, "emoji": True}, "value": value}}
    if element_type == "datepicker":
        return {"type": element_type, "selected_date": value}
    return {"type": element_type, "value": value}


def fill(view: dict[str, Any], answers: dict[str, str | None]) -> dict[str, dict[str, Any]]:
    """The state Slack sends for ``view`` filled in: ``answers`` by block_id (None: emptied), else each initial value."""
    values = {}
    for block in view["blocks"]:
        if block["type"] == "input":
            element = block["element"]
            given = answers[block["block_id"]] if block["block_id"] in answers else _initial(element)
            values[block["block_id"]] = {"value": _state(element["type"], given)}
    return values


def submit(world: World, slack_user: str, values: dict[str, dict[str, Any]], *, template: str = "fixes/note",
           commit: str | None = None) -> httpx.Response:
    metadata = json.dumps({"template": template, "commit": world.templates_commit if commit is None else commit})
    return interact(world, view_submission(MODAL, metadata, values, slack_user))


def task_count(world: World) -> int:
    with sqlite3.connect(world.db, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])


def task_by_why(world: World, why: str) -> dict[str, Any]:
    with sqlite3.connect(world.db, timeout=30) as conn:
        rows = conn.execute("SELECT id FROM tasks WHERE why = ?", (why,)).fetchall()
    assert len(rows) == 1, rows
    return world.task(int(rows[0][0]))


def errors(resp: httpx.Response) -> dict[str, str]:
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["response_action"] == "errors", body
    return body["errors"]


def announcement(world: World, task_id: int, slack_user: str = "UDEV") -> Call:
    return world.standin.wait_for("chat.postMessage", lambda c: "thread_ts" not in c.params
                                  and f"cellgate task #{task_id}>" in c.params["text"]
                                  and "was submitted" in c.params["text"], channel=f"D{slack_user}")


GOOD = {"param_id": "7", "param_note": HOSTILE, "param_reason": "fraud", "param_day": "2024-06-30", "param_amount": "2.5",
        "param_dry": "false", "param_ticket": "SUP-9"}


# ------------------------------------------------------------------------------ tests
def test_the_listing_has_a_run_button_for_each_template_one_may_run(world: World) -> None:
    def buttons(slack_user: str) -> list[tuple[str, str]]:
        answer = slash(world, "templates", slack_user)
        assert answer["response_type"] == "ephemeral"
        return [(b["accessory"]["action_id"], b["accessory"]["value"]) for b in answer.get("blocks", []) if "accessory" in b]

    assert buttons("UDEV") == [(RUN, "fixes/note")]
    assert buttons("UOPS") == [(RUN, "ops/purge")]
    answer = slash(world, "templates", "UDEV")
    assert "Note a refund &lt;b&gt;" in json.dumps(answer) and "cellgate templates run fixes/note -t TARGET" in answer["text"]
    assert "not linked" in slash(world, "templates", "UNOBODY")["text"]


def test_the_run_button_opens_a_modal_built_from_the_declarations(world: World) -> None:
    view = open_form(world, "UDEV")
    assert view["callback_id"] == MODAL and view["type"] == "modal"
    assert json.loads(view["private_metadata"]) == {"template": "fixes/note", "commit": world.templates_commit}
    blocks = blocks_of(view)
    assert list(blocks) == ["cellgate_target", "param_id", "param_note", "param_reason", "param_day", "param_amount",
                            "param_dry", "param_ticket", "cellgate_why"]
    # the targets: of the template's, those of its kind (not py) that dev may submit to (not tplvault)
    target = blocks["cellgate_target"]["element"]
    assert [o["value"] for o in target["options"]] == ["payments"] and target["initial_option"]["value"] == "payments"
    elements = {name: b["element"] for name, b in blocks.items()}
    assert elements["param_id"] == {"type": "number_input", "action_id": "value", "is_decimal_allowed": False}
    assert not blocks["param_id"]["optional"] and blocks["param_id"]["hint"]["text"] == "the refund's id"
    assert elements["param_note"]["type"] == "plain_text_input" and "initial_value" not in elements["param_note"]
    assert not blocks["param_note"]["optional"]
    assert elements["param_reason"]["type"] == "static_select" and blocks["param_reason"]["optional"]
    assert [o["value"] for o in elements["param_reason"]["options"]] == ["duplicate", "fraud"]
    assert elements["param_reason"]["initial_option"]["value"] == "duplicate"
    assert elements["param_day"] == {"type": "datepicker", "action_id": "value", "initial_date": "2024-05-01"}
    assert elements["param_amount"]["type"] == "number_input" and elements["param_amount"]["is_decimal_allowed"] is True
    assert blocks["param_amount"]["optional"] and blocks["param_amount"]["hint"]["text"] == "in euros"
    assert [o["value"] for o in elements["param_dry"]["options"]] == ["true", "false"]
    assert elements["param_dry"]["initial_option"]["value"] == "true"
    assert blocks["param_ticket"]["hint"]["text"] == "the ticket (must match [A-Z]+-[0-9]+)"
    assert blocks["cellgate_why"]["optional"] and elements["cellgate_why"]["multiline"]

    # a reviewer in dba may also submit to tplvault: offered, with no target chosen for them
    target = blocks_of(open_form(world, "UREV"))["cellgate_target"]["element"]
    assert [o["value"] for o in target["options"]] == ["payments", "tplvault"] and "initial_option" not in target

    # a template one may not run: no form, a refusal only they see
    click = button_click(RUN, "ops/purge", "UDEV")
    assert interact(world, click).status_code == 200
    refused = world.standin.wait_for("chat.postEphemeral", lambda c: "ops/purge" in c.params["text"], user="UDEV")
    assert "404" in refused.params["text"] and refused.params["channel"] == "CPAY"
    assert not world.standin.of("views.open", trigger_id=click["trigger_id"])


def test_refused_submissions_show_the_error_on_their_field_and_create_no_task(world: World) -> None:
    view = open_form(world, "UDEV")
    before = task_count(world)

    assert "must be a whole number" in errors(submit(world, "UDEV", fill(view, {**GOOD, "param_id": "abc"})))["param_id"]
    assert "must match [A-Z]+-[0-9]+" in errors(submit(world, "UDEV", fill(view, {**GOOD, "param_ticket": "nope"})))[
        "param_ticket"]
    assert "is required" in errors(submit(world, "UDEV", fill(view, {**GOOD, "param_note": None})))["param_note"]
    forged = {**fill(view, GOOD), "param_evil": {"value": {"type": "plain_text_input", "value": "1"}}}
    assert "no such parameter" in errors(submit(world, "UDEV", forged))["param_evil"]
    # no form the gateway opened names these: it checks again
    assert "not linked" in errors(submit(world, "UNOBODY", fill(view, GOOD)))["cellgate_target"]
    purge = errors(submit(world, "UDEV", fill(view, GOOD), template="ops/purge"))["cellgate_target"]
    assert "404" in purge and "no template 'ops/purge'" in purge
    wrong_kind = errors(submit(world, "UDEV", fill(view, {**GOOD, "cellgate_target": "py"})))["cellgate_target"]
    assert "400" in wrong_kind and "target py is python" in wrong_kind
    elsewhere = errors(submit(world, "UDEV", fill(view, {**GOOD, "cellgate_target": "vault"})))["cellgate_target"]
    assert "403" in elsewhere and "not on vault" in elsewhere
    stale = errors(submit(world, "UDEV", fill(view, GOOD), commit="0" * 40))["cellgate_target"]
    assert "the template changed since this form was opened" in stale
    resp = interact(world, view_submission(MODAL, "not json", fill(view, GOOD), "UDEV"))
    assert "does not name a template" in errors(resp)["cellgate_target"]
    assert task_count(world) == before

    # a target the template runs on but dev may not submit to: refused as the REST API refuses it
    # (a denied task records the attempt), shown in the form, never run nor announced
    denied = errors(submit(world, "UDEV", fill(view, {**GOOD, "cellgate_target": "tplvault"})))["cellgate_target"]
    assert "403" in denied and "denied by policy" in denied and "may not run code on tplvault" in denied
    assert task_count(world) == before + 1
    assert "Traceback" not in world.log()


def test_a_good_submission_runs_as_the_api_does_and_the_result_is_threaded(world: World) -> None:
    view = open_form(world, "UDEV")
    why = "SUP-9; 'why' ☃\nsecond line"
    resp = submit(world, "UDEV", fill(view, {**GOOD, "cellgate_why": why}))
    assert resp.status_code == 200 and resp.content == b""  # the modal closes
    task = task_by_why(world, why)
    assert task["user"] == "dev" and task["target"] == "payments" and task["status"] == "pending_review"
    assert task["template"] == {"name": "fixes/note", "path": "fixes/note.sql", "commit": world.templates_commit, "parameters": [
        {"name": "id", "type": "integer", "value": 7}, {"name": "note", "type": "text", "value": HOSTILE},
        {"name": "reason", "type": "select", "value": "fraud"}, {"name": "day", "type": "date", "value": "2024-06-30"},
        {"name": "amount", "type": "number", "value": 2.5}, {"name": "dry", "type": "boolean", "value": False},
        {"name": "ticket", "type": "text", "value": "SUP-9"}]}
    # the same values through the REST API: the same template record and code
    with world.api("dev") as api:
        r = api.post("/api/v1/template-runs", json={"template": "fixes/note", "target": "payments", "why": "REST twin",
                                                    "parameters": {k.removeprefix("param_"): v for k, v in GOOD.items()}})
        assert r.status_code == 201, r.text
        twin = r.json()
        api.post(f"/api/v1/tasks/{twin['id']}/cancel", json={"reason": "test over"})
    assert twin["template"] == task["template"] and twin["code"] == task["code"]
    assert HOSTILE not in task["code"]  # bound by the driver, never pasted in

    head = announcement(world, task["id"])
    assert "(template *fixes/note* on *payments*) was submitted (status pending review)" in head.params["text"]
    assert head.token and head.token.startswith("xoxb-")
    with world.api("rev") as api:
        r = api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "approve", "comment": "ok"})
        assert r.status_code == 200, r.text
    thread = {"channel": "DUDEV", "thread_ts": head.answer["ts"]}
    world.standin.wait_for("chat.postMessage", lambda c: "Approved by rev" in c.params["text"], **thread)
    result = world.standin.wait_for("chat.postMessage", lambda c: "Succeeded" in c.params["text"], timeout=60, **thread)
    assert "DROP TABLE accounts" in result.params["text"] and "☃" in result.params["text"]
    assert world.task(task["id"])["status"] == "succeeded"
    # the thread tells the author: no separate direct messages about this task
    loose = [c for c in world.standin.of("chat.postMessage", channel="DUDEV")
             if f"cellgate task #{task['id']}>" in c.params["text"] and "thread_ts" not in c.params]
    assert loose == [head]
    log = world.log()
    assert SECRET not in log and "testbottokenvalue" not in log and "Traceback" not in log


def test_a_cancelled_run_gets_its_final_status_in_the_thread(world: World) -> None:
    view = open_form(world, "UDEV")
    why = "to be cancelled"
    assert submit(world, "UDEV", fill(view, {**GOOD, "cellgate_why": why})).status_code == 200
    task = task_by_why(world, why)
    head = announcement(world, task["id"])
    with world.api("dev") as api:
        assert api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "wrong refund"}).status_code == 200
    world.standin.wait_for("chat.postMessage", lambda c: "Cancelled by dev: wrong refund" in c.params["text"],
                           channel="DUDEV", thread_ts=head.answer["ts"])


def test_every_template_request_needs_slacks_signature(world: World) -> None:
    click = button_click(RUN, "fixes/note", "UDEV")
    body = form(click)
    assert post(world.gw.url, "/slack/interactions", body, {"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
    assert post(world.gw.url, "/slack/interactions", body, sign("not-the-secret", body)).status_code == 401
    before = task_count(world)
    body = form(view_submission(MODAL, json.dumps({"template": "fixes/note", "commit": world.templates_commit}),
                                {"cellgate_target": {"value": _state("static_select", "payments")},
                                 "param_id": {"value": _state("number_input", "1")},
                                 "param_note": {"value": _state("plain_text_input", "unsigned")}}, "UDEV"))
    assert post(world.gw.url, "/slack/interactions", body, {"Content-Type": "application/x-www-form-urlencoded"}).status_code == 401
    assert task_count(world) == before
    assert not world.standin.of("views.open", trigger_id=click["trigger_id"])


def test_without_templates_configured_slack_says_so(tmp_path, world: World) -> None:
    gw = start_slack_gateway(tmp_path, f"sqlite:///{tmp_path}/gw.db", {"signing_secret": SECRET, "api_url": world.standin.url})
    try:
        body = command("templates", "UDEV")
        answer = post(gw.url, "/slack/commands", body, sign(SECRET, body)).json()
        assert "not linked" in answer["text"]  # a gateway of its own: no links yet
        gw.user("dev", ("developers",))
        with gw.admin() as api:
            assert api.put("/api/v1/slack/links/UDEV", json={"user": "dev"}).status_code == 200
        body = command("templates", "UDEV")
        answer = post(gw.url, "/slack/commands", body, sign(SECRET, body)).json()
        assert answer["text"].startswith("templates are not configured: set c.Templates.repository")
        payload = view_submission(MODAL, json.dumps({"template": "fixes/note", "commit": "0" * 40}), {}, "UDEV")
        body = form(payload)
        resp = post(gw.url, "/slack/interactions", body, sign(SECRET, body))
        assert "templates are not configured" in resp.json()["errors"]["cellgate_target"]
    finally:
        gw.proc.stop()
