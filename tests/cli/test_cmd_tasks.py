"""`cellgate run`, `tasks`, `task`, `reviews`, `review`, `targets` against the fake gateway."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import pytest

from cellgate.cli import exitcodes

from .conftest import CELLGATE


def no_traceback(stderr: str) -> None:
    assert "Traceback (most recent call last)" not in stderr


def test_run_streams_through_review_to_success(cli, gateway):
    p = cli("run", "--target", "db", "--why", "count orders", "-e", "SELECT count(*) FROM orders")
    assert p.returncode == exitcodes.OK, p.stderr
    assert p.stdout == "hello\n42\n"
    lines = p.stderr.splitlines()
    expected = [
        "task 1 submitted to db",
        "task 1 awaiting review by dba — approve with: cellgate review approve 1",
        "task 1 approved by bob",
        "task 1 running on db",
        "careful",
        "[image/png output not shown]",
        "task 1 succeeded",
    ]
    assert [ln.split(" (http")[0] for ln in lines] == expected
    posted = next(r for r in gateway.requests if r["method"] == "POST")
    assert posted["body"] == {"target": "db", "code": "SELECT count(*) FROM orders", "why": "count orders"}
    afters = [r["query"].get("after") for r in gateway.requests if r["path"] == "tasks/1/output"]
    assert afters == [None, None, None, "2", "3"]
    assert all(r["query"]["wait"] == "20" for r in gateway.requests if r["path"] == "tasks/1/output")


def test_run_reads_code_from_stdin(cli, gateway):
    p = cli("run", "--target", "db", "-f", "-", input="SELECT 1;\nSELECT 2;\n")
    assert p.returncode == 0, p.stderr
    assert gateway.tasks[1]["code"] == "SELECT 1;\nSELECT 2;\n"
    assert gateway.tasks[1]["why"] == ""


def test_a_notebook_is_sent_as_a_notebook_with_its_parameters(cli, gateway, tmp_path):
    notebook = tmp_path / "report.ipynb"
    text = '{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
    notebook.write_text(text)
    p = cli("run", "-t", "db", "-f", str(notebook), "-p", "day=2024-05-01", "-p", "note=a=b")
    assert p.returncode == 0, p.stderr
    sent = [r for r in gateway.requests if r["path"] == "tasks" and r["method"] == "POST"]
    assert [r["body"] for r in sent] == [{"target": "db", "notebook": text, "name": "report.ipynb",
                                          "parameters": {"day": "2024-05-01", "note": "a=b"}, "why": ""}]


@pytest.mark.parametrize(("args", "said"), [
    (["-e", "SELECT 1", "-p", "a=1"], "use it with -f NOTEBOOK.ipynb"),
    (["-f", "x.ipynb", "-p", "a"], "give a parameter as NAME=VALUE"),
    (["-f", "x.ipynb", "-p", "a=1", "-p", "a=2"], "-p a is given twice"),
])
def test_notebook_parameters_are_checked_before_anything_is_sent(cli, gateway, tmp_path, args, said):
    (tmp_path / "x.ipynb").write_text("{}")
    p = cli("run", "-t", "db", *[str(tmp_path / a) if a == "x.ipynb" else a for a in args])
    assert p.returncode == exitcodes.USAGE and said in p.stderr, p.stderr
    assert not any(r["path"] == "tasks" and r["method"] == "POST" for r in gateway.requests)
    no_traceback(p.stderr)


def test_run_reads_code_from_file(cli, gateway, tmp_path):
    script = tmp_path / "q.sql"
    script.write_text("SELECT 3")
    assert cli("run", "-t", "db", "-f", str(script)).returncode == 0
    assert gateway.tasks[1]["code"] == "SELECT 3"
    p = cli("run", "-t", "db", "-f", str(tmp_path / "missing.sql"))
    assert p.returncode == exitcodes.USAGE
    assert "cannot read" in p.stderr and len(gateway.tasks) == 1


def test_run_needs_code(cli):
    assert cli("run", "-t", "db").returncode == exitcodes.USAGE
    p = cli("run", "-t", "db", "-e", "  ")
    assert p.returncode == exitcodes.USAGE and "empty" in p.stderr


def test_run_rejected(cli):
    p = cli("run", "--target", "rejecting", "-e", "DELETE FROM orders")
    assert p.returncode == exitcodes.REJECTED
    assert "awaiting review by dba, sre" in p.stderr
    assert "task 1 rejected by bob: use the replica" in p.stderr
    assert p.stdout == ""


def test_run_denied(cli):
    p = cli("run", "--target", "denying", "-e", "DROP TABLE orders")
    assert p.returncode == exitcodes.DENIED
    assert "task 1 denied: DROP is not allowed on prod" in p.stderr


def test_run_failed_prints_clean_traceback(cli):
    p = cli("run", "--target", "failing", "-e", "1/0")
    assert p.returncode == exitcodes.FAILED
    assert p.stdout == "before\n"
    assert "\x1b" not in p.stderr
    assert "ZeroDivisionError                         Traceback (most recent call last)" in p.stderr
    assert "----> 1 1/0" in p.stderr
    assert p.stderr.count("ZeroDivisionError: division by zero") == 2  # the error, then the status
    assert p.stderr.rstrip().endswith("task 1 failed: ZeroDivisionError: division by zero")


def test_run_lost_and_expired(cli):
    p = cli("run", "--target", "losing", "-e", "UPDATE t SET x = 1")
    assert p.returncode == exitcodes.KILLED
    assert "task 1 lost: AgentLost: agent a1 disconnected" in p.stderr
    p = cli("run", "--target", "expiring", "-e", "SELECT 1")
    assert p.returncode == exitcodes.CANCELLED
    assert "task 2 expired" in p.stderr


def test_run_json_prints_final_task_with_outputs(cli):
    p = cli("run", "--target", "db", "--json", "-e", "SELECT 1")
    assert p.returncode == 0
    task = json.loads(p.stdout)
    assert task["status"] == "succeeded" and task["id"] == 1
    assert [o["output_type"] for o in task["outputs"]] == ["stream", "stream", "display_data", "execute_result"]
    assert "awaiting review" in p.stderr  # people still see progress on stderr


def test_run_unknown_target_is_an_api_error(cli):
    p = cli("run", "--target", "nope", "-e", "SELECT 1")
    assert p.returncode == exitcodes.ERROR
    assert p.stderr == "cellgate: error: target nope not found\n"


def test_refused_token(cli, cli_env):
    env = {**cli_env, "CELLGATE_TOKEN": "s3cret-wrong"}
    for args in (["run", "-t", "db", "-e", "SELECT 1"], ["tasks"], ["audit", "export"]):
        p = cli(*args, env=env)
        assert p.returncode == exitcodes.UNREACHABLE, args
        assert "refused the token" in p.stderr and "cellgate login" in p.stderr
        assert "CELLGATE_TOKEN" in p.stderr
        assert "s3cret-wrong" not in p.stderr + p.stdout
        no_traceback(p.stderr)


def test_connection_refused(cli, cli_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    p = cli("run", "-t", "db", "-e", "SELECT 1", env={**cli_env, "CELLGATE_URL": url, "CELLGATE_GIVE_UP_AFTER": "1"})
    assert p.returncode == exitcodes.UNREACHABLE  # retried for 1 s, then: no task was confirmed
    assert url in p.stderr and "--gateway" in p.stderr and "good-token" not in p.stderr
    assert "retrying for up to 1 s" in p.stderr and "No task was confirmed" in p.stderr
    no_traceback(p.stderr)
    p = cli("targets", "--gateway", url)
    assert p.returncode == exitcodes.UNREACHABLE


@pytest.mark.parametrize("value", ["soon", "-3", "nan"])
def test_a_bad_give_up_time_is_a_usage_error(cli, cli_env, value: str) -> None:
    p = cli("run", "-t", "db", "-e", "SELECT 1", env={**cli_env, "CELLGATE_GIVE_UP_AFTER": value})
    assert p.returncode == exitcodes.USAGE, p.stderr
    assert "CELLGATE_GIVE_UP_AFTER=" in p.stderr
    no_traceback(p.stderr)


def _sigint_as_from_a_terminal() -> None:
    """Run in the child before exec: SIGINT at its default, as a terminal's foreground job has it.

    A job started in the background by a non-interactive shell (as CI may start the suite)
    inherits SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler: the
    Ctrl-C this test sends would never arrive (the test hung 30 s and failed in such runs).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_waiting_does_not_cancel(cli_env, gateway):
    proc = subprocess.Popen([str(CELLGATE), "run", "-t", "forever", "-e", "SELECT 1"], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_sigint_as_from_a_terminal)
    try:
        seen = ""
        while "awaiting review" not in seen:
            line = proc.stderr.readline()
            assert line, "cellgate run ended early"
            seen += line
        time.sleep(0.3)  # it is now polling
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert "cellgate task show 1" in err and "not cancelled" in err
    no_traceback(err)
    assert gateway.tasks[1]["status"] == "pending_review"
    assert not any(r["path"].endswith("/cancel") for r in gateway.requests)


