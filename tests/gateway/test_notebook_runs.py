"""Running a notebook as one task, end to end: a real gateway reading a real git repository, a real
agent with PostgreSQL, MariaDB and Python targets, reviewers approving over REST, the CLI.

A Python notebook gets hostile values through papermill's injected-parameters cell and prints
them back verbatim; a SQL notebook's values are bound by the driver in every cell (read back
from the database); a failing cell leaves papermill's error cells in the executed notebook and
the task ``failed`` with the cells after it not run; the approval binds to the hash of the
rendered notebook; a notebook of one's own runs with ``cellgate run -f x.ipynb -p``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import psycopg
import pytest
from databases import MARIADB_URL, PG_URL, mariadb
from gitrepo import commit, new_repo
from readonly_roles import mariadb_readonly_url, pg_readonly_url

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))  # harness: how the e2e tests start gateways and agents

from harness import Gateway, Proc, agent_config, cli, start_agent, start_gateway, wait_online, wait_until

from cellgate.cli import exitcodes

TABLE = f"cg_nb_{uuid.uuid4().hex[:8]}"
HOSTILE = ["x'); DROP TABLE victims; --", "\\'; SELECT pg_sleep(5); --", "$(id) `id`", "a\nb;\r\nc", "50% :x %(note)s $1 ?",
           "☃ \u202e 𝔘", '"""\'\'\' # not a comment', "{{ note }} __cg_param_note__"]


def python_notebook(cells: list[str], params: str = "text = 'hello'  # what to print\nn = 2\n",
                    meta: dict[str, Any] | None = None) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.metadata["cellgate"] = meta if meta is not None else {"groups": ["support"], "kinds": ["python"]}
    first = nbformat.v4.new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# A report"), first, *(nbformat.v4.new_code_cell(c) for c in cells)]
    return nbformat.writes(nb).encode()


def sql_notebook(cells: list[str], targets: list[str]) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "cellgate-sql", "language": "sql", "display_name": "SQL"}
    nb.metadata["cellgate"] = {"groups": ["support"], "targets": targets, "parameters": {
        "id": {"type": "integer", "required": True}, "note": {"type": "text", "required": True}}}
    nb.cells = [nbformat.v4.new_markdown_cell("Write a note, read it back"), *(nbformat.v4.new_code_cell(c) for c in cells)]
    return nbformat.writes(nb).encode()


REPORT = python_notebook(["import json\nprint(json.dumps({'text': text, 'n': n}))", "n * 10"])
BROKEN = python_notebook(["print('before')", "raise ValueError('the data is not there')", "print('never')"])
NOTE = sql_notebook([f"INSERT INTO {TABLE} (id, note) VALUES ({{{{ id }}}}, {{{{ note }}}})",
                     f"SELECT note FROM {TABLE} WHERE id = {{{{ id }}}}"], ["pg", "maria"])


@dataclass
class World:
    gw: Gateway
    agent: Proc
    support: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("notebook-runs")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TABLE} (id int, note text)")
    with mariadb() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {TABLE} (id int, note text) CHARACTER SET utf8mb4")
    repo = new_repo(workdir / "repo")
    commit(repo, {"reports/daily.ipynb": REPORT, "reports/broken.ipynb": BROKEN, "fixes/note.ipynb": NOTE})
    config = f"c.Templates.repository = {str(repo)!r}\nc.Templates.cache_dir = {str(workdir / 'cache')!r}\n"
    gw = start_gateway(workdir, f"sqlite:///{workdir}/gw.db", config=config)
    agent = None
    try:
        for name in ("pg", "maria", "py"):
            gw.set_target(name, review_groups=["dba"])
        agent_file = agent_config(workdir / "agent.toml", "nb-agent", {
            "pg": {"kind": "sql", "url": PG_URL, "readonly_url": pg_readonly_url(PG_URL)},
            "maria": {"kind": "sql", "url": MARIADB_URL, "readonly_url": mariadb_readonly_url()},
            "py": {"kind": "python"}})
        agent = start_agent(gw, workdir, agent_file, "nb-agent")
        wait_online(gw, ["pg", "maria", "py"], agent.log)
        world = World(gw=gw, agent=agent, support=gw.user("sam", ("support",)))
        gw.user("rita", ("dba",))
        wait_until(lambda: len(get(gw, world.support, "/api/v1/templates")["templates"]) == 3, 30, "templates fetched")
        yield world
    finally:
        if agent is not None:
            agent.stop()
        gw.proc.stop()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        with mariadb() as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {TABLE}")


def get(gw: Gateway, token: str, path: str) -> Any:
    with gw.api(token) as api:
        r = api.get(path)
    assert r.status_code == 200, r.text
    return r.json()


