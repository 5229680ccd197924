"""When a schedule runs (gateway/schedules/timing.py): cron checks, the next occurrence, late ticks."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cellgate.gateway.schedules.timing import LATE_AFTER, ScheduleError, check_cron, next_after, tick

T0 = dt.datetime(2026, 12, 3, 7, 59, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("cron", "said"), [("every day", "give five fields"), ("0 8 * *", "give five fields"),
                                            ("0 8 * * * *", "give five fields"), ("61 * * * *", "cannot be read"),
                                            ("0 25 * * *", "cannot be read"), ("a b c d e", "cannot be read")])
def test_a_cron_that_cannot_be_read_is_refused_with_how_to_write_it(cron: str, said: str) -> None:
    with pytest.raises(ScheduleError, match=said):
        check_cron(cron)


def test_cron_is_normalised_and_read_in_utc() -> None:
    assert check_cron("  0   8 * *  1-5 ") == "0 8 * * 1-5"
    assert next_after("0 8 * * *", T0) == dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
    assert next_after("0 8 * * *", dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)) == dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)
    naive = dt.datetime(2026, 12, 3, 7, 59, 30)  # SQLite's: UTC without a zone
    assert next_after("0 8 * * *", naive) == dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)


def test_a_tick_before_the_occurrence_does_nothing_and_one_on_time_runs() -> None:
    due = dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)
    assert tick("0 8 * * *", due, due - dt.timedelta(seconds=1), "skip") is None
    found = tick("0 8 * * *", due, due + dt.timedelta(seconds=20), "skip")
    assert found is not None and found.run and not found.missed and found.due_at == due
    assert found.next_run_at == dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("on_missed", "runs"), [("run", True), ("skip", False)])
def test_a_late_tick_runs_once_or_skips_as_the_schedule_says(on_missed: str, runs: bool) -> None:
    due = dt.datetime(2026, 11, 28, 8, 0, tzinfo=dt.UTC)
    now = dt.datetime(2026, 12, 3, 9, 30, tzinfo=dt.UTC)  # five occurrences missed
    found = tick("0 8 * * *", due, now, on_missed)
    assert found is not None and found.missed and found.run is runs
    assert found.next_run_at == dt.datetime(2026, 12, 4, 8, 0, tzinfo=dt.UTC)  # no catching up, one by one


@given(st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1)),
       st.floats(min_value=0, max_value=10 * 86400), st.sampled_from(["0 8 * * *", "*/5 * * * *", "30 2 1 * *", "0 0 * * 0"]),
       st.sampled_from(["run", "skip"]))
def test_a_tick_never_leaves_the_schedule_due_again_for_the_same_moment(due: dt.datetime, late: float, cron: str,
                                                                         on_missed: str) -> None:
    due = due.replace(tzinfo=dt.UTC, microsecond=0)
    now = due + dt.timedelta(seconds=late)
    found = tick(cron, due, now, on_missed)
    assert found is not None
    assert found.next_run_at > now and tick(cron, found.next_run_at, now, on_missed) is None
    assert found.missed is (late > LATE_AFTER) and found.run is (late <= LATE_AFTER or on_missed == "run")
