"""`cellgate demo` end to end: it starts, everything answers, it stops cleanly, it re-runs."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import websocket
from demo_harness import DemoRun, alive, get, post

from cellgate.cli.main import build_parser
from cellgate.demo_data import UPDATE_CELL


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[DemoRun]:
    # the state folder where other users can reach it (pytest's tmp_path is root's 0700): run
    # as root, the demo's agent then runs its kernels as unprivileged uids
    shared = Path(tempfile.mkdtemp(prefix="cellgate-demo-"))
    shared.chmod(0o711)
    run = DemoRun(cwd=tmp_path / "cwd", state_dir=shared / "state")
    try:
        yield run
    finally:
        run.close()
        shutil.rmtree(shared, ignore_errors=True)


def test_demo_runs_everything_and_stops_cleanly(demo: DemoRun) -> None:
    demo.start()
    info = demo.wait_ready()
    gw, tokens = info["gateway_url"], info["tokens"]
    assert gw == f"http://127.0.0.1:{demo.port}"
    assert stat.S_IMODE((demo.cwd / "demo.json").stat().st_mode) == 0o600
    assert not (demo.cwd / ".cellgate-demo").exists()  # --dir was given: the state is there
    assert (demo.state_dir / "target" / "payments.db").exists() and (demo.state_dir / "notebooks" / "payments.ipynb").exists()
    assert 'kernel_isolation = "uid"' in (demo.state_dir / "agent.toml").read_text()  # tests run as root

    assert get(f"{gw}/api/v1/me", tokens["dev"]) == (200, {"name": "dev", "is_admin": False, "groups": ["support"]})
    status, me = get(f"{gw}/api/v1/me", tokens["reviewer"])
    assert me["groups"] == ["dba"]
    assert get(f"{gw}/api/v1/me", tokens["admin"])[1]["is_admin"] is True

    status, body = get(f"{gw}/api/v1/targets", tokens["dev"])
    (payments,) = [t for t in body["targets"] if t["name"] == "payments"]
    assert payments["online"] is True and payments["review_groups"] == ["dba"]
    assert payments["kind"] == "sql" and payments["dialect"] == "sqlite" and payments["description"]

    lab = f"http://127.0.0.1:{demo.port + 1}"
    assert info["jupyter_url"].startswith(lab)
    jt = info["jupyter_token"]
    status, specs = get(f"{lab}/api/kernelspecs?token={jt}")
    assert status == 200 and "payments" in specs["kernelspecs"]
    status, page = get(f"{lab}/lab?token={jt}")
    assert status == 200 and "JupyterLab" in page
    status, model = get(f"{lab}/cellgate/api/status?token={jt}")
    assert model["user"]["name"] == "dev"

    # a notebook session starts a kernel on the agent: it must be stopped too
    status, session = post(f"{lab}/api/sessions?token={jt}", {"path": "payments.ipynb", "name": "payments.ipynb",
                                                              "type": "notebook", "kernel": {"name": "payments"}})
    assert status == 201, session
    processes = demo.descendants()
    names = " ".join(" ".join(p.cmdline()) for p in processes)
    assert "gateway" in names and "agent" in names and "jupyterlab" in names and "cellgate.kernels.sql" in names

    started = time.monotonic()
    demo.terminate(signal.SIGTERM)
    assert demo.wait_exit(20) == 0, demo.output()
    assert time.monotonic() - started < 15
    time.sleep(0.5)
    assert alive(processes) == [], [p.cmdline() for p in alive(processes)]
    assert "stopped" in demo.output()
    assert tokens["dev"] not in (demo.state_dir / "logs" / "jupyterlab.log").read_text()


def test_demo_is_rerunnable(demo: DemoRun) -> None:
    demo.start()
    first = demo.wait_ready()
    db = demo.state_dir / "target" / "payments.db"
    mtime = db.stat().st_mtime_ns
    notebook = demo.state_dir / "notebooks" / "payments.ipynb"
    notebook.write_text(notebook.read_text().replace("cellgate demo", "my own notes"))
    demo.terminate(signal.SIGINT)
    assert demo.wait_exit(20) == 0, demo.output()

    demo.start()
    second = demo.wait_ready()
    assert second["tokens"]["dev"] != first["tokens"]["dev"]  # fresh tokens each run
    assert get(f"{second['gateway_url']}/api/v1/me", second["tokens"]["dev"])[1]["name"] == "dev"
    assert get(f"{second['gateway_url']}/api/v1/me", first["tokens"]["dev"])[1]["name"] == "dev"  # old ones still work
    _status, users = get(f"{second['gateway_url']}/api/v1/users", second["tokens"]["admin"])
    assert sorted(u["name"] for u in users["users"]) == ["admin", "dev", "reviewer"]
    assert db.stat().st_mtime_ns == mtime  # not recreated
    assert "my own notes" in notebook.read_text()  # not overwritten
    demo.terminate()
    assert demo.wait_exit(20) == 0


def cmdline(p: psutil.Process) -> list[str]:
    """A process's command line; empty for one that is gone or a zombie (e.g. a kernel just reaped)."""
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def test_a_dying_child_stops_the_demo(demo: DemoRun) -> None:
    demo.start()
    demo.wait_ready()
    processes = demo.descendants()
    (agent,) = [p for p in processes if "agent" in cmdline(p) and "--config" in cmdline(p)]
    agent.kill()
    assert demo.wait_exit(30) != 0
    out = demo.output()
    assert "agent exited unexpectedly" in out and str(demo.state_dir / "logs" / "agent.log") in out
    time.sleep(0.5)
    assert alive(processes) == []