def run(world: World, template: str, target: str, parameters: dict[str, Any]) -> dict[str, Any]:
    with world.gw.api(world.support) as api:
        r = api.post("/api/v1/template-runs", json={"template": template, "target": target, "parameters": parameters,
                                                    "why": "ticket 7"})
    assert r.status_code == 201, r.text
    task: dict[str, Any] = r.json()
    assert task["kind"] == "notebook" and task["status"] == "pending_review", task
    return task


def approve_and_wait(gw: Gateway, task: dict[str, Any]) -> dict[str, Any]:
    with gw.api(gw.tokens["rita"]) as api:
        r = api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "approve", "code_sha256": task["code_sha256"]})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        found: dict[str, Any] = get(gw, gw.admin_token, f"/api/v1/tasks/{task['id']}/output?wait=10")
        if found["done"]:
            return found
        time.sleep(0.2)
    raise AssertionError(f"task {task['id']} did not end: {found['task']['status']}")


def executed(gw: Gateway, task_id: int) -> nbformat.NotebookNode:
    with gw.api(gw.admin_token) as api:
        r = api.get(f"/api/v1/tasks/{task_id}/notebook")
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ipynb+json", r.text
    nb = nbformat.reads(r.text, as_version=4)
    nbformat.validate(nb)
    return nb


def stdout_of(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_a_python_notebook_gets_hostile_values_through_papermills_parameters_cell(world: World) -> None:
    for value in HOSTILE:
        task = run(world, "reports/daily", "py", {"text": value, "n": "3"})
        assert task["code_sha256"] == hashlib.sha256(task["code"].encode()).hexdigest()
        rendered = nbformat.reads(task["code"], as_version=4)
        injected = rendered.cells[2]
        assert injected.metadata.tags == ["injected-parameters"] and injected.source.startswith("# Parameters\n")
        assert injected.source.splitlines()[1:] == [f"text = {value!r}", "n = 3"]  # literals, as Python reads them back
        assert rendered.metadata.papermill.parameters == {"text": value, "n": 3}
        assert "# cell 2 (injected-parameters)" in task["review_text"] and "print(json.dumps" in task["review_text"]
        assert task["template"]["commit"] and [p["name"] for p in task["template"]["parameters"]] == ["text", "n"]
        done = approve_and_wait(world.gw, task)
        assert done["task"]["status"] == "succeeded", (done["task"]["error"], done["outputs"])
        nb = executed(world.gw, task["id"])
        assert [c.cell_type for c in nb.cells] == ["markdown", "code", "code", "code", "code"]
        assert json.loads(stdout_of(nb.cells[3])) == {"text": value, "n": 3}
        assert nb.cells[4].outputs[0].output_type == "execute_result" and nb.cells[4].outputs[0].data["text/plain"] == "30"
        assert [c.execution_count for c in nb.cells[1:]] == [1, 2, 3, 4]
        printed = [o["output"] for o in done["outputs"]]  # streamed and recorded as the cells ran
        assert any(json.loads(o["text"]) == {"text": value, "n": 3} for o in printed if o.get("name") == "stdout")


def test_a_failing_cell_ends_the_task_failed_with_papermills_error_cells(world: World) -> None:
    task = run(world, "reports/broken", "py", {})
    done = approve_and_wait(world.gw, task)
    assert done["task"]["status"] == "failed" and done["task"]["error"]["ename"] == "ValueError", done["task"]
    nb = executed(world.gw, task["id"])
    assert nb.cells[0].metadata.tags == ["papermill-error-cell-tag"] and "An Exception was encountered" in nb.cells[0].source
    failed = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs))
    assert nb.cells[failed - 1].metadata.tags == ["papermill-error-cell-tag"] and 'id="papermill-error-cell"' in nb.cells[failed - 1].source
    assert nb.cells[failed].outputs[0].evalue == "the data is not there"
    assert stdout_of(nb.cells[failed - 2]) == "before\n"
    assert nb.cells[failed + 1].outputs == [] and nb.cells[failed + 1].execution_count is None  # never ran
    assert nb.metadata.papermill.exception is True
    assert not any("never" in o["output"].get("text", "") for o in done["outputs"])
    for token, status in ((world.support, 200), (world.gw.tokens["rita"], 200), (world.gw.user("olga", ("ops",)), 404)):
        with world.gw.api(token) as api:  # who may see the task sees its notebook; anyone else: as if absent
            r = api.get(f"/api/v1/tasks/{task['id']}/notebook")
        assert r.status_code == status, r.text
    assert r.json()["message"] == f"task {task['id']} not found"


