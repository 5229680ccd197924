"""Slack's requests against the real gateway: signatures, replays, who may click what, the reject modal, /cellgate."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import httpx
from harness import CELLGATE, cli, wait_until
from slack_standin import Call, SlackStandIn, block_action, command, form, post, reject_submission, sign
from slack_world import SECRET, World, notice_of, start_slack_gateway


def click(world: World, task_id: int, action: str, slack_user: str, **kw: Any) -> httpx.Response:
    body = form(block_action(task_id, f"cellgate_{action}", slack_user, **kw))
    return post(world.gw.url, "/slack/interactions", body, sign(SECRET, body))


def ephemeral_to(standin: SlackStandIn, slack_user: str, contains: str) -> Call:
    return standin.wait_for("chat.postEphemeral", lambda c: contains in c.params.get("text", ""), user=slack_user)


def slash(world: World, text: str, slack_user: str) -> dict[str, Any]:
    body = command(text, slack_user)
    resp = post(world.gw.url, "/slack/commands", body, sign(SECRET, body))
    assert resp.status_code == 200, resp.text
    return resp.json()


def all_text(call_or_body: Any) -> str:
    return json.dumps(call_or_body.params if isinstance(call_or_body, Call) else call_or_body, ensure_ascii=False)


# ------------------------------------------------------------------------------ signatures
def test_forged_stale_unsigned_and_replayed_requests_are_refused(world: World) -> None:
    task = world.submit("dev", "payments", "UPDATE accounts SET balance = 0 WHERE id = 1", why="SUP-1")
    notice_of(world.standin, task["id"])
    body = form(block_action(task["id"], "cellgate_approve", "UREV"))

    forged = post(world.gw.url, "/slack/interactions", body, sign("not-the-secret", body))
    assert forged.status_code == 401 and "signature" in forged.json()["message"]
    stale = post(world.gw.url, "/slack/interactions", body, sign(SECRET, body, int(time.time()) - 360))
    assert stale.status_code == 401 and "5 minutes" in stale.json()["message"]
    unsigned = post(world.gw.url, "/slack/interactions", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert unsigned.status_code == 401
    tampered_headers = sign(SECRET, body)
    tampered = post(world.gw.url, "/slack/interactions", body.replace("UREV", "UDEV"), tampered_headers)
    assert tampered.status_code == 401
    assert world.task(task["id"])["status"] == "pending_review"  # nothing changed

    headers = sign(SECRET, body)
    first = post(world.gw.url, "/slack/interactions", body, headers)
    assert first.status_code == 200, first.text
    replay = post(world.gw.url, "/slack/interactions", body, headers)
    assert replay.status_code == 401 and "replay" in replay.json()["message"]
    wait_until(lambda: world.task(task["id"])["status"] == "succeeded", 30, "the approved task ran", world.gw.proc.log)

    cmd = command("help", "UDEV")
    cmd_headers = sign(SECRET, cmd)
    assert post(world.gw.url, "/slack/commands", cmd, cmd_headers).status_code == 200
    assert post(world.gw.url, "/slack/commands", cmd, cmd_headers).status_code == 401
    assert post(world.gw.url, "/slack/commands", cmd, sign(SECRET, cmd, int(time.time()) - 360)).status_code == 401


def test_without_a_signing_secret_every_slack_request_is_refused(tmp_path, standin: SlackStandIn) -> None:
    gw = start_slack_gateway(tmp_path, f"sqlite:///{tmp_path}/gw.db", {"api_url": standin.url}, bot_token=None)
    try:
        for path, body in (("/slack/interactions", form(block_action(1, "cellgate_approve", "UREV"))),
                           ("/slack/commands", command("help", "UREV"))):
            resp = post(gw.url, path, body, sign(SECRET, body))
            assert resp.status_code == 401
            assert "no signing secret is configured" in resp.json()["message"]
        log = gw.proc.log.read_text()
        assert "Slack review notices are off: no bot token" in log
    finally:
        gw.proc.stop()


# ------------------------------------------------------------------------ approve in Slack
def test_a_mapped_reviewer_approves_in_slack_and_the_run_is_reported(world: World) -> None:
    standin = world.standin
    env = {**os.environ, "CELLGATE_URL": world.gw.url, "CELLGATE_TOKEN": world.token("dev"), "CELLGATE_CONFIG_DIR": "/nonexistent"}
    run = subprocess.Popen([CELLGATE, "run", "--target", "payments", "--why", "SUP-42 refund",
                            "-e", "SELECT id, holder FROM accounts WHERE id <= 3"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        notice = standin.wait_for("chat.postMessage", lambda c: "thread_ts" not in c.params
                                  and "SUP-42 refund" in all_text(c))
        task_id = int(notice.params["text"].split("#")[1].split()[0])
        assert notice.params["channel"] == "CPAY" and notice.token and notice.token.startswith("xoxb-")
        shown = all_text(notice)
        for part in ("dev", "payments", "SELECT id, holder FROM accounts", "SUP-42 refund", "an approval from dba",
                     f"/tasks/{task_id}", "Awaiting review by dba"):
            assert part in shown, part
        buttons = [e for b in notice.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
        assert {(e["action_id"], e["value"]) for e in buttons} == {("cellgate_approve", str(task_id)),
                                                                   ("cellgate_reject", str(task_id))}

        # the author: refused (403), shown in Slack, nothing changes
        assert click(world, task_id, "approve", "UDEV").status_code == 200
        refused = ephemeral_to(standin, "UDEV", "403")
        assert "author" in refused.params["text"] and refused.params["channel"] == "CPAY"
        # someone outside the review groups: refused
        assert click(world, task_id, "approve", "UOPS").status_code == 200
        assert "not in a review group" in ephemeral_to(standin, "UOPS", "403").params["text"]
        # a Slack user linked to nobody: told how to get linked
        assert click(world, task_id, "approve", "UNOBODY").status_code == 200
        assert "cellgate slack link UNOBODY" in ephemeral_to(standin, "UNOBODY", "not linked").params["text"]
        assert world.task(task_id)["status"] == "pending_review"

        # a reviewer: approved, the notice updated in place, the run threaded, the author DM'ed
        assert click(world, task_id, "approve", "UREV").status_code == 200
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        assert "holder 3" in stdout
    finally:
        if run.poll() is None:
            run.kill()
    task = world.task(task_id)
    assert task["status"] == "succeeded" and task["reviews"][0]["user"] == "rev"

    channel, notice_ts = "CPAY", _ts_of(standin, task_id)
    standin.wait_for("chat.update", lambda c: "Approved by rev" in all_text(c), channel=channel, ts=notice_ts)
    final = standin.wait_for("chat.update", lambda c: "Succeeded" in all_text(c), channel=channel, ts=notice_ts)
    assert "actions" not in [b["type"] for b in final.params["blocks"]]  # no buttons once decided
    standin.wait_for("chat.postMessage", lambda c: "Approved by rev" in c.params["text"], channel=channel, thread_ts=notice_ts)
    result = standin.wait_for("chat.postMessage", lambda c: "Succeeded" in c.params["text"], channel=channel, thread_ts=notice_ts)
    assert "holder 3" in result.params["text"] and "3 rows" in result.params["text"]
    standin.wait_for("conversations.open", users="UDEV")
    mine = f"cellgate task #{task_id}>"
    standin.wait_for("chat.postMessage", lambda c: mine in c.params["text"] and "approved by rev" in c.params["text"], channel="DUDEV")
    standin.wait_for("chat.postMessage", lambda c: mine in c.params["text"] and "Succeeded" in c.params["text"], channel="DUDEV")
    time.sleep(0.5)  # each step is posted once
    assert len(standin.of("chat.postMessage", channel=channel, thread_ts=notice_ts)) == 2
    assert len([c for c in standin.of("chat.postMessage", channel="DUDEV") if mine in c.params["text"]]) == 2

    # the audit says who approved; the secrets never reach the log
    log = world.log()
    assert "approved from Slack by rev" in log
    assert SECRET not in log and "testbottokenvalue" not in log


def _ts_of(standin: SlackStandIn, task_id: int) -> str:
    """The ts the stand-in gave the notice (chat.update calls name it)."""
    update = standin.wait_for("chat.update", lambda c: c.params.get("text", "").startswith(f"cellgate task #{task_id} on "))
    return update.params["ts"]


# ------------------------------------------------------------------------ reject in Slack
def test_reject_opens_a_modal_and_its_submission_rejects_with_the_reason(world: World) -> None:
    standin = world.standin
    task = world.submit("dev", "py", "import os\nos.remove('/tmp/x')", why="cleanup")
    notice = notice_of(standin, task["id"])
    assert notice.params["channel"] == "CREVIEWS"  # py has no channel of its own: the default one

    # UREV2 is linked on first use: its Slack email equals rev2's verified email
    assert click(world, task["id"], "reject", "UREV2", channel="CREVIEWS").status_code == 200
    opened = standin.wait_for("views.open", lambda c: c.params["view"]["private_metadata"] == str(task["id"]))
    assert opened.params["view"]["callback_id"] == "cellgate_reject" and opened.params["trigger_id"]
    with world.gw.admin() as api:
        found = {(link["slack_user_id"], link["user"], link["how"]) for link in api.get("/api/v1/slack/links").json()["links"]}
    assert ("UREV2", "rev2", "email") in found

    # the author cannot reject through the modal either: the error shows in the form
    body = form(reject_submission(task["id"], "mine", "UDEV"))
    resp = post(world.gw.url, "/slack/interactions", body, sign(SECRET, body))
    assert resp.status_code == 200 and resp.json()["response_action"] == "errors"
    assert "403" in resp.json()["errors"]["reason"]
    # an empty reason is refused in the form
    body = form(reject_submission(task["id"], "  ", "UREV2"))
    resp = post(world.gw.url, "/slack/interactions", body, sign(SECRET, body))
    assert resp.json()["response_action"] == "errors"
    assert world.task(task["id"])["status"] == "pending_review"

    body = form(reject_submission(task["id"], "not on a Friday", "UREV2"))
    resp = post(world.gw.url, "/slack/interactions", body, sign(SECRET, body))
    assert resp.status_code == 200 and resp.content == b""  # the modal closes
    shown = world.task(task["id"])
    assert shown["status"] == "rejected" and shown["decided_by"] == "rev2" and shown["decision_comment"] == "not on a Friday"

    ts = standin.wait_for("chat.update", lambda c: "Rejected by rev2: not on a Friday" in all_text(c)).params["ts"]
    standin.wait_for("chat.postMessage", lambda c: "Rejected by rev2" in c.params["text"], thread_ts=ts)
    standin.wait_for("chat.postMessage", lambda c: f"cellgate task #{task['id']}>" in c.params["text"]
                     and "Rejected by rev2: not on a Friday" in c.params["text"], channel="DUDEV")

    # a second click on the decided task: refused with 409, visibly
    assert click(world, task["id"], "approve", "UREV", channel="CREVIEWS").status_code == 200
    assert "rejected" in ephemeral_to(world.standin, "UREV", "409").params["text"]


def test_an_unverified_email_links_nobody(world: World) -> None:
    task = world.submit("dev", "payments", "DELETE FROM accounts WHERE id = 20")
    notice_of(world.standin, task["id"])
    assert click(world, task["id"], "approve", "UUNVER").status_code == 200
    ephemeral_to(world.standin, "UUNVER", "not linked")
    assert world.task(task["id"])["status"] == "pending_review"
    with world.gw.admin() as api:
        assert "UUNVER" not in {link["slack_user_id"] for link in api.get("/api/v1/slack/links").json()["links"]}
        api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "test over"})


def test_a_removed_group_member_can_no_longer_approve(world: World) -> None:
    task = world.submit("dev", "payments", "UPDATE accounts SET holder = 'x' WHERE id = 19")
    notice_of(world.standin, task["id"])
    with world.gw.admin() as api:
        api.put("/api/v1/groups/dba/members/ops")
        api.delete("/api/v1/groups/dba/members/ops")
    assert click(world, task["id"], "approve", "UOPS").status_code == 200
    ephemeral_to(world.standin, "UOPS", "not in a review group")
    assert world.task(task["id"])["status"] == "pending_review"
    with world.api("dev") as api:
        api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "test over"})


# ------------------------------------------------------------------------------ /cellgate
def test_slash_command_answers_only_what_the_user_may_see(world: World) -> None:
    mine = world.submit("dev", "payments", "UPDATE accounts SET balance = 1 WHERE id = 2", why="mine")
    theirs = world.submit("rev", "payments", "UPDATE accounts SET balance = 2 WHERE id = 2", why="theirs")

    help_ = slash(world, "", "UNOBODY")
    assert help_["response_type"] == "ephemeral" and "/cellgate targets" in help_["text"]
    assert "not linked" in slash(world, "tasks", "UNOBODY")["text"]

    targets = slash(world, "targets", "UDEV")["text"]
    assert "payments" in targets and "py" in targets and "vault" not in targets
    assert "vault" in slash(world, "targets", "UREV")["text"]

    tasks = slash(world, "tasks", "UDEV")["text"]
    assert f"#{mine['id']}" in tasks and f"#{theirs['id']}" not in tasks

    one = slash(world, f"task {mine['id']}", "UDEV")
    assert "UPDATE accounts SET balance = 1" in all_text(one) and "cellgate_approve" not in all_text(one)
    assert slash(world, f"task {theirs['id']}", "UDEV")["text"] == f"task {theirs['id']} not found"
    assert "UPDATE accounts SET balance = 1" in all_text(slash(world, f"task {mine['id']}", "UREV"))  # a reviewer of it

    templates = slash(world, "templates", "UDEV")  # with their Run… buttons: test_slack_templates.py
    assert "fixes/note" in all_text(templates) and "ops/purge" not in all_text(templates)
    assert "unknown command" in slash(world, "frobnicate", "UDEV")["text"]
    for task, who in ((mine, "dev"), (theirs, "rev")):
        with world.api(who) as api:
            api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "test over"})


def test_links_admin_api_and_cli(world: World) -> None:
    with world.gw.admin() as api:
        assert api.put("/api/v1/slack/links/ULATER", json={"user": "ops", "team_id": "T0OTHER"}).status_code == 200
        assert api.put("/api/v1/slack/links/not-an-id", json={"user": "ops"}).status_code == 400
        assert api.put("/api/v1/slack/links/UNEW", json={"user": "nobody-here"}).status_code == 404
        links = {(link["slack_user_id"], link["team_id"]): link for link in api.get("/api/v1/slack/links").json()["links"]}
        assert links[("ULATER", "T0OTHER")]["how"] == "manual"
        assert api.delete("/api/v1/slack/links/ULATER", params={"team_id": "T0OTHER"}).status_code == 200
        assert api.delete("/api/v1/slack/links/ULATER", params={"team_id": "T0OTHER"}).status_code == 404
    with world.api("dev") as api:
        assert api.get("/api/v1/slack/links").status_code == 403
    # a link for another workspace does not map the same ID here
    out = cli(world.gw, world.gw.admin_token, "slack", "link", "UELSEWHERE", "rev", "--team", "T0OTHER")
    assert out.returncode == 0, out.stderr
    assert "not linked" in slash(world, "tasks", "UELSEWHERE")["text"]
    listed = cli(world.gw, world.gw.admin_token, "slack", "links")
    assert "UELSEWHERE" in listed.stdout and "T0OTHER" in listed.stdout
    out = cli(world.gw, world.gw.admin_token, "slack", "unlink", "UELSEWHERE", "--team", "T0OTHER")
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------ approvals count people
def _dual_target(world: World, name: str, review: dict[str, Any]) -> None:
    world.gw.user("both", ("dba", "sec"))  # one person in both review groups
    world.gw.user("seconly", ("sec",))
    for slack_id, user in (("UBOTH", "both"), ("USEC", "seconly")):
        cli(world.gw, world.gw.admin_token, "slack", "link", slack_id, user)  # (again: the link is kept)
    with world.gw.admin() as api:
        r = api.put(f"/api/v1/targets/{name}", json={"review_groups": ["dba", "sec"], "policy": {"review": review}})
        assert r.status_code == 200, r.text


def _cancel(world: World, task_id: int) -> None:
    with world.api("dev") as api:
        api.post(f"/api/v1/tasks/{task_id}/cancel", json={"reason": "test over"})


def test_one_person_in_both_groups_of_an_all_target_is_one_approval_in_slack(world: World) -> None:
    _dual_target(world, "dual", {"mode": "all"})
    task = world.submit("dev", "dual", "UPDATE accounts SET balance = 0 WHERE id = 2", why="SUP-7")
    try:
        notice_of(world.standin, task["id"])
        assert click(world, task["id"], "approve", "UBOTH").status_code == 200
        wait_until(lambda: world.task(task["id"])["reviews"], 20, "both's approval recorded", world.gw.proc.log)
        shown = world.task(task["id"])
        assert shown["status"] == "pending_review", shown
        assert any("already counts for" in m for m in shown["missing_approvals"]), shown["missing_approvals"]
        # a second person (rev: dba only) completes it: both is matched to sec
        assert click(world, task["id"], "approve", "UREV").status_code == 200
        wait_until(lambda: world.task(task["id"])["status"] == "approved", 20, "approved by two people", world.gw.proc.log)
    finally:
        _cancel(world, task["id"])


def test_count_two_with_one_person_in_two_groups_stays_pending_in_slack(world: World) -> None:
    _dual_target(world, "dualcount", {"mode": "count", "approvals": 2})
    task = world.submit("dev", "dualcount", "UPDATE accounts SET balance = 1 WHERE id = 3", why="SUP-8")
    try:
        notice_of(world.standin, task["id"])
        assert click(world, task["id"], "approve", "UBOTH").status_code == 200
        wait_until(lambda: world.task(task["id"])["reviews"], 20, "both's approval recorded", world.gw.proc.log)
        assert world.task(task["id"])["status"] == "pending_review"
        assert click(world, task["id"], "approve", "USEC").status_code == 200
        wait_until(lambda: world.task(task["id"])["status"] == "approved", 20, "approved by two people", world.gw.proc.log)
    finally:
        _cancel(world, task["id"])
