"""papermill, nbclient and ``jupyter execute`` against the gateway: each cell through the gate.

The ``cellgate`` papermill engine and ``cellgate.gated_kernel.GatedKernelManager`` run a notebook on a
target's kernel as JupyterLab does: an auto-approved read runs at once, a write waits for review,
a rejection fails the run with the reviewer's reason (and nothing was written), an approval runs
it once. Real processes: the papermill and jupyter-execute commands, the gateway, the agent,
PostgreSQL and SQLite targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nbformat
import psycopg
import pytest
from harness import PG_ADMIN, Gateway, cli

pytestmark = [pytest.mark.postgres]

BIN = Path(sys.executable).parent
PG = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")


def notebook(path: Path, language: str, cells: list[str], parameters: str | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3" if language == "python" else "sql", "language": language,
                                 "display_name": language}
    if parameters is not None:
        first = nbformat.v4.new_code_cell(parameters)
        first.metadata["tags"] = ["parameters"]
        nb.cells.append(first)
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def env_for(gateway: Gateway, token: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")},
            "CELLGATE_URL": gateway.url, "CELLGATE_TOKEN": token, "CELLGATE_CONFIG_DIR": "/nonexistent"}


def papermill(gateway: Gateway, token: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "papermill"), *args, "--engine", "cellgate"], env=env_for(gateway, token),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def waiting(gateway: Gateway, reviewer: str, needle: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The task of ``needle``'s cell, once it waits for review (papermill meanwhile waits with it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"papermill ended first ({proc.returncode}): {proc.communicate()}"
        tasks = json.loads(cli(gateway, reviewer, "reviews", "--json").stdout)["tasks"]
        task = next((t for t in tasks if needle in t["code"]), None)
        if task is not None:
            return task
        time.sleep(0.2)
    mine = json.loads(cli(gateway, reviewer, "tasks", "--json").stdout)["tasks"][:3]
    raise AssertionError(f"no task with {needle!r} waited for review: {mine}")


@pytest.fixture
def table() -> Any:
    name = f"cg_headless_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, n int)")
        conn.execute(f"INSERT INTO {name} VALUES (1, 0)")
    yield name
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def counter(table: str) -> int:
    with psycopg.connect(PG, autocommit=True) as conn:
        row = conn.execute(f"SELECT n FROM {table} WHERE id = 1").fetchone()
    assert row is not None
    return int(row[0])


def test_papermill_injects_parameters_and_runs_each_cell_through_the_gate(gateway: Gateway, agent: Any, users: dict[str, str],
                                                                        tmp_path: Path) -> None:
    source = notebook(tmp_path / "in.ipynb", "python", ["print(repr(text), n * 2)", "n + 1"],
                      parameters="text = 'x'\nn = 1\n")
    hostile = "it's \"$(id)\"\n; DROP TABLE x; -- ☃"
    code, _out, err = finish(papermill(gateway, users["dev"], str(source), str(tmp_path / "out.ipynb"), "-k", "py",
                                       "-p", "text", hostile, "-p", "n", "20"))
    assert code == 0, err
    ran = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert ran.cells[1].metadata.tags == ["injected-parameters"]
    assert ran.cells[2].outputs[0].text == f"{hostile!r} 40\n"
    assert ran.cells[3].outputs[0].data["text/plain"] == "21"
    mine = json.loads(cli(gateway, users["dev"], "tasks", "--target", "py", "--json").stdout)["tasks"]
    assert [t["code"] for t in mine[:4]] == ["n + 1", "print(repr(text), n * 2)", ran.cells[1].source, "text = 'x'\nn = 1\n"]
    assert all(t["kind"] == "cell" and t["status"] == "succeeded" for t in mine[:4])


def test_a_write_waits_for_review_and_a_rejection_fails_the_run(gateway: Gateway, agent: Any, users: dict[str, str],
                                                               tmp_path: Path, table: str) -> None:
    source = notebook(tmp_path / "fix.ipynb", "sql", [f"SELECT n FROM {table}", f"UPDATE {table} SET n = n + 1 WHERE id = 1",
                                                       "SELECT 'after' AS step"])
    with gateway.admin() as api:  # reads run at once (read-only credential), writes wait for dba
        r = api.put("/api/v1/targets/pg", json={"review_groups": ["dba"], "policy": {"auto_approve": "read-only"}})
        assert r.status_code == 200, r.text
    try:
        proc = papermill(gateway, users["dev"], str(source), str(tmp_path / "rejected.ipynb"), "-k", "pg")
        task = waiting(gateway, users["reviewer"], "UPDATE", proc)
        rejected = cli(gateway, users["reviewer"], "review", "reject", str(task["id"]), "-m", "not on a friday")
        assert rejected.returncode == 0, rejected.stderr
        code, _out, err = finish(proc)
        assert code != 0 and "not on a friday" in err, err
        ran = nbformat.read(tmp_path / "rejected.ipynb", as_version=4)
        assert "An Exception was encountered" in ran.cells[0].source  # papermill's error cell
        failed = [c for c in ran.cells if c.cell_type == "code" and any(o.output_type == "error" for o in c.outputs)]
        assert len(failed) == 1 and "UPDATE" in failed[0].source
        assert "not on a friday" in json.dumps(failed[0].outputs)
        assert counter(table) == 0  # nothing was written

        proc = papermill(gateway, users["dev"], str(source), str(tmp_path / "approved.ipynb"), "-k", "pg")
        task = waiting(gateway, users["reviewer"], "UPDATE", proc)
        approved = cli(gateway, users["reviewer"], "review", "approve", str(task["id"]))
        assert approved.returncode == 0, approved.stderr
        code, _out, err = finish(proc)
        assert code == 0, err
        ran = nbformat.read(tmp_path / "approved.ipynb", as_version=4)
        assert "after" in json.dumps(ran.cells[-1].outputs)
    finally:
        with gateway.admin() as api:
            assert api.put("/api/v1/targets/pg", json={"review_groups": [], "policy": {}}).status_code == 200
    assert counter(table) == 1  # once


def test_installed_kernelspecs_make_jupyter_execute_and_plain_papermill_go_through_the_gate(
        gateway: Gateway, agent: Any, users: dict[str, str], tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    installed = cli(gateway, users["dev"], "kernelspecs", "install", "lite", "py", "--prefix", str(prefix), "--json")
    assert installed.returncode == 0, installed.stderr
    assert [k["kernel"] for k in json.loads(installed.stdout)["installed"]] == ["cellgate-lite", "cellgate-py"]
    spec = json.loads((prefix / "share/jupyter/kernels/cellgate-lite/kernel.json").read_text())
    assert spec["argv"][1:] == ["-m", "cellgate.kernel_bridge", "--target", "lite", "-f", "{connection_file}"]
    assert users["dev"] not in json.dumps(spec)  # the bridge finds the token when it starts
    env = {**env_for(gateway, users["dev"]), "JUPYTER_PATH": str(prefix / "share/jupyter")}

    source = notebook(tmp_path / "report.ipynb", "sql", ["SELECT count(*) AS accounts FROM accounts"])
    done = subprocess.run([str(BIN / "jupyter-execute"), "--inplace", "--kernel_name=cellgate-lite", str(source)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran = nbformat.read(source, as_version=4)
    assert ran.cells[0].outputs[-1].data["application/vnd.dataresource+json"]["data"] == [{"accounts": 20}]

    source = notebook(tmp_path / "py.ipynb", "python", ["print(repr(word))"], parameters="word = 'x'\n")
    done = subprocess.run([str(BIN / "papermill"), str(source), str(tmp_path / "py-out.ipynb"), "-k", "cellgate-py",
                           "-p", "word", "a 'b' \"c\""], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran = nbformat.read(tmp_path / "py-out.ipynb", as_version=4)
    assert ran.cells[2].outputs[0].text == repr("a 'b' \"c\"") + "\n"
    tasks = json.loads(cli(gateway, users["dev"], "tasks", "--target", "lite", "--json").stdout)["tasks"]
    assert tasks[0]["code"] == "SELECT count(*) AS accounts FROM accounts" and tasks[0]["kind"] == "cell"


HOSTILE = ["x'); DROP TABLE victims; --", "a\nb;\r\n-- c", "☃ \u202e $1 %(x)s :y ?", "*/ /* '\"", "{{ note }}"]


def test_papermill_parameters_of_a_sql_notebook_are_bound_by_the_driver(gateway: Gateway, agent: Any, users: dict[str, str],
                                                                       tmp_path: Path, table: str) -> None:
    notes = [f"note{i}" for i in range(len(HOSTILE))]
    source = notebook(tmp_path / "p.ipynb", "sql", [
        f"INSERT INTO {table} (id, n) VALUES ({{{{ id }}}}, {{{{ n }}}})",
        "SELECT " + ", ".join(f"{{{{ {n} }}}} AS {n}" for n in notes) + ", {{ id }} + 1 AS next"],
        parameters="-- cellgate parameters\n-- id = 0\n-- n = 0\n" + "".join(f"-- {n} = \"default\"\n" for n in notes))
    out = tmp_path / "o.ipynb"
    values = [arg for n, v in zip(notes, HOSTILE) for arg in ("-p", n, v)]
    code, _out, err = finish(papermill(gateway, users["dev"], str(source), str(out), "-k", "pg", "-p", "id", "10", "-p", "n", "20",
                                       *values))
    assert code == 0, err
    ran = nbformat.read(out, as_version=4)
    injected = ran.cells[1].source
    assert injected.startswith("-- cellgate parameters\n") and "\n-- note0 = " in injected
    assert all(line.startswith("--") for line in injected.splitlines())  # comments only: nothing in it is SQL
    rows = ran.cells[3].outputs[-1].data["application/vnd.dataresource+json"]["data"]
    assert rows == [{**dict(zip(notes, HOSTILE)), "next": 11}]
    with psycopg.connect(PG, autocommit=True) as conn:
        got = conn.execute(f"SELECT id, n FROM {table} WHERE id >= 10 ORDER BY id").fetchall()
        assert conn.execute("SELECT to_regclass('victims')").fetchone() == (None,)
    assert got == [(10, 20)]  # once
    tasks = json.loads(cli(gateway, users["dev"], "tasks", "--target", "pg", "--json").stdout)["tasks"]
    select = next(t for t in tasks if t["code"].startswith("SELECT __cg_param_note0__"))  # the task holds markers
    assert select["template"]["parameters"] == [*({"name": n, "type": "text", "value": v} for n, v in zip(notes, HOSTILE)),
                                                {"name": "id", "type": "integer", "value": 10}]


def test_what_papermill_cannot_do_through_the_gate_is_refused_with_the_fix(gateway: Gateway, agent: Any, users: dict[str, str],
                                                                          tmp_path: Path) -> None:
    source = notebook(tmp_path / "p.ipynb", "sql", ["SELECT {{ day }} AS day"])  # no parameters cell has set it
    code, _out, err = finish(papermill(gateway, users["dev"], str(source), str(tmp_path / "o.ipynb"), "-k", "pg"))
    assert code != 0 and "{{ day }} has no value on this kernel" in err and "-- cellgate parameters" in err, err
    source = notebook(tmp_path / "q.ipynb", "python", ["1"])
    code, _out, err = finish(papermill(gateway, users["dev"], str(source), str(tmp_path / "o.ipynb"), "-k", "nope"))
    assert code != 0 and "nope" in err and "Traceback" not in err.split("\n")[-2], err
    env = {**env_for(gateway, "cg_not_a_token"), "CELLGATE_TOKEN": "cg_not_a_token"}
    done = subprocess.run([str(BIN / "papermill"), str(source), str(tmp_path / "o.ipynb"), "-k", "py", "--engine", "cellgate"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "did not start a kernel on py" in done.stderr and "token" in done.stderr, done.stderr


def test_papermill_through_a_jupyter_server_in_gateway_mode(jupyter: Any, users: dict[str, str], tmp_path: Path) -> None:
    """The same client against the user's own Jupyter server (gateway mode, the cellgate extension): its
    Kernel Gateway proxy carries the cells to cellgate, which gates them."""
    source = notebook(tmp_path / "in.ipynb", "python", ["print(word[::-1])"], parameters="word = 'x'\n")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")},
           "CELLGATE_URL": jupyter.url, "CELLGATE_TOKEN": jupyter.token, "CELLGATE_CONFIG_DIR": "/nonexistent"}
    done = subprocess.run([str(BIN / "papermill"), str(source), str(tmp_path / "out.ipynb"), "--engine", "cellgate",
                           "-k", "py", "-p", "word", "gated"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    ran = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert ran.cells[2].outputs[0].text == "detag\n"
