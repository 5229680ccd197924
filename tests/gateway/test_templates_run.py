"""Running a template as one task, end to end: a real gateway reading a real git repository, a real
agent with a PostgreSQL target and a Python target, a reviewer approving over REST.

Hostile values are written by a SQL template and read back verbatim from the database; a Python
template prints them back verbatim; the task names the template, its commit and the values, in
the REST answer and in the audit; what must be refused is refused before a task exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from databases import PG_URL
from gitrepo import commit, new_repo
from readonly_roles import pg_readonly_url

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))  # harness: how the e2e tests start gateways and agents

from harness import CELLGATE, Gateway, Proc, agent_config, start_agent, start_gateway, wait_online, wait_until

from cellgate.cli import exitcodes

TABLE = f"cg_tpl_{uuid.uuid4().hex[:8]}"
NOTE = f"""-- ---
-- description: Note a refund
-- groups: [support]
-- targets: [pg]
-- parameters:
--   id: {{type: integer, required: true}}
--   note: {{type: text, required: true}}
-- ---
INSERT INTO {TABLE} (id, note) VALUES ({{{{ id }}}}, {{{{ note }}}});
""".encode()
ECHO = b"""# ---
# groups: [support]
# kinds: [python]
# parameters:
#   text: {type: text, required: true}
#   n: {type: integer, default: 2}
# ---
import json
print(json.dumps({"text": {{ text }}, "n": {{ n }}}))
"""
SHELL = b"""#!/bin/sh
# ---
# groups: [support]
# kinds: [python]
# parameters:
#   text: {type: text, required: true}
#   n: {type: integer, default: 2}
# ---
printf '[%s]' {{ text }} "{{ n }}:{{ text }}"
printf '<%s>' "$1" "$2"
"""
HOSTILE = ["x'); DROP TABLE victims; --", "\\'; SELECT pg_sleep(5); --", "$(id) `id`", "a\nb;\r\nc", "50% :x %(note)s $1",
           "☃ \u202e 𝔘", '"""\'\'\' # not a comment']


@dataclass
class World:
    gw: Gateway
    agent: Proc
    support: str
    other: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("templates-run")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id int, note text)")
    repo = new_repo(workdir / "repo")
    commit(repo, {"fixes/note.sql": NOTE, "checks/echo.py": ECHO, "ops/echo.sh": SHELL,
                  "reports/daily.ipynb": json.dumps({"cells": [], "metadata": {"cellgate": {"groups": ["support"], "kinds": ["python"]}},
                                                     "nbformat": 4, "nbformat_minor": 5}).encode()})
    config = f"c.Templates.repository = {str(repo)!r}\nc.Templates.cache_dir = {str(workdir / 'cache')!r}\n"
    gw = start_gateway(workdir, f"sqlite:///{workdir}/gw.db", config=config)
    agent = None
    try:
        for name in ("pg", "py"):
            gw.set_target(name, review_groups=["dba"])
        agent_file = agent_config(workdir / "agent.toml", "tpl-agent", {
            "pg": {"kind": "sql", "url": PG_URL, "readonly_url": pg_readonly_url(PG_URL)}, "py": {"kind": "python"}})
        agent = start_agent(gw, workdir, agent_file, "tpl-agent")
        wait_online(gw, ["pg", "py"], agent.log)
        world = World(gw=gw, agent=agent, support=gw.user("sam", ("support",)), other=gw.user("olga", ("ops",)))
        gw.user("rita", ("dba",))
        wait_until(lambda: _get(gw, world.support, "/api/v1/templates")["templates"], 30, "templates fetched")
        yield world
    finally:
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")


def _get(gw: Gateway, token: str, path: str) -> Any:
    with gw.api(token) as api:
        r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def run(gw: Gateway, token: str, template: str, target: str, parameters: dict[str, Any]) -> Any:
    with gw.api(token) as api:
        return api.post("/api/v1/template-runs", json={"template": template, "target": target, "parameters": parameters,
                                                       "why": "ticket 42"})


def approve_and_wait(gw: Gateway, task_id: int) -> dict[str, Any]:
    with gw.api(gw.tokens["rita"]) as api:
        r = api.post(f"/api/v1/tasks/{task_id}/review", json={"decision": "approve", "comment": "ok"})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found = _get(gw, gw.admin_token, f"/api/v1/tasks/{task_id}/output?wait=10")
        if found["done"]:
            return found
    raise AssertionError(f"task {task_id} did not end")


def test_a_sql_template_binds_hostile_values_and_the_task_says_what_ran(world: World) -> None:
    head = _get(world.gw, world.support, "/api/v1/templates")["source"]["commit"]
    for i, value in enumerate(HOSTILE):
        r = run(world.gw, world.support, "fixes/note", "pg", {"id": str(i), "note": value})
        assert r.status_code == 201, r.text
        task = r.json()
        assert task["status"] == "pending_review" and task["kind"] == "script" and value not in task["code"]
        assert task["template"] == {"name": "fixes/note", "path": "fixes/note.sql", "commit": head, "parameters": [
            {"name": "id", "type": "integer", "value": i}, {"name": "note", "type": "text", "value": value}]}
        done = approve_and_wait(world.gw, task["id"])
        assert done["task"]["status"] == "succeeded", (done["task"]["error"], done["outputs"])
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        assert conn.execute(f"SELECT id, note FROM {TABLE} ORDER BY id").fetchall() == list(enumerate(HOSTILE))
        assert conn.execute("SELECT to_regclass('victims')").fetchone() == (None,)
    with world.gw.admin() as api:
        events = [json.loads(line) for line in api.get("/api/v1/audit").text.splitlines()]
    submitted = [e for e in events if e["action"] == "task.submitted" and e["detail"].get("template")]
    assert submitted and submitted[-1]["detail"]["template"]["commit"] == head


