"""Session fixtures: the Slack stand-in, and one gateway + agent with linked users and templates (see slack_world)."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))  # harness: how the e2e tests start gateways and agents

from harness import agent_config, start_agent, wait_online, wait_until
from slack_standin import SlackStandIn, SlackUser
from slack_templates import template_repo
from slack_world import World, seed, set_email, slack_config, start_slack_gateway


@pytest.fixture(scope="session")
def standin() -> Iterator[SlackStandIn]:
    stand = SlackStandIn(users={"UREV2": SlackUser("Rev2@Example.com"), "UUNVER": SlackUser("unver@example.com"),
                                "UDEV": SlackUser("dev@example.com"), "UDEV3": SlackUser("dev3@example.com")}).start()
    yield stand
    stand.stop()


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory, standin: SlackStandIn) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("slack")
    db = workdir / "gw.db"
    templates, commit = template_repo(workdir)
    gw = start_slack_gateway(workdir, f"sqlite:///{db}", slack_config(standin), config=templates)
    lite = workdir / "lite.db"
    with sqlite3.connect(lite) as conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, holder TEXT, balance INTEGER)")
        conn.executemany("INSERT INTO accounts VALUES (?, ?, ?)", [(i, f"holder {i}", i * 100) for i in range(1, 21)])
    ledger = workdir / "ledger.db"  # the direct-message tests' target (test_slack_dm)
    with sqlite3.connect(ledger) as conn:
        conn.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, note TEXT, amount INTEGER)")
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?)", [(i, f"entry {i}", i * 100) for i in range(1, 21)])
    config = agent_config(workdir / "agent.toml", "slack-agent", {
        "payments": {"kind": "sql", "url": f"sqlite:///{lite}"},
        "py": {"kind": "python"},
        "ledger": {"kind": "sql", "url": f"sqlite:///{ledger}"},
    })
    seed(gw)
    agent = start_agent(gw, workdir, config, "slack-agent")
    try:
        wait_online(gw, ["payments", "py", "ledger"], agent.log)
        set_email(db, "rev2", "rev2@example.com", True)
        set_email(db, "unver", "unver@example.com", False)
        with gw.admin() as api:
            wait_until(lambda: api.get("/api/v1/templates").json()["source"]["commit"] == commit, 30, "templates fetched",
                       gw.proc.log)
        yield World(gw=gw, standin=standin, agent=agent, db=db, templates_commit=commit, ledger=ledger)
    finally:
        agent.stop()
        gw.proc.stop()