def test_a_busy_port_is_refused(demo: DemoRun) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", demo.port))
        busy.listen()
        demo.start()
        assert demo.wait_exit(30) == 1
    assert f"port {demo.port} is in use" in demo.output()
    assert not (demo.cwd / "demo.json").exists()


def test_default_state_dir_is_under_the_cwd() -> None:
    """Without --dir, the state goes to ./.cellgate-demo (checked without starting anything)."""
    args = build_parser().parse_args(["demo", "--no-browser"])
    assert args.dir == ".cellgate-demo" and args.port == 8765 and args.lab_port is None and args.no_browser


def send_cell(ws: websocket.WebSocket, code: str, metadata: dict | None = None) -> str:
    """Send one execute_request as JupyterLab does; return its msg_id."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "channel": "shell", "buffers": [], "metadata": metadata or {}, "parent_header": {},
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "dev", "session": uuid.uuid4().hex,
                   "date": "2024-01-01T00:00:00.000000Z", "version": "5.3"},
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    return msg_id


def collect(ws: websocket.WebSocket, msg_id: str, timeout: float = 30) -> tuple[dict, list]:
    """The request's execute_reply content and its outputs, once both reply and idle arrived."""
    reply, idle, outputs = None, False, []
    deadline = time.monotonic() + timeout
    while (reply is None or not idle) and time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["header"]["msg_type"]
        if kind == "execute_reply":
            reply = msg["content"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
        elif kind in ("stream", "display_data", "execute_result", "update_display_data", "error"):
            outputs.append(msg)
    assert reply is not None and idle, f"no reply/idle for {msg_id} within {timeout} s: {outputs}"
    return reply, outputs


def run_cell(ws: websocket.WebSocket, code: str, timeout: float = 30) -> tuple[dict, list]:
    return collect(ws, send_cell(ws, code), timeout)


def test_a_notebook_cell_waits_for_review_then_runs(demo: DemoRun) -> None:
    """The demo's story: dev runs the UPDATE cell in JupyterLab, reviewer approves, the output appears."""
    demo.start()
    info = demo.wait_ready()
    gw, tokens, jt = info["gateway_url"], info["tokens"], info["jupyter_token"]
    lab = f"127.0.0.1:{demo.port + 1}"
    status, session = post(f"http://{lab}/api/sessions?token={jt}", {
        "path": "payments.ipynb", "name": "payments.ipynb", "type": "notebook", "kernel": {"name": "payments"}})
    assert status == 201, session
    kernel_id = session["kernel"]["id"]
    ws = websocket.create_connection(
        f"ws://{lab}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4()}&token={jt}", timeout=30)
    try:
        msg_id = send_cell(ws, UPDATE_CELL, {"cellId": "block-stolen-card"})

        deadline = time.monotonic() + 30
        pending: list = []
        while not pending and time.monotonic() < deadline:
            pending = get(f"{gw}/api/v1/reviews", tokens["reviewer"])[1]["tasks"]
            time.sleep(0.2)
        (task,) = pending
        assert task["user"] == "dev" and task["why"].startswith("SUP-1042")
        assert task["notebook_path"].endswith("payments.ipynb")
        status, _ = post(f"{gw}/api/v1/tasks/{task['id']}/review", {"decision": "approve", "comment": "ok"},
                         tokens["reviewer"])
        assert status == 200

        reply, outputs = collect(ws, msg_id, 60)
        assert reply is not None and reply["status"] == "ok", (reply, outputs)
        text = json.dumps([o["content"] for o in outputs])
        assert "UPDATE 1" in text, text  # the SQL kernel's status line: one row updated

        # the demo policy: a read runs at once, a DROP is denied without reaching a reviewer
        reply, outputs = run_cell(ws, "SELECT count(*) AS n FROM cards WHERE status = 'blocked'")
        assert reply["status"] == "ok" and "awaits review" not in json.dumps(outputs)
        reply, _ = run_cell(ws, "DROP TABLE cards")
        assert reply["status"] == "error" and reply["ename"] == "TaskDenied"
        assert "DROP statements are denied" in reply["evalue"]
        assert get(f"{gw}/api/v1/reviews", tokens["reviewer"])[1]["tasks"] == []
    finally:
        ws.close()
    demo.terminate()
    assert demo.wait_exit(20) == 0
    with sqlite3.connect(demo.state_dir / "target" / "payments.db") as conn:
        assert conn.execute("SELECT status FROM cards WHERE id = 7").fetchone() == ("blocked",)


def test_the_demo_offers_templates_and_runs_one(demo: DemoRun) -> None:
    demo.start()
    info = demo.wait_ready()
    gw, tokens = info["gateway_url"], info["tokens"]

    def listed() -> list[str]:
        return [t["name"] for t in get(f"{gw}/api/v1/templates", tokens["dev"])[1]["templates"]]
    deadline = time.monotonic() + 30
    while not listed() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert listed() == ["checks/declined_share", "fixes/refund_transaction", "reports/accounts_by_country",
                        "reports/large_transactions"]
    assert get(f"{gw}/api/v1/templates", tokens["admin"])[1]["source"]["errors"] == {}
    # a read-only report runs at once; the refund waits for dba, as any write
    status, task = post(f"{gw}/api/v1/template-runs", {"template": "reports/large_transactions", "target": "payments",
                                                       "parameters": {"min_cents": "1000", "currency": "EUR"}}, tokens["dev"])
    assert status == 201 and task["status"] in ("approved", "dispatched", "running", "succeeded"), task
    status, task = post(f"{gw}/api/v1/template-runs", {"template": "fixes/refund_transaction", "target": "payments",
                                                       "parameters": {"transaction_id": "1", "reason": "fraud"}}, tokens["dev"])
    assert status == 201 and task["status"] == "pending_review" and task["template"]["parameters"][1]["value"] == "fraud"
    # the notebook report is a read-only SQL notebook: it runs at once and keeps the executed notebook
    status, task = post(f"{gw}/api/v1/template-runs", {"template": "reports/accounts_by_country", "target": "payments",
                                                       "parameters": {"country": "DE", "limit": "3"}}, tokens["dev"])
    assert status == 201 and task["kind"] == "notebook" and task["status"] in ("approved", "dispatched", "running", "succeeded"), task
    deadline = time.monotonic() + 60
    while task["status"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        task = get(f"{gw}/api/v1/tasks/{task['id']}", tokens["dev"])[1]
    assert task["status"] == "succeeded", task
    status, body = get(f"{gw}/api/v1/tasks/{task['id']}/notebook", tokens["dev"])
    newest = body["cells"][2]["outputs"][-1]["data"]["application/vnd.dataresource+json"]["data"]
    with sqlite3.connect(demo.state_dir / "target" / "payments.db") as conn:
        expected = conn.execute("SELECT id FROM accounts WHERE country = 'DE' ORDER BY created_at DESC LIMIT 3").fetchall()
    assert [row["id"] for row in newest] == [r[0] for r in expected]
