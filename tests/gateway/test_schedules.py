"""Schedules end to end: real gateways (two replicas on one PostgreSQL store), a real git repository,
a real agent with a PostgreSQL target, reviewers over REST, the CLI, the Slack stand-in.

A schedule is reviewed once, as rendered; each due run is a task approved by that review, with the
code that was reviewed, audited as such, its result posted to Slack; a commit that changes the
template suspends it until it is approved again; a run missed while the gateway was away runs
once or is skipped, as the schedule says; two replicas never start one occurrence twice. Time is
moved by setting a schedule's ``next_run_at`` in the store (cron's minutes are too slow for tests).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from databases import PG_URL
from gitrepo import commit, new_repo
from readonly_roles import pg_readonly_url
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))  # harness: how the e2e tests start gateways and agents
sys.path.insert(0, str(Path(__file__).parents[1] / "slack"))

from harness import (CELLGATE, Gateway, Proc, agent_config, cli, create_pg_database, drop_pg_database, free_port, spawn,
                     start_agent, start_gateway, wait_online, wait_until)
from slack_standin import SlackStandIn

TABLE = f"cg_sched_{uuid.uuid4().hex[:8]}"
BOT = "xoxb-000000000000-000000000000-schedulebottoken"


def note_template(extra: str = "") -> bytes:
    return f"""-- ---
-- description: Count a tick
-- groups: [support]
-- targets: [pg]
-- parameters:
--   label: {{type: text, required: true}}
-- ---
INSERT INTO {TABLE} (label) VALUES ({{{{ label }}}}){extra};
""".encode()


@dataclass
class World:
    gw: Gateway
    agent: Proc
    repo: Path
    slack: SlackStandIn
    sam: str
    rita: str
    db_url: str
    workdir: Path

    def sql(self, statement: str, **params: Any) -> Any:
        engine = create_engine(self.db_url)
        try:
            with engine.begin() as conn:
                return conn.execute(text(statement), params)
        finally:
            engine.dispose()


def config(repo: Path, cache: Path, slack: SlackStandIn) -> str:
    return (f"c.Templates.repository = {str(repo)!r}\nc.Templates.cache_dir = {str(cache)!r}\n"
            "c.Templates.refresh_interval = 1\nc.Gateway.schedule_interval = 0.3\n"
            f"c.Slack.api_url = {slack.url!r}\nc.Slack.retries = 2\nc.Slack.retry_delay = 0.05\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("schedules")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id serial PRIMARY KEY, label text)")
    repo = new_repo(workdir / "repo")
    commit(repo, {"ticks/count.sql": note_template(), "README.md": b"templates\n"})
    slack = SlackStandIn().start()
    store = create_pg_database()
    gw = start_gateway(workdir, store, config=config(repo, workdir / "cache", slack), env={"CELLGATE_SLACK_BOT_TOKEN": BOT})
    agent = None
    try:
        gw.set_target("pg", review_groups=["dba"])
        agent_file = agent_config(workdir / "agent.toml", "sched-agent", {
            "pg": {"kind": "sql", "url": PG_URL, "readonly_url": pg_readonly_url(PG_URL)}})
        agent = start_agent(gw, workdir, agent_file, "sched-agent")
        wait_online(gw, ["pg"], agent.log)
        sam, rita = gw.user("sam", ("support",)), gw.user("rita", ("dba",))
        wait_until(lambda: _get(gw, sam, "/api/v1/templates")["templates"], 30, "templates fetched")
        yield World(gw=gw, agent=agent, repo=repo, slack=slack, sam=sam, rita=rita, db_url=store, workdir=workdir)
    finally:
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        slack.stop()
        drop_pg_database(store)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _get(gw: Gateway, token: str, path: str) -> Any:
    with gw.api(token) as api:
        r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def far_cron() -> str:
    """Daily, twelve hours from now: no occurrence comes by itself while a test runs (time is moved by hand)."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
    return f"{later.minute} {later.hour} * * *"


def create(world: World, name: str, **extra: Any) -> dict[str, Any]:
    body = {"name": name, "template": "ticks/count", "target": "pg", "parameters": {"label": name}, "cron": far_cron(),
            "why": "daily count", **extra}
    with world.gw.api(world.sam) as api:
        r = api.post("/api/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    found: dict[str, Any] = r.json()
    return found


def approve(world: World, task_id: int) -> None:
    with world.gw.api(world.rita) as api:
        r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "fine daily"})
    assert r.status_code == 200, r.text


def status_of(world: World, name: str) -> dict[str, Any]:
    found: dict[str, Any] = _get(world.gw, world.sam, f"/api/v1/schedules/{name}")
    return found


def wait_status(world: World, name: str, status: str) -> dict[str, Any]:
    found: dict[str, Any] = wait_until(lambda: (s := status_of(world, name))["status"] == status and s, 30, f"{name} {status}")
    return found


def make_due(world: World, name: str, ago: float) -> None:
    world.sql("UPDATE schedules SET next_run_at = :at WHERE name = :name",
              at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=ago), name=name)