@pytest.mark.parametrize("target", ["pg", "maria"])
def test_a_sql_notebook_binds_its_values_in_every_cell(world: World, target: str) -> None:
    base = 100 if target == "pg" else 200
    for i, value in enumerate(HOSTILE):
        task = run(world, "fixes/note", target, {"id": str(base + i), "note": value})
        cells = nbformat.reads(task["code"], as_version=4).cells
        assert not any(value in c.source for c in cells)  # never pasted into the SQL: bound
        assert "-- cell 1\nINSERT INTO" in task["review_text"] and "__cg_param_note__" in task["review_text"]
        assert task["risk"]["statements"] == ["INSERT", "SELECT"]
        done = approve_and_wait(world.gw, task)
        assert done["task"]["status"] == "succeeded", (done["task"]["error"], done["outputs"])
        nb = executed(world.gw, task["id"])
        read_back = nb.cells[2].outputs[-1]
        assert read_back.output_type == "execute_result"
        assert read_back.data["application/vnd.dataresource+json"]["data"] == [{"note": value}]
    if target == "pg":
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(f"SELECT id - {base}, note FROM {TABLE} WHERE id >= {base} AND id < {base + 100} ORDER BY id").fetchall()
            assert conn.execute("SELECT to_regclass('victims')").fetchone() == (None,)
    else:
        with mariadb() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT id - {base}, note FROM {TABLE} WHERE id >= {base} AND id < {base + 100} ORDER BY id")
            rows = list(cur.fetchall())
    assert [tuple(r) for r in rows] == list(enumerate(HOSTILE))


def test_a_notebook_is_analysed_cell_by_cell_and_approved_by_its_hash(world: World) -> None:
    task = run(world, "fixes/note", "pg", {"id": "999", "note": "n"})
    assert task["risk"]["level"] != "low" and any(r.startswith("cell 1: ") for r in task["risk"]["reasons"]), task["risk"]
    with world.gw.api(world.gw.tokens["rita"]) as api:
        r = api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "approve", "code_sha256": "0" * 64})
        assert r.status_code == 409, r.text
        r = api.post(f"/api/v1/tasks/{task['id']}/review", json={"decision": "reject", "comment": "not today"})
        assert r.status_code == 200 and r.json()["status"] == "rejected"
    with world.gw.api(world.gw.admin_token) as api:
        r = api.get(f"/api/v1/tasks/{task['id']}/notebook")
    assert r.status_code == 404 and "has no executed notebook (rejected)" in r.json()["message"]


def test_what_cannot_run_is_refused_before_a_task_exists(world: World) -> None:
    before = get(world.gw, world.gw.admin_token, "/api/v1/tasks?limit=1000")["tasks"]
    cases = [({"template": "reports/daily", "target": "py", "parameters": {"n": "many"}}, 400, "parameter n: must be a whole number"),
             ({"template": "reports/daily", "target": "py", "parameters": {"other": "1"}}, 400, "parameter other:"),
             ({"template": "reports/daily", "target": "pg"}, 403, "runs on any python target, not on pg"),
             ({"template": "fixes/note", "target": "py", "parameters": {"id": 1, "note": "x"}}, 403, "runs on pg, maria, not on py")]
    with world.gw.api(world.support) as api:
        for body, status, said in cases:
            r = api.post("/api/v1/template-runs", json=body)
            assert r.status_code == status and said in r.json()["message"], (body, r.text)
    assert get(world.gw, world.gw.admin_token, "/api/v1/tasks?limit=1000")["tasks"] == before


