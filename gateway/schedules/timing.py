"""When a schedule runs: its cron expression (five fields, UTC), the next time, and what a late tick does.

A schedule keeps ``next_run_at``, its next occurrence. A tick at ``now`` before it does nothing;
at or after it, the occurrence is due. Due by at most ``late_after`` seconds (the gateway's ticks
are a few seconds apart), it runs. Later than that, the gateway was not there when it was due
(stopped, or every replica down): the schedule's ``on_missed`` says what happens, once for all the
occurrences it missed: ``run`` runs it once now, ``skip`` waits for the next one. Either way
``next_run_at`` moves to the first occurrence after ``now``: a schedule never runs twice for one
tick, nor catches up occurrence by occurrence.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from croniter import CroniterError, croniter

ON_MISSED = ("run", "skip")
#: seconds a tick may come after an occurrence and still be on time
LATE_AFTER = 300.0


class ScheduleError(ValueError):
    """A schedule that cannot be: the message says which part and how to write it."""


def check_cron(expression: str) -> str:
    """The expression, if it is five cron fields croniter reads (minute hour day month weekday, UTC)."""
    text = " ".join(str(expression).split())
    if len(text.split(" ")) != 5:
        raise ScheduleError(f"cron {expression!r}: give five fields, minute hour day-of-month month day-of-week "
                            "(UTC), e.g. \"0 8 * * *\" for 08:00 every day")
    try:
        croniter(text, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)).get_next(dt.datetime)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ScheduleError(f"cron {expression!r} cannot be read: {exc}") from None
    return text


def next_after(expression: str, after: dt.datetime) -> dt.datetime:
    """The first occurrence strictly after ``after`` (UTC)."""
    found: dt.datetime = croniter(expression, as_utc(after)).get_next(dt.datetime)
    return as_utc(found)


@dataclass(frozen=True)
class Tick:
    run: bool              # start a run now
    missed: bool           # the occurrence was late (the gateway was away)
    due_at: dt.datetime    # the occurrence this tick is about
    next_run_at: dt.datetime


def tick(expression: str, next_run_at: dt.datetime, now: dt.datetime, on_missed: str,
         late_after: float = LATE_AFTER) -> Tick | None:
    """What a tick at ``now`` does; None before the occurrence."""
    due_at, now = as_utc(next_run_at), as_utc(now)
    if now < due_at:
        return None
    missed = (now - due_at).total_seconds() > late_after
    return Tick(run=not missed or on_missed == "run", missed=missed, due_at=due_at,
                next_run_at=next_after(expression, now))


def as_utc(moment: dt.datetime) -> dt.datetime:
    """An aware UTC time (SQLite gives naive times back; they are UTC)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