def test_gateway_gone_while_following_says_how_to_find_the_task(cli_env, gateway):
    proc = subprocess.Popen([str(CELLGATE), "run", "-t", "forever", "-e", "SELECT 1", "--give-up-after", "1.5"], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "submitted" in proc.stderr.readline()
        assert "awaiting review" in proc.stderr.readline()
        gateway.stop()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == exitcodes.GAVE_UP
    assert "gave up following task 1 after 1.5 s" in err
    assert "task 1 was submitted; follow it with: cellgate task show 1" in err
    no_traceback(err)


def test_tasks_table_and_filters(cli, gateway):
    gateway.add_task("db", "SELECT * FROM a_table_with_a_very_long_name_indeed WHERE x = 1\nAND y = 2")
    gateway.add_task("failing", "\n\n1/0", user="carol")
    p = cli("tasks")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "TARGET", "USER", "CREATED", "CODE"]
    assert lines[1].split() == ["2", "approved", "failing", "carol", "2024-05-01", "12:30:00", "1/0"]
    assert lines[2].endswith("SELECT * FROM a_table_with_a_very_long_name_indee…")
    assert len(lines[2].split("  ")[-1]) == 50
    p = cli("tasks", "--status", "approved", "--target", "failing", "--user", "carol", "--limit", "5", "--json")
    assert p.returncode == 0
    assert [t["id"] for t in json.loads(p.stdout)["tasks"]] == [2]
    assert gateway.requests[-1]["query"] == {"status": "approved", "target": "failing", "user": "carol", "limit": "5"}
    p = cli("tasks", "--user", "nobody")
    assert p.returncode == 0 and p.stdout == "" and "no tasks" in p.stderr