def test_a_notebook_of_ones_own_runs_from_the_cli_and_its_result_downloads(world: World, tmp_path: Path) -> None:
    path = tmp_path / "mine.ipynb"
    path.write_bytes(python_notebook(["print(text * n)"], meta={}))
    with world.gw.api(world.support) as api:
        r = api.post("/api/v1/tasks", json={"target": "py", "notebook": path.read_text(), "name": "mine.ipynb",
                                            "parameters": {"n": "x"}})
    assert r.status_code == 400 and r.json()["field"] == "n", r.text
    import subprocess

    from harness import CELLGATE
    env = {"CELLGATE_URL": world.gw.url, "CELLGATE_TOKEN": world.support, "CELLGATE_CONFIG_DIR": "/nonexistent",
           "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([CELLGATE, "run", "-t", "py", "-f", str(path), "-p", "text=ab", "-p", "n=3", "--why", "mine"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # type: ignore[union-attr]
        assert line.startswith("task ") and "submitted to py" in line, line
        task_id = int(line.split()[1])
        task = get(world.gw, world.support, f"/api/v1/tasks/{task_id}")
        assert task["kind"] == "notebook" and task["template"] == {
            "name": None, "path": "mine.ipynb", "commit": None,
            "parameters": [{"name": "text", "type": "text", "value": "ab"}, {"name": "n", "type": "integer", "value": 3}]}
        approve_and_wait(world.gw, task)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == exitcodes.OK, err
    assert "ababab" in out
    saved = tmp_path / "ran.ipynb"
    got = cli(world.gw, world.support, "task", "output", str(task_id), "--ipynb", "-o", str(saved))
    assert got.returncode == 0, got.stderr
    nb = nbformat.read(saved, as_version=4)
    assert stdout_of(nb.cells[3]) == "ababab\n"
    shown = cli(world.gw, world.support, "task", "show", str(task_id))
    assert "template:      mine.ipynb (a notebook of the author's own): text='ab', n=3" in shown.stdout, shown.stdout
    assert "# cell 3\nprint(text * n)" in shown.stdout.replace("    ", "")
    refused = cli(world.gw, world.support, "run", "-t", "py", "-e", "1", "-p", "a=b")
    assert refused.returncode == exitcodes.USAGE and "use it with -f NOTEBOOK.ipynb" in refused.stderr
    with world.gw.api(world.support) as api:
        script = api.post("/api/v1/tasks", json={"target": "py", "code": "print(1)"}).json()
    not_nb = cli(world.gw, world.support, "task", "output", str(script["id"]), "--ipynb")
    assert not_nb.returncode != 0 and "is a script, not a notebook" in not_nb.stderr, not_nb.stderr


#: notebooks whose cells each look harmless, or that hide a write where the server reads one: none may be
#: approved as read-only (and if one ran, the database would have to refuse it: checked after)
DISGUISED = {
    "pg": [["SELECT 1", f"DELETE FROM {TABLE}"], [f"SELECT 1; DELETE FROM {TABLE}"],
           [f"WITH d AS (DELETE FROM {TABLE} RETURNING *) SELECT count(*) FROM d"],
           ["SELECT 1", f"PREPARE p AS DELETE FROM {TABLE}", "EXECUTE p"], [f"SELECT 1 /* */; UPDATE {TABLE} SET note = 'x'"],
           [f"SELECT * FROM {TABLE}", f"DO $$ BEGIN DELETE FROM {TABLE}; END $$"],
           [f"SELECT U&\"\\0064blink_exec\"('', 'DELETE FROM {TABLE}')"], [f"-- x\nDELETE FROM {TABLE}"],
           [f"SELECT 1\u2028DELETE FROM {TABLE}"], ["SELECT {{ note }}", f"DELETE FROM {TABLE}"]],
    "maria": [["SELECT 1", f"DELETE FROM {TABLE}"], [f"SELECT 1; DELETE FROM {TABLE}"],
              [f"SELECT 1 /*! ; DELETE FROM {TABLE} */"], [f"SELECT 1 -- x\n; DELETE FROM {TABLE}"],
              [f"SELECT 1 #\nDELETE FROM {TABLE}"], [f"SET @q = 'DELETE FROM {TABLE}'", "PREPARE s FROM @q", "EXECUTE s"],
              [f"SELECT * FROM {TABLE} INTO OUTFILE '/tmp/cg-{TABLE}'"], [f"SELECT 1\u00a0; DELETE FROM {TABLE}"]],
}


@pytest.mark.parametrize("target", ["pg", "maria"])
def test_a_notebook_cannot_carry_a_write_past_review(world: World, target: str) -> None:
    def count() -> int:
        if target == "pg":
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                return int(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])  # type: ignore[index]
        with mariadb() as conn, conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {TABLE}")
            return int(cur.fetchone()[0])
    with world.gw.api(world.gw.admin_token) as api:
        assert api.put(f"/api/v1/targets/{target}", json={"review_groups": ["dba"],
                                                          "policy": {"auto_approve": "read-only"}}).status_code == 200
    with world.gw.api(world.support) as api:
        assert api.post("/api/v1/tasks", json={"target": target, "code": f"INSERT INTO {TABLE} (id, note) VALUES (7777, 'keep')"}
                        ).status_code == 201  # (waits for review: a write)
    before = count()
    try:
        for cells in DISGUISED[target]:
            nb = nbformat.v4.new_notebook()
            nb.metadata["kernelspec"] = {"name": "sql", "language": "sql", "display_name": "SQL"}
            nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
            with world.gw.api(world.support) as api:
                r = api.post("/api/v1/tasks", json={"target": target, "notebook": nbformat.writes(nb), "name": "x.ipynb"})
            assert r.status_code in (201, 400), r.text
            if r.status_code == 201:
                task = r.json()
                assert task["status"] in ("pending_review", "denied"), (cells, task["status"], task["risk"])
                if task["status"] == "pending_review":
                    with world.gw.api(world.support) as api:
                        api.post(f"/api/v1/tasks/{task['id']}/cancel", json={"reason": "an attack"})
        time.sleep(1.0)
        assert count() == before  # nothing ran behind the review
    finally:
        with world.gw.api(world.gw.admin_token) as api:
            api.put(f"/api/v1/targets/{target}", json={"review_groups": ["dba"], "policy": {}})
