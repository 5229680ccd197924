"""The extension against the real gateway: gateway mode, /cellgate/api/*, normal mode without a token."""

from __future__ import annotations

import json
import time

from nbext_harness import Gateway, JupyterServer


def test_kernelspecs_come_from_the_gateway(jupyter: JupyterServer) -> None:
    status, specs = jupyter.get("/api/kernelspecs")
    assert status == 200, specs
    assert "payments" in specs["kernelspecs"]
    assert "python3" not in specs["kernelspecs"]  # no local kernels in gateway mode
    assert "cellgate" in specs["kernelspecs"]["payments"]["spec"]["metadata"]


def test_status_names_the_user(jupyter: JupyterServer, gateway: Gateway) -> None:
    status, model = jupyter.get("/cellgate/api/status")
    assert status == 200, model
    assert model["gateway_ok"] is True
    assert model["gateway_url"] == gateway.url
    assert model["user"]["name"] == "dev"


def test_routes_need_jupyter_auth(jupyter: JupyterServer) -> None:
    for path in ("/cellgate/api/status", "/cellgate/api/reviews", "/cellgate/api/tasks/1"):
        status, _ = jupyter.get(path, auth=False)
        assert status == 403, path


def test_reviews_and_tasks_are_proxied(jupyter: JupyterServer, gateway: Gateway) -> None:
    status, body = jupyter.get("/cellgate/api/reviews")
    assert (status, body) == (200, {"tasks": []})

    status, body = jupyter.get("/cellgate/api/tasks/424242")
    assert status == 404
    assert body == {"status": 404, "message": "task 424242 not found"}  # the gateway's own message

    # a real task of dev's (admin submits nothing: dev's token is the one the extension holds)
    from nbext_harness import request
    status, task = request(f"{gateway.url}/api/v1/tasks", token=gateway.dev_token, method="POST",
                           body={"target": "payments", "code": "SELECT 1", "why": "test"})
    assert status == 201, task
    status, body = jupyter.get(f"/cellgate/api/tasks/{task['id']}")
    assert status == 200, body
    assert body["id"] == task["id"] and body["user"] == "dev" and body["code"] == "SELECT 1"


def test_a_session_sends_the_notebook_path(jupyter: JupyterServer, gateway: Gateway) -> None:
    """JPY_SESSION_NAME is the notebook's OS path on the user's machine (cwd_for_path + name)."""
    (jupyter.root / "work").mkdir()
    status, session = jupyter.get("/api/sessions", method="POST", body={
        "path": "work/report.ipynb", "name": "report.ipynb", "type": "notebook", "kernel": {"name": "payments"}})
    assert status == 201, session
    kernel_id = session["kernel"]["id"]
    try:
        path = gateway.kernel_paths()[kernel_id]
        assert path == str(jupyter.root / "work" / "report.ipynb")
    finally:
        jupyter.get(f"/api/sessions/{session['id']}", method="DELETE")


def test_the_token_is_never_logged(jupyter: JupyterServer, gateway: Gateway) -> None:
    jupyter.get("/cellgate/api/status")
    assert gateway.dev_token not in jupyter.log_text()


def test_without_a_token_the_server_stays_in_normal_mode(make_jupyter, gateway: Gateway) -> None:  # type: ignore[no-untyped-def]
    server = make_jupyter({"CELLGATE_URL": gateway.url})
    log = server.log_text()
    assert "no cellgate token for " + gateway.url in log
    assert "normal mode" in log
    assert "Kernels will be managed by the Gateway server" not in log

    status, specs = server.get("/api/kernelspecs")
    assert status == 200 and "payments" not in specs["kernelspecs"] and "python3" in specs["kernelspecs"]

    status, model = server.get("/cellgate/api/status")
    assert status == 200
    assert model["gateway_ok"] is False and model["user"] is None
    assert "not configured" in model["message"]

    status, body = server.get("/cellgate/api/reviews")
    assert status == 503 and "CELLGATE_TOKEN" in body["message"]


def test_credentials_file_is_used_for_its_own_gateway(make_jupyter, gateway: Gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "cellgate-config"
    config.mkdir()
    creds = config / "credentials.json"
    creds.write_text(json.dumps({"gateway_url": gateway.url + "/", "token": gateway.dev_token}))
    creds.chmod(0o600)
    server = make_jupyter({"CELLGATE_CONFIG_DIR": str(config)})
    _status, model = server.get("/cellgate/api/status")
    assert model["gateway_ok"] is True and model["user"]["name"] == "dev", model
    _status, specs = server.get("/api/kernelspecs")
    assert "payments" in specs["kernelspecs"]


def test_a_readable_credentials_file_is_refused(make_jupyter, gateway: Gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "cellgate-config"
    config.mkdir()
    creds = config / "credentials.json"
    creds.write_text(json.dumps({"gateway_url": gateway.url, "token": gateway.dev_token}))
    creds.chmod(0o644)
    server = make_jupyter({"CELLGATE_CONFIG_DIR": str(config)})
    log = server.log_text()
    assert "readable by others" in log and "normal mode" in log
    _status, specs = server.get("/api/kernelspecs")
    assert "payments" not in specs["kernelspecs"]


def test_an_unreachable_gateway_is_reported(make_jupyter) -> None:  # type: ignore[no-untyped-def]
    from nbext_harness import free_port
    server = make_jupyter({"CELLGATE_URL": f"http://127.0.0.1:{free_port()}", "CELLGATE_TOKEN": "cg_nope"})
    started = time.monotonic()
    status, model = server.get("/cellgate/api/status")
    assert status == 200 and model["gateway_ok"] is False
    assert "cannot reach" in model["message"] or "did not answer" in model["message"]
    status, _body = server.get("/cellgate/api/reviews")
    assert status == 502
    assert time.monotonic() - started < 30
