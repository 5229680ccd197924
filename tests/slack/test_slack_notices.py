"""Review notices: what they show, and that a failing or absent Slack never holds a task."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest
from harness import CELLGATE, agent_config, create_pg_database, drop_pg_database, start_agent, wait_online, wait_until
from slack_standin import SlackStandIn, block_action, form, post, sign
from slack_world import SECRET, World, notice_of, seed, set_email, slack_config, start_slack_gateway


def run_in_background(world: World, target: str, code: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CELLGATE_URL": world.gw.url, "CELLGATE_TOKEN": world.token("dev"), "CELLGATE_CONFIG_DIR": "/nonexistent"}
    return subprocess.Popen([CELLGATE, "run", "--target", target, "-e", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def approve_from_api(world: World, code: str) -> int:
    """Approve (as rev, through the API) the pending task with this code; its id."""
    def pending() -> int | None:
        with world.api("rev") as api:
            found = [t for t in api.get("/api/v1/reviews").json()["tasks"] if t["code"] == code]
        return found[0]["id"] if found else None
    task_id = wait_until(pending, 30, f"a pending task running {code!r}")
    with world.api("rev") as api:
        r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "ok"})
        assert r.status_code == 200, r.text
    return task_id


def test_the_notice_shows_risk_and_cuts_long_code_with_a_link(world: World) -> None:
    code = "UPDATE accounts SET holder = 'x' WHERE id = 5;\n" + "".join(f"-- note {i:04d} <&>\n" for i in range(200))
    task = world.submit("dev", "payments", code, why="long <one>")
    notice = notice_of(world.standin, task["id"])
    code_block = next(b["text"]["text"] for b in notice.params["blocks"] if b.get("text", {}).get("text", "").startswith("```"))
    assert "cut:" in code_block and f"/tasks/{task['id']}|See the whole task" in code_block
    assert len(code_block) < 3000 and "&lt;&amp;&gt;" in code_block and "<&>" not in code_block
    text = json.dumps(notice.params)
    assert "long &lt;one&gt;" in text
    assert "Risk" in text and "UPDATE" in text  # the risk level and its reasons
    with world.api("dev") as api:
        api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "test over"})
    # cancelled by its author: the notice says so, in place, and in its thread; no DM to the author about it
    world.standin.wait_for("chat.update", lambda c: c.params["text"].startswith(f"cellgate task #{task['id']} on")
                           and "Cancelled by dev: test over" in json.dumps(c.params), ts=notice_ts(world, task["id"]))
    world.standin.wait_for("chat.postMessage", lambda c: "Cancelled by dev" in c.params["text"], thread_ts=notice_ts(world, task["id"]))
    assert not [c for c in world.standin.of("chat.postMessage", channel="DUDEV") if f"cellgate task #{task['id']}>" in c.params["text"]]


def notice_ts(world: World, task_id: int) -> str:
    return world.standin.wait_for("chat.update", lambda c: c.params["text"].startswith(f"cellgate task #{task_id} on")).params["ts"]


def test_an_unlinked_author_is_found_by_verified_email_for_direct_messages(world: World) -> None:
    token = world.gw.user("dev3", ("developers",))
    set_email(world.db, "dev3", "dev3@example.com", True)
    with world.gw.api(token) as api:
        task = api.post("/api/v1/tasks", json={"target": "payments", "code": "DELETE FROM accounts WHERE id = 18"}).json()
    notice_of(world.standin, task["id"])
    with world.api("rev") as api:
        assert api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "reject", "comment": "no"}).status_code == 200
    world.standin.wait_for("users.lookupByEmail", email="dev3@example.com")
    world.standin.wait_for("chat.postMessage", lambda c: f"cellgate task #{task['id']}>" in c.params["text"]
                           and "Rejected by rev: no" in c.params["text"], channel="DUDEV3")
    with world.gw.admin() as api:
        links = {(link["slack_user_id"], link["user"], link["how"]) for link in api.get("/api/v1/slack/links").json()["links"]}
    assert ("UDEV3", "dev3", "email") in links


def test_slack_answering_500_or_down_never_holds_a_task(world: World) -> None:
    standin = world.standin
    standin.fail_with = 500
    try:
        run = run_in_background(world, "py", "print('despite slack 500')")
        approve_from_api(world, "print('despite slack 500')")
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        assert "despite slack 500" in stdout
        wait_until(lambda: "review notice not posted" in world.log(), 20, "the Slack failure logged", world.gw.proc.log)
        assert "HTTP 500" in world.log() and "after 3 attempts" in world.log()
        attempts = [c for c in standin.of("chat.postMessage") if "despite slack 500" in json.dumps(c.params)]
        assert len(attempts) == 3  # three attempts, then given up
    finally:
        standin.fail_with = None

    standin.down()
    try:
        run = run_in_background(world, "py", "print('despite slack down')")
        approve_from_api(world, "print('despite slack down')")
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 0, stderr
        assert "despite slack down" in stdout
        wait_until(lambda: world.log().count("review notice not posted") >= 2, 20, "the Slack failure logged", world.gw.proc.log)
    finally:
        standin.up()
    # Slack is back: the next task gets its notice again
    task = world.submit("dev", "payments", "UPDATE accounts SET balance = 3 WHERE id = 3")
    notice_of(standin, task["id"])
    with world.api("dev") as api:
        api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "test over"})


@pytest.mark.postgres
def test_approve_in_slack_with_a_postgresql_store(tmp_path, standin: SlackStandIn) -> None:
    url = create_pg_database()
    gw = start_slack_gateway(tmp_path, url, slack_config(standin, channels={"py": "CPG"}))
    agent = None
    try:
        seed(gw)
        agent = start_agent(gw, tmp_path, agent_config(tmp_path / "agent.toml", "pg-agent", {"py": {"kind": "python"}}), "pg-agent")
        wait_online(gw, ["py"], agent.log)
        with gw.api(gw.tokens["dev"]) as api:
            task = api.post("/api/v1/tasks", json={"target": "py", "code": "print(6 * 7)", "why": "pg"}).json()
        notice = standin.wait_for("chat.postMessage", lambda c: c.params["text"].startswith(f"cellgate task #{task['id']} on"),
                                  channel="CPG")
        assert notice
        body = form(block_action(task["id"], "cellgate_approve", "UREV", channel="CPG"))
        assert post(gw.url, "/slack/interactions", body, sign(SECRET, body)).status_code == 200

        def done() -> bool:
            with gw.admin() as api:
                return api.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "succeeded"
        wait_until(done, 30, "the task approved in Slack ran", gw.proc.log)
        standin.wait_for("chat.update", lambda c: "Approved by rev" in json.dumps(c.params) and "Succeeded" in json.dumps(c.params),
                         channel="CPG")
        result = standin.wait_for("chat.postMessage", lambda c: "Succeeded" in c.params["text"], channel="CPG")
        assert "42" in result.params["text"] and result.params.get("thread_ts")
    finally:
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        drop_pg_database(url)


def _notice_ts(db, task_id: int) -> str:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT ts FROM slack_messages WHERE task_id = ?", (task_id,)).fetchone()
    return row[0] if row else ""


def test_a_restarted_gateway_catches_up_with_changes_made_meanwhile(tmp_path, standin: SlackStandIn) -> None:
    """A notice still showing "awaiting review" is brought up to date at start (here: cancelled by another process)."""
    db = tmp_path / "gw.db"
    config = slack_config(standin, channels={"payments": "CRESTART"})
    gw = start_slack_gateway(tmp_path, f"sqlite:///{db}", config)
    try:
        gw.set_target("payments", review_groups=["dba"])
        with gw.admin() as api:
            task = api.post("/api/v1/tasks", json={"target": "payments", "code": "DELETE FROM t WHERE id = 1"}).json()
        notice = standin.wait_for("chat.postMessage", channel="CRESTART")
        assert notice.params["text"].startswith(f"cellgate task #{task['id']} on")
        # the gateway records the message's ts once Slack answered: only then can a later start update it
        wait_until(lambda: _notice_ts(db, task["id"]), 20, "the notice's ts recorded", gw.proc.log)
    finally:
        gw.proc.stop()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE tasks SET status = 'cancelled', decided_by = 'ops-script', decision_comment = 'window closed' "
                     "WHERE id = ?", (task["id"],))
    gw = start_slack_gateway(tmp_path, f"sqlite:///{db}", config)
    try:
        update = standin.wait_for("chat.update", lambda c: "Cancelled by ops-script: window closed" in json.dumps(c.params),
                                  channel="CRESTART")
        assert not [b for b in update.params["blocks"] if b["type"] == "actions"]
    finally:
        gw.proc.stop()