def runs_of(world: World, name: str, count: int) -> list[dict[str, Any]]:
    def seen() -> list[dict[str, Any]] | None:  # a run is claimed first, its task submitted next
        runs: list[dict[str, Any]] = status_of(world, name)["runs"]
        return runs if len(runs) >= count and all(r["task_id"] or r["outcome"] != "ran" for r in runs) else None
    found: list[dict[str, Any]] = wait_until(seen, 30, f"{count} run(s) of {name}")
    return found


def rows(label: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE label = %s", (label,)).fetchone()
    assert row is not None
    return int(row[0])


def active(world: World, name: str, **extra: Any) -> dict[str, Any]:
    made = create(world, name, **extra)
    assert made["status"] == "pending_review" and made["review"]["kind"] == "schedule", made
    assert made["review"]["code"] == f"INSERT INTO {TABLE} (label) VALUES (__cg_param_label__);\n"
    approve(world, made["review_task_id"])
    return wait_status(world, name, "active")


def test_a_schedule_is_reviewed_once_and_each_due_run_is_approved_by_that_review(world: World) -> None:
    name = f"daily-{uuid.uuid4().hex[:6]}"
    made = active(world, name, notify="COPS")
    review = _get(world.gw, world.rita, f"/api/v1/tasks/{made['review_task_id']}")
    assert review["status"] == "approved" and review["expires_at"] is None  # a schedule's approval does not lapse
    assert made["next_run_at"] > dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    make_due(world, name, 1)
    run = runs_of(world, name, 1)[0]
    assert run["outcome"] == "ran"
    task = wait_until(lambda: (t := _get(world.gw, world.sam, f"/api/v1/tasks/{run['task_id']}"))["status"] == "succeeded" and t,
                      60, "the run")
    assert task["kind"] == "script" and task["decided_by"] == f"schedule:{name}"
    assert task["code_sha256"] == review["code_sha256"] and task["template"]["schedule"] == name
    assert f"review of schedule {name} (task #{review['id']})" in task["decision_comment"]
    assert rows(name) == 1
    posted = world.slack.wait_for("chat.postMessage", lambda c: name in c.params.get("text", ""), timeout=30)
    assert posted.params["channel"] == "COPS" and f"task #{task['id']}> succeeded" in posted.params["text"]
    with world.gw.admin() as api:
        events = [json.loads(line) for line in api.get("/api/v1/audit").text.splitlines()]
    due = [e for e in events if e["action"] == "schedule.due" and e["detail"]["schedule"] == name]
    assert len(due) == 1 and due[0]["detail"]["outcome"] == "ran"
    time.sleep(1.5)  # many ticks of both replicas later: still one run
    assert len(status_of(world, name)["runs"]) == 1 and rows(name) == 1


def test_without_a_channel_the_result_goes_to_the_authors_slack(world: World) -> None:
    with world.gw.admin() as api:
        r = api.put("/api/v1/slack/links/USAM0001", json={"user": "sam"})
        assert r.status_code == 200, r.text
    name = f"to-author-{uuid.uuid4().hex[:6]}"
    active(world, name)
    make_due(world, name, 1)
    run = runs_of(world, name, 1)[0]
    posted = world.slack.wait_for("chat.postMessage", lambda c: name in c.params.get("text", ""), timeout=60)
    assert posted.params["channel"] == "USAM0001" and f"task #{run['task_id']}>" in posted.params["text"]


@pytest.mark.parametrize("on_missed", ["run", "skip"])
def test_a_run_missed_while_the_gateway_was_away_runs_once_or_is_skipped(world: World, on_missed: str) -> None:
    name = f"missed-{on_missed}-{uuid.uuid4().hex[:6]}"
    active(world, name, on_missed=on_missed)
    make_due(world, name, 3 * 86400)  # three occurrences ago
    run = runs_of(world, name, 1)[0]
    assert run["outcome"] == ("ran" if on_missed == "run" else "skipped")
    if on_missed == "run":
        wait_until(lambda: rows(name) == 1, 60, "the one run")
    time.sleep(1.5)
    after = status_of(world, name)
    assert len(after["runs"]) == 1 and rows(name) == (1 if on_missed == "run" else 0)
    assert after["next_run_at"] > dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def start_replica(world: World) -> Proc:
    """A second gateway on the same store, ticking as often as the first."""
    port = free_port()
    path = world.workdir / f"replica-{port}-config.py"
    path.write_text(config(world.repo, world.workdir / f"cache-{port}", world.slack))
    replica = spawn([CELLGATE, "gateway", "--port", str(port), "--db-url", world.db_url, "--public-url",
                     f"http://127.0.0.1:{port}", "--config", str(path)], world.workdir / f"replica-{port}.log",
                    env={"CELLGATE_SLACK_BOT_TOKEN": BOT})
    wait_until(lambda: httpx.get(f"http://127.0.0.1:{port}/api/v1/templates",
                                 headers={"Authorization": f"token {world.sam}"}).json()["templates"], 30, "the replica")
    return replica


def test_two_replicas_never_start_one_occurrence_twice(world: World) -> None:
    """Whichever replica claims an occurrence starts its task (the agent is connected to one of them
    only: a task the other one started waits for an agent there); never two tasks for one."""
    names = [f"race-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    for name in names:
        active(world, name)
    replica = start_replica(world)
    try:
        for name in names:
            make_due(world, name, 1)
        for name in names:
            runs_of(world, name, 1)
        time.sleep(1.5)  # many ticks of both replicas later
    finally:
        replica.stop()
    tasks = _get(world.gw, world.gw.admin_token, "/api/v1/tasks?limit=1000")["tasks"]
    for name in names:
        runs = status_of(world, name)["runs"]
        assert len(runs) == 1 and runs[0]["task_id"], runs
        assert [t["id"] for t in tasks if (t["template"] or {}).get("schedule") == name and t["kind"] == "script"] == [
            runs[0]["task_id"]]
        assert rows(name) <= 1


def test_a_commit_that_changes_the_template_suspends_the_schedule_until_approved_again(world: World) -> None:
    name = f"changed-{uuid.uuid4().hex[:6]}"
    made = active(world, name)
    commit(world.repo, {"README.md": b"templates, edited\n"})  # the template itself is unchanged: the approval holds
    wait_until(lambda: status_of(world, name)["commit"] != made["commit"], 30, "the new commit seen")
    assert status_of(world, name)["status"] == "active"
    commit(world.repo, {"ticks/count.sql": note_template(" RETURNING id")})
    suspended = wait_status(world, name, "suspended")
    assert "renders differently" in suspended["status_reason"] and f"cellgate schedules resubmit {name}" in suspended["status_reason"]
    assert _get(world.gw, world.rita, f"/api/v1/tasks/{made['review_task_id']}")["status"] == "cancelled"
    make_due(world, name, 1)
    time.sleep(1.5)
    assert status_of(world, name)["runs"] == [] and rows(name) == 0
    again = cli(world.gw, world.sam, "schedules", "resubmit", name, "--json")
    assert again.returncode == 0, again.stderr
    body = json.loads(again.stdout)
    assert body["status"] == "pending_review" and "RETURNING id" in body["review"]["code"]
    approve(world, body["review_task_id"])
    wait_status(world, name, "active")
    commit(world.repo, {"ticks/count.sql": note_template()})  # back as it was: for the other tests
    wait_status(world, name, "suspended")


def test_what_cannot_be_scheduled_is_refused_and_others_cannot_touch_a_schedule(world: World) -> None:
    before = _get(world.gw, world.gw.admin_token, "/api/v1/schedules")["schedules"]
    cases = [({"cron": "every day"}, 400, "give five fields"), ({"cron": "61 * * * *"}, 400, "cannot be read"),
             ({"on_missed": "twice"}, 400, "on_missed 'twice'"), ({"parameters": {}}, 400, "parameter label: is required"),
             ({"name": "Bad Name"}, 400, "lower-case letters"), ({"template": "nope"}, 404, "no template"),
             ({"target": "nowhere"}, 404, "target 'nowhere' not found")]
    with world.gw.api(world.sam) as api:
        for change, status, said in cases:
            body = {"name": f"bad-{uuid.uuid4().hex[:6]}", "template": "ticks/count", "target": "pg",
                    "parameters": {"label": "x"}, "cron": "0 8 * * *", **change}
            r = api.post("/api/v1/schedules", json=body)
            assert r.status_code == status and said in r.json()["message"], (change, r.text)
    assert _get(world.gw, world.gw.admin_token, "/api/v1/schedules")["schedules"] == before
    name = f"mine-{uuid.uuid4().hex[:6]}"
    create(world, name)
    with world.gw.api(world.sam) as api:
        r = api.post("/api/v1/schedules", json={"name": name, "template": "ticks/count", "target": "pg",
                                                "parameters": {"label": "x"}, "cron": "0 8 * * *"})
        assert r.status_code == 409, r.text
    olga = world.gw.user("olga", ("support",))
    with world.gw.api(olga) as api:  # another user of the template: not theirs, not disclosed
        assert api.get(f"/api/v1/schedules/{name}").status_code == 404
        assert api.delete(f"/api/v1/schedules/{name}").status_code == 404
        assert name not in [s["name"] for s in api.get("/api/v1/schedules").json()["schedules"]]
    with world.gw.api(world.rita) as api:  # the reviewer sees it (its review task), may not change it
        assert api.get(f"/api/v1/schedules/{name}").status_code == 200
        r = api.delete(f"/api/v1/schedules/{name}")
        assert r.status_code == 403 and "only they or an admin" in r.json()["message"]
    shown = cli(world.gw, world.sam, "schedules")
    assert shown.returncode == 0 and name in shown.stdout and "pending review" in shown.stdout
    gone = cli(world.gw, world.sam, "schedules", "delete", name)
    assert gone.returncode == 0 and f"schedule {name} deleted" in gone.stdout
    assert _get(world.gw, world.rita, f"/api/v1/tasks/{status_rows(world, name)}")["status"] == "cancelled"


def status_rows(world: World, name: str) -> int:
    found = world.sql("SELECT review_task_id FROM schedules WHERE name = :name", name=name).scalar_one()
    return int(found)