def test_task_show(cli, gateway):
    gateway.add_task("failing", "1/0", why="testing")
    gateway.poll(1)
    gateway.poll(1)
    p = cli("task", "show", "1")
    assert p.returncode == 0, p.stderr
    assert "status:        failed" in p.stdout
    assert "why:           testing" in p.stdout
    assert "error:         ZeroDivisionError: division by zero" in p.stdout
    assert "outputs:       2 outputs: 1 error, 1 stream" in p.stdout
    assert p.stdout.rstrip().endswith("code:\n    1/0")
    p = cli("task", "show", "1", "--json")
    data = json.loads(p.stdout)
    assert data["status"] == "failed" and len(data["outputs"]) == 2
    p = cli("task", "show", "99")
    assert p.returncode == exitcodes.ERROR and "task 99 not found" in p.stderr
    assert cli("task", "show", "x").returncode == exitcodes.USAGE


def test_task_cancel(cli, gateway):
    gateway.add_task("forever", "SELECT 1")
    p = cli("task", "cancel", "1")
    assert p.returncode == 0 and p.stdout == "task 1 cancelled\n"
    p = cli("task", "cancel", "1")
    assert p.returncode == exitcodes.ERROR and "only a waiting task can be cancelled" in p.stderr


def test_reviews_and_review(cli, gateway):
    gateway.add_task("db", "DELETE FROM orders WHERE id = 3", user="carol", why="ticket 42")
    gateway.add_task("db", "SELECT 1", user="alice")
    p = cli("reviews")
    assert p.returncode == 0
    assert p.stdout.splitlines()[1].split() == ["1", "medium", "1", "db", "carol", "2024-05-01", "12:30:00", "ticket",
                                                "42", "DELETE", "FROM", "orders", "WHERE", "id", "=", "3",
                                                "an", "approval", "from", "dba"]
    assert [t["id"] for t in json.loads(cli("reviews", "--json").stdout)["tasks"]] == [1]

    p = cli("review", "reject", "1")
    assert p.returncode == exitcodes.USAGE and "--comment" in p.stderr
    assert not any(r["path"].endswith("/review") for r in gateway.requests)

    p = cli("review", "approve", "1", "--comment", "looks right")
    assert p.returncode == 0 and p.stdout == "task 1 approved by alice\n"
    assert gateway.requests[-1]["body"] == {"decision": "approve", "comment": "looks right"}

    p = cli("review", "reject", "1", "--comment", "too late")
    assert p.returncode == exitcodes.ERROR
    assert p.stderr == "cellgate: error: task 1 is no longer pending review (it is approved)\n"

    p = cli("review", "approve", "2")  # alice's own task
    assert p.returncode == exitcodes.ERROR and "your own task" in p.stderr

    gateway.add_task("db", "SELECT 2", user="carol")
    p = cli("review", "reject", "3", "-m", "use the replica", "--json")
    assert p.returncode == 0 and json.loads(p.stdout)["status"] == "rejected"


def test_targets(cli, gateway):
    p = cli("targets")
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "LANGUAGE", "ONLINE", "REVIEW", "DESCRIPTION"]
    assert lines[1].split() == ["db", "sql", "sql", "yes", "dba", "orders", "database"]
    assert any(ln.split()[:5] == ["denying", "sql", "sql", "yes", "no"] for ln in lines)
    names = [t["name"] for t in json.loads(cli("targets", "--json").stdout)["targets"]]
    assert names[0] == "db"
