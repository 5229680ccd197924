"""GatewayClient error mapping and the exit codes commands return."""

from __future__ import annotations

import argparse

import httpx
import pytest

from cellgate.cli import exitcodes
from cellgate.cli.client import ApiError, AuthError, GatewayClient, GatewayUnreachable, command
from cellgate.cli.cmd_tasks import FINAL, exit_code_for_status


def client_for(handler) -> GatewayClient:
    return GatewayClient("http://gw.test:1/", "secret-token", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("status, code", [
    ("succeeded", exitcodes.OK), ("failed", exitcodes.FAILED), ("rejected", exitcodes.REJECTED),
    ("denied", exitcodes.DENIED), ("cancelled", exitcodes.CANCELLED), ("expired", exitcodes.CANCELLED),
    ("killed", exitcodes.KILLED), ("lost", exitcodes.KILLED), ("running", exitcodes.ERROR),
])
def test_exit_code_for_status(status, code):
    assert exit_code_for_status(status) == code


def test_every_final_status_has_a_distinct_meaning():
    assert FINAL == {"succeeded", "failed", "rejected", "denied", "cancelled", "expired", "killed", "lost"}
    assert len({exitcodes.OK, exitcodes.FAILED, exitcodes.USAGE, exitcodes.REJECTED, exitcodes.DENIED,
                exitcodes.CANCELLED, exitcodes.KILLED, exitcodes.UNREACHABLE, exitcodes.ERROR, exitcodes.GAVE_UP}) == 10


def test_sends_token_and_decodes_json():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers["Authorization"]
        seen["url"] = str(request.url)
        return httpx.Response(200, json={"tasks": []})

    with client_for(handler) as gw:
        assert gw.tasks(status="running", limit=3) == {"tasks": []}
    assert seen == {"auth": "token secret-token", "url": "http://gw.test:1/api/v1/tasks?status=running&limit=3"}


def test_401_is_auth_error_without_the_token():
    with client_for(lambda r: httpx.Response(401, json={"status": 401, "message": "token expired"})) as gw, \
            pytest.raises(AuthError) as info:
        gw.me()
    assert info.value.exit_code == exitcodes.UNREACHABLE
    assert "token expired" in info.value.message and "cellgate login" in info.value.message
    assert "secret-token" not in info.value.message


@pytest.mark.parametrize("response, message", [
    (httpx.Response(404, json={"status": 404, "message": "task 12 not found"}), "task 12 not found"),
    (httpx.Response(500, text="<html>oops</html>"), "HTTP 500 Internal Server Error"),
    (httpx.Response(502, text="bad gateway"), "HTTP 502: bad gateway"),
])
def test_other_errors_are_api_errors(response, message):
    with client_for(lambda r: response) as gw, pytest.raises(ApiError) as info:
        gw.task(12)
    assert info.value.exit_code == exitcodes.ERROR
    assert info.value.status == response.status_code and info.value.message == message


def test_transport_errors_are_unreachable():
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    def slow(request):
        raise httpx.ReadTimeout("slow", request=request)

    for handler, words in ((refuse, "could not be reached"), (slow, "timed out")):
        with client_for(handler) as gw, pytest.raises(GatewayUnreachable) as info:
            gw.targets()
        assert info.value.exit_code == exitcodes.UNREACHABLE
        assert words in info.value.message and "http://gw.test:1" in info.value.message
        assert "--gateway" in info.value.message


def test_all_outputs_pages_until_done():
    calls = []

    def handler(request):
        after = request.url.params.get("after")
        calls.append(after)
        task = {"id": 1, "status": "succeeded"}
        if after is None:
            return httpx.Response(200, json={"task": task, "outputs": [{"seq": 1, "output": {}}], "done": False})
        return httpx.Response(200, json={"task": task, "outputs": [{"seq": 2, "output": {}}], "done": True})

    with client_for(handler) as gw:
        _task, outputs = gw.all_outputs(1)
    assert calls == [None, "1"] and len(outputs) == 2


def test_command_maps_errors_to_exit_codes(capsys):
    @command
    def fails(args):
        raise ApiError(403, "not a reviewer of db")

    assert fails(argparse.Namespace()) == exitcodes.ERROR
    assert capsys.readouterr().err == "cellgate: error: not a reviewer of db\n"
