"""cellgate/cli/retry.py and the waits of `cellgate run` across a gateway that goes away and comes back."""

from __future__ import annotations

import httpx
import pytest

from cellgate.cli import exitcodes, retry
from cellgate.cli.client import ApiError, AuthError, GatewayClient, GatewayUnreachable
from cellgate.cli.cmd_tasks import follow, submit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds + 1.0  # each attempt also takes a second


def patient(give_up_after: float, said: list[str]) -> tuple[retry.Patience, Clock]:
    clock = Clock()
    return retry.Patience(give_up_after, say=said.append, sleep=clock.sleep, clock=lambda: clock.now), clock


def failing(errors: list[Exception], result: str = "done"):  # type: ignore[no-untyped-def]
    def call() -> str:
        if errors:
            raise errors.pop(0)
        return result
    return call


def test_passing_failures_are_retried_and_the_recovery_said() -> None:
    said: list[str] = []
    p, clock = patient(60, said)
    errors: list[Exception] = [GatewayUnreachable("the gateway could not be reached"), ApiError(503, "store stalled"),
                               ApiError(502, "Bad Gateway")]
    assert p.call(failing(errors), "following task 3") == "done"
    assert len(clock.pauses) == 3
    assert said[0].startswith("cellgate: the gateway could not be reached\ncellgate: following task 3: retrying for up to 60 s")
    assert said[1:] == ["cellgate: the gateway answers again; following task 3"]


@pytest.mark.parametrize("exc", [ApiError(404, "task 3 not found"), ApiError(422, "key reused"), AuthError("refused"),
                                 ApiError(500, "Unhandled error")])
def test_other_errors_are_raised_at_once(exc: Exception) -> None:
    said: list[str] = []
    p, clock = patient(60, said)
    with pytest.raises(type(exc)):
        p.call(failing([exc]), "x")
    assert clock.pauses == [] and said == []


def test_it_gives_up_after_the_time_with_its_own_exit_code() -> None:
    said: list[str] = []
    p, clock = patient(10, said)
    with pytest.raises(retry.GaveUp) as info:
        p.call(failing([GatewayUnreachable("down")] * 100), "following task 3")
    assert info.value.exit_code == exitcodes.GAVE_UP == 9
    assert info.value.message == "gave up following task 3 after 10 s without an answer from the gateway (last: down)"
    assert 10 <= clock.now <= 12  # never sleeps past the deadline
    assert len(said) == 1


def test_zero_means_no_retry() -> None:
    p, clock = patient(0, [])
    with pytest.raises(retry.GaveUp):
        p.call(failing([GatewayUnreachable("down")]), "x")
    assert clock.pauses == []


def test_backoff_is_jittered_under_an_exponential_cap() -> None:
    assert [retry.backoff(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5, 10)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert retry.backoff(3, rng=lambda: 0.0) == 0.0


@pytest.mark.parametrize(("text", "ok"), [("0", True), ("2.5", True), ("-1", False), ("soon", False)])
def test_give_up_after_values(text: str, ok: bool) -> None:
    if ok:
        assert retry.seconds(text) == float(text)
    else:
        with pytest.raises(Exception, match="seconds"):
            retry.seconds(text)


def _task(status: str) -> dict:
    return {"id": 3, "status": status, "target": "db"}


def test_follow_resumes_from_the_last_output_across_an_outage(capsys: pytest.CaptureFixture[str]) -> None:
    """Polls fail (no connection, 503) between pages: every output is printed once, in order."""
    afters: list[str | None] = []
    script: list[httpx.Response | Exception] = [
        httpx.Response(200, json={"task": _task("running"), "outputs": [
            {"seq": 1, "output": {"output_type": "stream", "name": "stdout", "text": "one\n"}}], "done": False}),
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"status": 503, "message": "the store does not answer"}),
        httpx.Response(200, json={"task": _task("running"), "outputs": [
            {"seq": 2, "output": {"output_type": "stream", "name": "stdout", "text": "two\n"}}], "done": False}),
        httpx.ReadTimeout("slow"),
        httpx.Response(200, json={"task": _task("succeeded"), "outputs": [
            {"seq": 3, "output": {"output_type": "stream", "name": "stdout", "text": "three\n"}}], "done": True}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        afters.append(request.url.params.get("after"))
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step

    gw = GatewayClient("http://gw.test:1", "t", transport=httpx.MockTransport(handler))
    said: list[str] = []
    p, _ = patient(60, said)
    task, outputs = follow(gw, _task("running"), patience=p)
    assert task["status"] == "succeeded" and len(outputs) == 3
    assert capsys.readouterr().out == "one\ntwo\nthree\n"
    assert afters == [None, "1", "1", "1", "2", "2"]


def test_submit_sends_one_key_on_every_retry() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        if len(keys) < 3:
            raise httpx.ReadTimeout("the answer was lost")
        return httpx.Response(200, json=_task("pending_review"))

    gw = GatewayClient("http://gw.test:1", "t", transport=httpx.MockTransport(handler))
    p, _ = patient(60, [])
    assert submit(gw, {"target": "db", "code": "SELECT 1"}, p)["id"] == 3
    assert len(keys) == 3 and len(set(keys)) == 1 and len(keys[0]) == 36
    first = keys[0]
    keys.clear()
    submit(gw, {"target": "db", "code": "SELECT 1"}, p)
    assert len(set(keys)) == 1 and keys[0] != first  # a new invocation: a new key


def test_a_submit_that_never_got_an_answer_says_to_check_before_running_again() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    gw = GatewayClient("http://gw.test:1", "t", transport=httpx.MockTransport(handler))
    p, _ = patient(5, [])
    with pytest.raises(GatewayUnreachable, match=r"No task was confirmed.*cellgate tasks --limit 5") as info:
        submit(gw, {"target": "db", "code": "SELECT 1"}, p)
    assert info.value.exit_code == exitcodes.UNREACHABLE
