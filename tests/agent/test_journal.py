"""The agent's task journal (agent/journal.py): what survives a restart, what is forgotten, one agent per directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cellgate.agent.journal import COMPACT_AFTER, JOURNAL_FILE, Journal, JournalError


def _loaded(state_dir: Path) -> Journal:
    journal = Journal(state_dir)
    journal.load()
    return journal


def test_started_and_ended_tasks_survive_a_restart_and_acked_ones_do_not(tmp_path: Path) -> None:
    journal = _loaded(tmp_path)
    journal.started(1, "k1", "m1")
    journal.started(2, "k1")
    journal.ended(2, "error", "ZeroDivisionError", "division by zero", 4)
    journal.started(3, "k2")
    journal.ended(3, "ok", None, None, 2)
    journal.forget(3)
    journal.close()  # as a SIGKILL leaves it: every record is on disk already

    again = _loaded(tmp_path)
    reports = {r.task_id: r for r in again.reports({2: 1})}
    assert set(reports) == {1, 2}
    assert reports[1].state == "started" and reports[1].kernel_id == "k1" and reports[1].status is None
    assert (reports[1].msg_id, reports[2].msg_id) == ("m1", None)  # the request's, to be tracked again by
    assert (reports[2].state, reports[2].status, reports[2].ename, reports[2].last_seq, reports[2].unacked) == \
        ("ended", "error", "ZeroDivisionError", 4, 1)
    # rewritten at start with the open tasks only
    lines = [json.loads(line) for line in (tmp_path / JOURNAL_FILE).read_text().splitlines()]
    assert [(rec["t"], rec["task"]) for rec in lines] == [("started", 1), ("started", 2), ("ended", 2)]
    again.close()


def test_a_later_cell_of_a_task_goes_on_with_its_numbering(tmp_path: Path) -> None:
    journal = _loaded(tmp_path)
    journal.started(5, "k")
    journal.ended(5, "ok", None, None, 7)
    journal.started(5, "k")  # the notebook's next cell
    entry = journal.open[5]
    assert (entry.state, entry.last_seq) == ("started", 7)
    journal.close()


def test_a_line_cut_by_a_crash_is_skipped(tmp_path: Path) -> None:
    journal = _loaded(tmp_path)
    journal.started(1, "k")
    journal.close()
    with open(tmp_path / JOURNAL_FILE, "a") as f:
        f.write('{"t": "ended", "task": 1, "sta')  # the crash came mid-write
    again = _loaded(tmp_path)
    assert [r.state for r in again.reports({})] == ["started"]
    again.close()


def test_a_second_agent_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    first = _loaded(tmp_path)
    with pytest.raises(JournalError, match="another agent process uses the state directory"):
        _loaded(tmp_path)
    first.close()
    _loaded(tmp_path).close()  # free again once the first is gone


def test_the_file_is_compacted_when_it_holds_many_forgotten_tasks(tmp_path: Path) -> None:
    journal = _loaded(tmp_path)
    journal.started(0, "k")  # still open
    for task_id in range(1, COMPACT_AFTER + 1):
        journal.started(task_id, "k")
        journal.ended(task_id, "ok", None, None, 1)
        journal.forget(task_id)
    assert len((tmp_path / JOURNAL_FILE).read_text().splitlines()) < 10
    journal.started(99999, "k")  # the new file is the one written to
    journal.close()
    again = _loaded(tmp_path)
    assert {r.task_id for r in again.reports({})} == {0, 99999}
    again.close()


def test_without_a_state_directory_it_keeps_tasks_in_memory_only() -> None:
    journal = Journal(None)
    journal.started(1, "k")
    assert [r.task_id for r in journal.reports({})] == [1]
