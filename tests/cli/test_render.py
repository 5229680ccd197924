"""Rendering helpers: ANSI stripping, outputs, tables, times, status lines."""

from __future__ import annotations

from cellgate.cli import render


def test_strip_ansi():
    assert render.strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m: x") == "ZeroDivisionError: x"
    assert render.strip_ansi("\x1b[38;5;241m1\x1b[39m") == "1"
    assert render.strip_ansi("\x1b]8;;http://a\x07link\x1b]8;;\x07") == "link"
    assert render.strip_ansi("plain [1] text") == "plain [1] text"


def test_stream_and_results():
    assert render.render_output({"output_type": "stream", "name": "stdout", "text": "a\n"}) == [("stdout", "a\n")]
    assert render.render_output({"output_type": "stream", "name": "stderr", "text": ["a", "b\n"]}) == [("stderr", "ab\n")]
    res = {"output_type": "execute_result", "data": {"text/plain": "42", "text/html": "<b>42</b>"}}
    assert render.render_output(res) == [("stdout", "42\n")]
    disp = {"output_type": "display_data", "data": {"text/plain": ["a\n", "b\n"]}}
    assert render.render_output(disp) == [("stdout", "a\nb\n")]
    png = {"output_type": "display_data", "data": {"image/png": "AAA"}}
    assert render.render_output(png) == [("stderr", "[image/png output not shown]\n")]
    assert render.render_output({"output_type": "mystery"}) == []


def test_error_output():
    err = {"output_type": "error", "ename": "KeyError", "evalue": "'x'",
           "traceback": ["\x1b[31mKeyError\x1b[0m  Traceback", "line 1\nline 2", "\x1b[31mKeyError\x1b[0m: 'x'"]}
    assert render.render_output(err) == [("stderr", "KeyError  Traceback\nline 1\nline 2\nKeyError: 'x'\n")]
    bare = {"output_type": "error", "ename": "SQLError", "evalue": "syntax error", "traceback": []}
    assert render.render_output(bare) == [("stderr", "SQLError: syntax error\n")]


def test_first_line():
    assert render.first_line("\n  SELECT 1\nFROM t") == "SELECT 1"
    assert render.first_line("x" * 60) == "x" * 49 + "…"
    assert len(render.first_line("x" * 50)) == 50 and render.first_line("x" * 50).endswith("x")
    assert render.first_line(None) == ""


def test_table():
    out = render.table(["id", "name"], [[1, "a"], [22, None]])
    assert out == "ID  NAME\n1   a\n22"


def test_format_time(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    import time

    time.tzset()
    assert render.format_time("2024-05-01T12:30:00Z") == "2024-05-01 12:30:00"
    assert render.format_time("2024-05-01T12:30:00.123456+00:00") == "2024-05-01 12:30:00"
    assert render.format_time("2024-05-01T12:30:00") == "2024-05-01 12:30:00"  # naive = UTC
    assert render.format_time(None) == ""
    assert render.format_time("yesterday") == "yesterday"
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    assert render.format_time("2024-05-01T12:30:00Z") == "2024-05-01 18:00:00"
    monkeypatch.delenv("TZ")
    time.tzset()


def test_summarize_outputs():
    assert render.summarize_outputs([]) == "no outputs"
    outs = [{"seq": 1, "output": {"output_type": "stream"}}, {"output_type": "stream"}, {"output_type": "error"}]
    assert render.summarize_outputs(outs) == "3 outputs: 1 error, 2 stream"


def test_status_lines():
    t = {"id": 12, "target": "db", "review_groups": ["dba"]}
    assert render.status_line({**t, "status": "pending_review"}) == \
        "task 12 awaiting review by dba — approve with: cellgate review approve 12"
    assert render.status_line({**t, "status": "pending_review", "review_groups": []}).startswith(
        "task 12 awaiting review by a reviewer")
    assert render.status_line({**t, "status": "rejected", "decided_by": "bob",
                               "decision_comment": "no"}) == "task 12 rejected by bob: no"
    assert render.status_line({**t, "status": "denied", "decision_comment": "DROP"}) == "task 12 denied: DROP"
    assert render.status_line({**t, "status": "killed", "error": {"ename": "Killed", "evalue": "by admin"}}) == \
        "task 12 killed: Killed: by admin"
    assert render.status_line({**t, "status": "succeeded"}) == "task 12 succeeded"