def test_a_python_template_gets_its_values_as_literals(world: World) -> None:
    for value in HOSTILE:
        r = run(world.gw, world.support, "checks/echo", "py", {"text": value})
        assert r.status_code == 201, r.text
        done = approve_and_wait(world.gw, r.json()["id"])
        assert done["task"]["status"] == "succeeded", done
        printed = "".join(o["output"].get("text", "") for o in done["outputs"] if o["output"].get("name") == "stdout")
        assert json.loads(printed) == {"text": value, "n": 2}


def test_a_template_run_repeated_with_its_idempotency_key_is_one_task(world: World) -> None:
    body = {"template": "checks/echo", "target": "py", "parameters": {"text": "once"}, "why": "ticket 43"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with world.gw.api(world.support) as api:
        first = api.post("/api/v1/template-runs", json=body, headers=key)
        again = api.post("/api/v1/template-runs", json=body, headers=key)
        other = api.post("/api/v1/template-runs", json={**body, "parameters": {"text": "twice"}}, headers=key)
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 422), other.text
    assert again.json()["id"] == first.json()["id"]
    assert f"used for another request (task {first.json()['id']})" in other.json()["message"]


def test_a_shell_template_gets_its_values_as_variables_and_arguments_never_as_shell_text(world: World) -> None:
    for value in [*HOSTILE, "$(touch /tmp/cg-pwned) `id` ; exit 3", "*", "-n", "a\\"]:
        r = run(world.gw, world.support, "ops/echo", "py", {"text": value})
        assert r.status_code == 201, r.text
        task = r.json()
        assert "${CG_TEXT}" in task["code"] and "_subprocess.run(['/bin/sh', '-c'" in task["code"]
        done = approve_and_wait(world.gw, task["id"])
        assert done["task"]["status"] == "succeeded", (done["task"]["error"], done["outputs"])
        printed = "".join(o["output"].get("text", "") for o in done["outputs"] if o["output"].get("name") == "stdout")
        assert printed == f"[{value}][2:{value}]<{value}><2>"
    assert not Path("/tmp/cg-pwned").exists()


@pytest.mark.parametrize(("who", "body", "status", "said"), [
    ("support", {"template": "fixes/note", "target": "pg", "parameters": {"id": "one", "note": "x"}}, 400,
     "parameter id: must be a whole number"),
    ("support", {"template": "fixes/note", "target": "pg", "parameters": {"id": 1}}, 400, "parameter note: is required"),
    ("support", {"template": "fixes/note", "target": "pg", "parameters": {"id": 1, "note": "x", "drop": "y"}}, 400,
     "parameter drop: the template has no such parameter"),
    ("support", {"template": "fixes/note", "target": "py", "parameters": {"id": 1, "note": "x"}}, 403,
     "template fixes/note runs on pg, not on py"),
    ("support", {"template": "reports/daily", "target": "py"}, 400, "names no kernel language"),
    ("other", {"template": "fixes/note", "target": "pg", "parameters": {"id": 1, "note": "x"}}, 404, "no template 'fixes/note'"),
    ("support", {"template": "fixes/note", "target": "nope", "parameters": {"id": 1, "note": "x"}}, 404, "target 'nope' not found"),
    ("support", {"template": "fixes/note", "target": "pg", "parameters": "id=1"}, 400, "field 'parameters' must be dict"),
])
def test_what_cannot_run_is_refused_before_a_task_exists(world: World, who: str, body: dict[str, Any], status: int,
                                                         said: str) -> None:
    before = _get(world.gw, world.gw.admin_token, "/api/v1/tasks?limit=1000")["tasks"]
    token = world.support if who == "support" else world.other
    with world.gw.api(token) as api:
        r = api.post("/api/v1/template-runs", json=body)
    assert r.status_code == status and said in r.json()["message"], r.text
    if "parameter " in said:
        assert r.json()["field"] == said.split()[1].rstrip(":")
    assert _get(world.gw, world.gw.admin_token, "/api/v1/tasks?limit=1000")["tasks"] == before


def test_the_cli_runs_a_template_and_exits_as_cellgate_run_does(world: World) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    env.update(CELLGATE_URL=world.gw.url, CELLGATE_TOKEN=world.support, CELLGATE_CONFIG_DIR=str(Path(world.agent.log).parent / "cli"))
    proc = subprocess.Popen([CELLGATE, "templates", "run", "checks/echo", "-t", "py", "-p", "text=it's $(id)", "-p", "n=5",
                             "--why", "from the CLI"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert line.startswith("task ") and "submitted to py" in line, line
        task_id = int(line.split()[1])
        approve_and_wait(world.gw, task_id)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out) == {"text": "it's $(id)", "n": 5}
    shown = subprocess.run([CELLGATE, "task", "show", str(task_id)], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "template:      checks/echo at " in shown.stdout
    assert "text=\"it's $(id)\", n=5" in shown.stdout, shown.stdout
    queued = subprocess.run([CELLGATE, "templates", "run", "checks/echo", "-t", "py", "-p", "text=later", "--no-wait"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert queued.returncode == 0 and "awaiting review" in queued.stdout and "cellgate task show" in queued.stdout, queued
    for args, code, said in ((["-p", "text"], exitcodes.USAGE, "give a parameter as NAME=VALUE"),
                             (["-p", "n=x", "-p", "text=a"], exitcodes.ERROR, "parameter n: must be a whole number"),
                             (["-p", "text=a", "-p", "text=b"], exitcodes.USAGE, "-p text is given twice")):
        p = subprocess.run([CELLGATE, "templates", "run", "checks/echo", "-t", "py", *args], env=env, capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == code and said in p.stderr, (args, p.stderr)
