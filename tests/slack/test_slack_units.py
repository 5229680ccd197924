"""The pieces that need no gateway: request verification, configuration, message rendering."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from slack_standin import sign
from traitlets import TraitError

from cellgate.gateway.errors import Unauthorized
from cellgate.gateway.models import Review, Task, User
from cellgate.gateway.slack import messages
from cellgate.gateway.slack.config import Slack
from cellgate.gateway.slack.notices import shown_key
from cellgate.gateway.slack.verify import RequestVerifier

SECRET = "unit-test-secret"
NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = float(NOW)

    def __call__(self) -> float:
        return self.now


def test_verifier_accepts_a_fresh_signed_request_once() -> None:
    clock = Clock()
    verifier = RequestVerifier(SECRET, clock)
    body = "payload=%7B%7D"
    headers = sign(SECRET, body, NOW)
    verifier.check(body.encode(), headers)
    with pytest.raises(Unauthorized, match="replay"):
        verifier.check(body.encode(), headers)
    clock.now += 301  # past the window the replay is refused as stale, and forgotten
    with pytest.raises(Unauthorized, match="5 minutes"):
        verifier.check(body.encode(), headers)
    verifier.check(body.encode(), sign(SECRET, body, int(clock.now)))
    assert headers["X-Slack-Signature"] not in verifier._seen  # forgotten once it is stale anyway


@pytest.mark.parametrize("skew", [-301, 301, 3600])
def test_verifier_refuses_timestamps_outside_five_minutes(skew: int) -> None:
    body = "text=help"
    with pytest.raises(Unauthorized, match="5 minutes"):
        RequestVerifier(SECRET, Clock()).check(body.encode(), sign(SECRET, body, NOW - skew))


def test_verifier_refuses_forged_tampered_and_unsigned_requests() -> None:
    verifier = RequestVerifier(SECRET, Clock())
    body = "text=help"
    with pytest.raises(Unauthorized, match="signature is invalid"):
        verifier.check(body.encode(), sign("another secret", body, NOW))
    with pytest.raises(Unauthorized, match="signature is invalid"):
        verifier.check(b"text=tasks", sign(SECRET, body, NOW))
    with pytest.raises(Unauthorized, match="required"):
        verifier.check(body.encode(), {})
    with pytest.raises(Unauthorized, match="Unix time"):
        verifier.check(body.encode(), {**sign(SECRET, body, NOW), "X-Slack-Request-Timestamp": "yesterday"})


def test_without_a_secret_the_verifier_refuses_everything() -> None:
    body = "text=help"
    for secret in ("", "   "):
        with pytest.raises(Unauthorized, match="no signing secret is configured"):
            RequestVerifier(secret, Clock()).check(body.encode(), sign(secret or "x", body, NOW))


def test_config_reads_secrets_from_env_then_a_private_file(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CELLGATE_SLACK_BOT_TOKEN", raising=False)
    monkeypatch.delenv("CELLGATE_SLACK_SIGNING_SECRET", raising=False)
    secret = tmp_path / "signing"
    secret.write_text("from-file\n")
    secret.chmod(0o644)
    with pytest.raises(TraitError, match=r"^Slack.signing_secret_file: .* \(mode 644\): run `chmod 600"):
        _ = Slack(signing_secret_file=str(secret)).signing_secret
    secret.chmod(0o600)
    assert Slack(signing_secret_file=str(secret)).signing_secret == "from-file"
    monkeypatch.setenv("CELLGATE_SLACK_SIGNING_SECRET", "from-env")
    assert Slack(signing_secret_file=str(secret)).signing_secret == "from-env"
    assert Slack(signing_secret="from-config").signing_secret == "from-config"
    monkeypatch.setenv("CELLGATE_SLACK_BOT_TOKEN", "xoxb-secret-value")
    shown = repr(Slack())
    assert "xoxb-secret-value" not in shown and "from-env" not in shown and "bot_token=set" in shown


def test_config_validates_and_routes_channels() -> None:
    assert Slack(api_url="http://127.0.0.1:9/api").api_url == "http://127.0.0.1:9/api/"
    with pytest.raises(TraitError, match=r"Slack.api_url"):
        Slack(api_url="ftp://slack.example")
    with pytest.raises(TraitError, match=r"Slack.retries"):
        Slack(retries=0)
    slack = Slack(channels={"payments": "CPAY"}, default_channel="CALL")
    assert slack.channel_for("payments") == "CPAY" and slack.channel_for("other") == "CALL"
    assert Slack().channel_for("payments") == ""


def _task(code: str = "UPDATE t SET a = 1 WHERE id = 2", status: str = "pending_review", **kw) -> Task:
    task = Task(id=7, kind="script", status=status, target="payments", user_id=1, code=code, code_sha256="0" * 64,
                why=kw.pop("why", "SUP-1"), review_groups=["dba"], risk={"level": "medium", "reasons": ["UPDATE with WHERE"]},
                row_estimate=kw.pop("row_estimate", 12), created_at=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC), **kw)
    task.user = User(id=1, name="dev")
    task.missing_approvals = ("an approval from dba",) if status == "pending_review" else ()
    return task


def test_the_templates_command_lists_what_one_may_run_and_how() -> None:
    from cellgate.gateway.templates.catalog import parse

    t = parse("fixes/<b>.sql", b"-- ---\n-- description: a *fix*\n-- targets: [payments]\n-- parameters: {id: {type: integer}}\n-- ---\n"
              b"SELECT {{ id }};\n")
    text = messages.templates_text([t])
    assert text == ("*Templates you may run* (1)\n• *fixes/&lt;b&gt;* (sql, on payments) — a *fix*\n"
                    "    `cellgate templates run fixes/&lt;b&gt; -t TARGET -p id=…`")
    assert messages.templates_text([]) == "*Templates you may run* (0)\n_none_"


def test_a_templated_task_shows_its_template_commit_and_values() -> None:
    task = _task(code="UPDATE refunds SET note = __cg_param_note__ WHERE id = __cg_param_id__",
                 template={"name": "fixes/note", "path": "fixes/note.sql", "commit": "a" * 40, "parameters": [
                     {"name": "id", "type": "integer", "value": 7}, {"name": "note", "type": "text", "value": "<@U1> 'x'"}]})
    _, blocks = messages.notice(task, "http://gw/tasks/7", messages.Facts())
    shown = [b["text"]["text"] for b in blocks if b.get("type") == "section" and "text" in b]
    template = next(s for s in shown if s.startswith("*Template*"))
    assert template == "*Template* fixes/note at `aaaaaaaaaaaa`\n• id = 7\n• note = \"&lt;@U1&gt; 'x'\""


def test_notice_shows_who_what_where_when_why_risk_and_buttons() -> None:
    text, blocks = messages.notice(_task(), "http://gw/tasks/7", messages.Facts(author_slack_id="UDEV"))
    shown = json.dumps(blocks)
    for part in ("dev (<@UDEV>)", "payments", "UPDATE t SET a = 1", "SUP-1", "risk medium: UPDATE with WHERE",
                 "estimated rows affected: 12", "an approval from dba", "<!date^1767323040^"):
        assert part in shown, part
    actions = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [(a["action_id"], a["value"]) for a in actions] == [("cellgate_approve", "7"), ("cellgate_reject", "7")]
    assert text.startswith("cellgate task #7 on payments")


def test_code_is_cut_escaped_and_fits_a_section() -> None:
    code = "<&>" * 1000 + "```"
    block = messages.code_block(code, "http://gw/tasks/7")
    assert len(block) < 3000 and "<&>" not in block.split("\n_")[0]
    assert "more characters. <http://gw/tasks/7|See the whole task.>" in block
    short = messages.code_block("a ``` b", "http://gw/tasks/7")
    assert short.count("```") == 2 and "cut" not in short


def test_decided_and_finished_tasks_keep_who_decided() -> None:
    task = _task(status="succeeded", decided_by="rev", approved_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                 started_at=dt.datetime(2026, 1, 1, 0, 0, 1, tzinfo=dt.UTC),
                 finished_at=dt.datetime(2026, 1, 1, 0, 0, 3, 500000, tzinfo=dt.UTC))
    review = Review(decision="approve", user_id=2)
    review.user = User(id=2, name="rev")
    task.reviews = [review]
    facts = messages.Facts(outputs=2, rows=3)
    _, blocks = messages.notice(task, "http://gw/tasks/7", facts)
    shown = json.dumps(blocks, ensure_ascii=False)
    assert "Approved by rev" in shown and "Succeeded in 2.5 s · 3 rows · 2 outputs" in shown
    assert not [b for b in blocks if b["type"] == "actions"]
    assert shown_key(task) == "succeeded"
    dm = messages.author_dm(task, "http://gw/tasks/7", facts, finished=False)
    assert "was approved by rev." in dm


def test_summarize_counts_rows_and_renders_outputs() -> None:
    rows, text = messages.summarize([
        {"output_type": "stream", "name": "stdout", "text": "hello\n"},
        {"output_type": "execute_result", "data": {"text/plain": "id\n1\n2"}, "metadata": {"cellgate": {"rows": 2}}},
        {"output_type": "error", "ename": "ValueError", "evalue": "bad"},
    ])
    assert rows == 2 and text == "hello\nid\n1\n2\nValueError: bad\n"
    assert messages.summarize([{"output_type": "stream", "text": "x"}])[0] is None


def _template(params: str, name: str = "fixes/t") -> Any:
    from cellgate.gateway.templates.catalog import parse

    return parse(f"{name}.sql", f"-- ---\n-- groups: [g]\n-- targets: [payments]\n-- parameters: {params}\n-- ---\nSELECT 1\n".encode())


def test_the_listing_gives_each_template_a_run_button_and_says_how_many_more() -> None:
    from cellgate.gateway.slack import template_form

    many = [_template("{}", f"t{i:02d}") for i in range(32)]
    text, blocks = template_form.listing(many)
    buttons = [b["accessory"] for b in blocks if "accessory" in b]
    assert [b["value"] for b in buttons] == [f"t{i:02d}" for i in range(30)]
    assert {b["action_id"] for b in buttons} == {"cellgate_template_run"} and len(blocks) == 32
    assert blocks[-1] == {"type": "context", "elements": [messages.mrkdwn("_and 2 more: `cellgate templates`_")]}
    assert text.startswith("*Templates you may run* (32)")
    assert template_form.listing([])[1][1]["text"]["text"] == "_none_"


def test_a_form_falls_back_where_slack_cannot_offer_a_list_and_keeps_defaults_exact() -> None:
    from cellgate.gateway.slack import template_form

    options = ", ".join(f"o{i}" for i in range(150))
    t = _template("{big: {type: select, options: [" + options + "], default: o149}, huge: {type: number, default: 1.0e20}, "
                  "flag: {type: boolean, default: false}, n: {type: integer, default: 5}, "
                  "lines: {type: text, default: \"a\\nb\"}}")
    view = template_form.modal(t, "c" * 40, ["payments", "other"])
    elements = {b["block_id"]: b["element"] for b in view["blocks"] if b.get("type") == "input"}
    assert elements["param_big"]["type"] == "plain_text_input" and elements["param_big"]["initial_value"] == "o149"
    assert elements["param_huge"]["initial_value"] == "100000000000000000000"
    assert elements["param_flag"]["initial_option"]["value"] == "false"
    assert elements["param_n"] == {"type": "number_input", "action_id": "value", "is_decimal_allowed": False, "initial_value": "5"}
    assert elements["param_lines"]["multiline"] is True and elements["param_lines"]["initial_value"] == "a\nb"
    assert "initial_option" not in elements["cellgate_target"]
    assert json.loads(view["private_metadata"]) == {"template": "fixes/t", "commit": "c" * 40} and len(view["title"]["text"]) <= 24


def test_a_submission_is_read_verbatim_and_trusted_for_nothing() -> None:
    from cellgate.gateway.errors import BadRequest
    from cellgate.gateway.slack import template_form

    view = {"private_metadata": json.dumps({"template": "fixes/t", "commit": "c" * 40}), "state": {"values": {
        "cellgate_target": {"value": {"type": "static_select", "selected_option": {"value": "payments"}}},
        "param_a": {"value": {"type": "plain_text_input", "value": "  x;\n'y' ☃ "}},
        "param_b": {"value": {"type": "plain_text_input", "value": None}},
        "param_c": {"value": {"type": "datepicker", "selected_date": "2024-01-02"}},
        "param_d": {"value": {"type": "static_select", "selected_option": None}},
        "cellgate_why": {"value": {"type": "plain_text_input", "value": "because"}}}}}
    form = template_form.read(view)
    assert (form.template, form.commit, form.target, form.why) == ("fixes/t", "c" * 40, "payments", "because")
    assert form.values == {"a": "  x;\n'y' ☃ ", "c": "2024-01-02"}  # an empty field is a value not given
    assert form.block_of("a") == "param_a" and form.block_of("nope") == "cellgate_target"
    for metadata in ("", "7", json.dumps({"template": 1, "commit": "x"}), json.dumps(["fixes/t"])):
        with pytest.raises(BadRequest, match="does not name a template"):
            template_form.read({"private_metadata": metadata})


def test_a_runs_thread_gets_the_decision_then_the_result_and_for_a_notebook_how_to_download_it() -> None:
    task = _task(status="succeeded")
    task.kind = "notebook"
    task.template = {"name": "reports/daily", "commit": "a" * 40, "parameters": []}
    review = Review(decision="approve", user_id=2)
    review.user = User(id=2, name="rev")
    task.reviews = [review]
    facts = messages.Facts(outputs=1, excerpt="ok")
    posts = messages.run_posts(task, "pending_review", "http://gw/tasks/7", facts, True)
    assert posts[0] == "✅ Approved by rev"
    assert posts[1].startswith("✔️ Succeeded") and "```ok```" in posts[1]
    assert posts[1].endswith("_`cellgate task output 7 --ipynb` downloads the executed notebook._")
    assert messages.run_posts(task, "running", "http://gw/tasks/7", facts, False) == [posts[1].replace("\n```ok```", "")]
    task.status, task.kind = "pending_review", "script"
    assert messages.run_posts(task, "pending_review", "http://gw/tasks/7", messages.Facts(), True) == []
    head = messages.run_announced(task, "http://gw/tasks/7")
    assert head.startswith("Your <http://gw/tasks/7|cellgate task #7> (template *reports/daily* on *payments*) was submitted "
                           "(status pending review).")


def test_a_run_slower_than_slack_waits_closes_the_form_and_tells_its_outcome_in_a_direct_message(monkeypatch) -> None:
    """Slack gives a submission 3 s: past ``ANSWER_WITHIN`` the form closes and the run goes on."""
    import asyncio
    from types import SimpleNamespace

    from cellgate.gateway.auth import Identity
    from cellgate.gateway.background import Background
    from cellgate.gateway.slack import template_runs
    from cellgate.gateway.templates.declare import ValueRefused
    from cellgate.gateway.templates.runs import TemplateValueRefused

    told: list[tuple[str, Any]] = []

    class Notifier:
        async def announce_run(self, task_id: int, slack_user_id: str) -> None:
            told.append(("announced", (task_id, slack_user_id)))

        async def direct_message(self, slack_user_id: str, text: str, about: str) -> None:
            told.append(("dm", (slack_user_id, text)))

    async def identify(slack: Any, slack_user_id: str, team_id: str) -> Identity:
        return Identity(kind="user", name="dev", user_id=1, is_admin=False, groups=frozenset())

    outcome: list[Any] = []

    async def run_template(*args: Any) -> Any:
        await asyncio.sleep(0.05)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    monkeypatch.setattr(template_runs, "identify", identify)
    monkeypatch.setattr(template_runs, "run_template", run_template)
    monkeypatch.setattr(template_runs, "ANSWER_WITHIN", 0.01)
    payload = {"user": {"id": "UDEV"}, "team": {"id": "T1"}, "view": {
        "private_metadata": json.dumps({"template": "fixes/t", "commit": "c" * 40}),
        "state": {"values": {"cellgate_target": {"value": {"type": "static_select", "selected_option": {"value": "payments"}}}}}}}

    async def go(result: Any) -> Any:
        outcome[:] = [result]
        background = Background()
        slack = SimpleNamespace(templates=SimpleNamespace(configured=True, catalog=SimpleNamespace(commit="c" * 40)),
                                scripts=object(), store=None, background=background, notifier=Notifier())
        answer = await template_runs.submit(slack, payload)  # type: ignore[arg-type]
        while background.tasks:
            await asyncio.gather(*background.tasks, return_exceptions=True)  # (the run itself raises)
        return answer

    assert asyncio.run(go(SimpleNamespace(id=9, status="pending_review"))) is None
    assert told == [("announced", (9, "UDEV"))]
    told.clear()
    assert asyncio.run(go(TemplateValueRefused(ValueRefused("id", "must be a whole number")))) is None
    assert told == [("dm", ("UDEV", "Your run of template *fixes/t* on *payments* was refused: parameter id: must be a whole number"))]


# ---------------------------------------------------------------------- direct messages (dm_text, dm)
@pytest.mark.parametrize(("text", "code"), [
    ("SELECT 1", "SELECT 1"),
    ("  SELECT a &lt; b, c &gt; d, 'x &amp; y'  ", "SELECT a < b, c > d, 'x & y'"),
    ("SELECT '&amp;lt;', '&amp;amp;'", "SELECT '&lt;', '&amp;'"),  # decoded once: what was typed
    ("```SELECT 1```", "SELECT 1"),
    ("```\nSELECT 1\nFROM t\n```", "SELECT 1\nFROM t"),
    ("```\n    if x:\n        y()\n```", "    if x:\n        y()"),  # indentation kept
    ("`SELECT 1`", "SELECT 1"),
    ("SELECT `id` FROM `t`", "SELECT `id` FROM `t`"),  # MySQL's quoting: not Slack's formatting
    ("`a` + `b`", "`a` + `b`"),
    ("SELECT '☃', \"quoted\", $1 -- é", "SELECT '☃', \"quoted\", $1 -- é"),
])
def test_dm_code_is_what_the_user_typed(text: str, code: str) -> None:
    from cellgate.gateway.slack import dm_text

    assert dm_text.code_of(text) == code


@pytest.mark.parametrize(("text", "why"), [
    ("SELECT * FROM t WHERE email = '<mailto:a@b.io|a@b.io>'", "link or a mention"),
    ("DELETE FROM t -- <@U024BE7LH>", "link or a mention"),
    ("SELECT <http://x.io|x.io>", "link or a mention"),
    ("```SELECT <#C0123|ops>```", "link or a mention"),
    ("SELECT 1 -- <!here>", "link or a mention"),
    ("run this:\n```SELECT 1```", "text around it"),
    ("```SELECT 1``` and ```SELECT 2```", "text around it"),
    ("``````", "no code"),
    ("` `", "no code"),
])
def test_dm_code_that_slack_rewrote_or_that_is_not_there_is_refused(text: str, why: str) -> None:
    from cellgate.gateway.slack import dm_text

    with pytest.raises(dm_text.NotAsTyped, match=why) as refused:
        dm_text.code_of(text)
    assert "nothing was run" in refused.value.message


def test_dm_commands_are_trimmed_and_case_insensitive_and_anything_else_is_code() -> None:
    from cellgate.gateway.slack.dm_text import Command, command_of

    assert command_of("  Help ") == Command("help") and command_of("TARGETS") == Command("targets")
    assert command_of("target") == Command("target") and command_of(" Target  pay&amp;ments ") == Command("target", "pay&ments")
    for code in ("help me", "targets please", "target a b", "SELECT 1", "", "   ", "select * from target"):
        assert command_of(code) is None, code


def test_dm_events_handled_are_a_persons_messages_in_a_direct_message() -> None:
    from slack_standin import BOT_USER, im_message

    from cellgate.gateway.slack.dm import message_of

    sent = im_message("SELECT 1", "UDEV", event_id="Ev1")
    msg = message_of(sent)
    assert msg is not None
    assert (msg.event_id, msg.team_id, msg.slack_user_id, msg.channel, msg.text) == ("Ev1", "T0CELLGATE", "UDEV", "DUDEV", "SELECT 1")
    assert msg.ts == msg.thread_ts == sent["event"]["ts"]
    threaded = message_of(im_message("SELECT 1", "UDEV", thread_ts="1.000001"))
    assert threaded is not None and threaded.thread_ts == "1.000001"
    for ignored in (im_message("x", BOT_USER), im_message("x", "UDEV", bot_id="B1"), im_message("x", "UDEV", subtype="bot_message"),
                    im_message("x", "UDEV", subtype="message_changed"), im_message("x", "UDEV", subtype="message_deleted"),
                    im_message("x", "UDEV", channel="C1", channel_type="channel"), im_message("x", "UDEV", channel_type="mpim"),
                    im_message("x", "UDEV", type="app_mention"), {**sent, "event_id": None}, {**sent, "event": "x"},
                    {**sent, "event": {**sent["event"], "user": None}}, {**sent, "event": {**sent["event"], "text": None}}):
        assert message_of(ignored) is None, ignored


def test_an_events_id_is_handled_once() -> None:
    import asyncio

    verifier = RequestVerifier(SECRET, Clock())

    async def deliveries() -> list[bool]:
        return [await verifier.first_delivery(e) for e in ("Ev1", "Ev2", "Ev1")]
    assert asyncio.run(deliveries()) == [True, True, False]


def test_the_first_reply_under_a_dm_says_where_its_task_stands() -> None:
    url = "http://gw/tasks/7"
    pending = messages.dm_submitted(_task(), url)
    assert pending == ("<http://gw/tasks/7|cellgate task #7> on *payments*: pending review\n⏳ Awaiting review by dba\n"
                       "Still needed: an approval from dba\n_Its result will be posted in this thread._")
    auto = _task(status="approved", decided_by="policy", decision_comment="read-only SQL is auto-approved on this target")
    auto.reviews = []
    lines = messages.dm_submitted(auto, url).splitlines()
    assert lines[:3] == ["<http://gw/tasks/7|cellgate task #7> on *payments*: approved",
                         "✅ Approved by policy: read-only SQL is auto-approved on this target", "Waiting to start"]
