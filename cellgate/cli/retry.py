"""Riding out a gateway restart: the retries of `cellgate run`'s submit and of its waits.

A gateway that restarts (or answers 503 while its store stalls) is not a reason for `cellgate run`
to stop following a task that goes on without it. :class:`Patience` retries a call that failed
for a reason that passes (:func:`passes`: no answer at all, or HTTP 502, 503 or 504) with exponential
backoff and full jitter, and gives up once the gateway has not answered for ``give_up_after``
seconds (``--give-up-after``, ``CELLGATE_GIVE_UP_AFTER``, default :data:`GIVE_UP_AFTER`). Every
other error (401, 4xx, and a 500: the gateway failed on this request, waiting would not change
it) is raised at once.

The submit is safe to retry because it carries an ``Idempotency-Key`` (one per invocation, the
same on every retry): the gateway answers a repeat with the task the first attempt created.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from cellgate.cli import exitcodes
from cellgate.cli.client import ApiError, GatewayError, GatewayUnreachable

T = TypeVar("T")

ENV = "CELLGATE_GIVE_UP_AFTER"
#: Seconds without an answer from the gateway after which `cellgate run` gives up (a restart takes seconds).
GIVE_UP_AFTER = 300.0
#: The first pause between two attempts, and the longest (seconds); each pause is drawn in [0, cap).
FIRST_PAUSE = 0.25
LONGEST_PAUSE = 5.0


class BadSetting(GatewayError):
    """A setting from the environment that cannot be used: a usage error, as a bad flag is."""

    exit_code = exitcodes.USAGE


class GaveUp(GatewayError):
    """The gateway did not answer for ``give_up_after`` seconds; ``message`` says what to do next."""

    exit_code = exitcodes.GAVE_UP


#: answers that pass: a proxy in front of a restarting gateway (502, 504), a store that stalls (503)
PASSING_STATUSES = frozenset({502, 503, 504})


def passes(exc: GatewayError) -> bool:
    """Worth retrying: the gateway did not answer (restarting, unreachable) or answered 502/503/504."""
    return isinstance(exc, GatewayUnreachable) or (isinstance(exc, ApiError) and exc.status in PASSING_STATUSES)


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """The pause before retry ``attempt`` (1, 2, …): full jitter under an exponential cap."""
    return rng() * min(LONGEST_PAUSE, FIRST_PAUSE * 2 ** attempt)


@dataclass
class Patience:
    """How long to keep retrying; ``say`` reports on stderr (once per outage, and when it is over)."""

    give_up_after: float = GIVE_UP_AFTER
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic

    def call(self, fn: Callable[[], T], what: str) -> T:
        """``fn()``, retried while it fails for a reason that passes; :class:`GaveUp` (from the last
        error) once the gateway has been silent for ``give_up_after`` seconds. ``what``: what is
        retried, for the messages (``"following task 12"``)."""
        since: float | None = None
        attempt = 0
        while True:
            try:
                result = fn()
            except GatewayError as exc:
                if not passes(exc):
                    raise
                now = self.clock()
                if since is None:
                    since = now
                    self.say(f"cellgate: {exc.message}\ncellgate: {what}: retrying for up to "
                             f"{self.give_up_after:g} s (--give-up-after, {ENV})")
                if now - since >= self.give_up_after:
                    raise GaveUp(f"gave up {what} after {self.give_up_after:g} s without an answer "
                                 f"from the gateway (last: {exc.message})") from None
                attempt += 1
                self.sleep(min(backoff(attempt), max(0.0, since + self.give_up_after - now)))
                continue
            if since is not None:
                self.say(f"cellgate: the gateway answers again; {what}")
            return result


def seconds(text: str) -> float:
    """``--give-up-after``'s value: seconds, 0 or more (0: do not retry)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 7 * 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 to 604800 seconds")
    return value


def from_args(args: argparse.Namespace) -> Patience:
    """``--give-up-after``, else ``$CELLGATE_GIVE_UP_AFTER``, else :data:`GIVE_UP_AFTER`."""
    value = getattr(args, "give_up_after", None)
    if value is None and os.environ.get(ENV):
        try:
            value = seconds(os.environ[ENV])
        except argparse.ArgumentTypeError as exc:
            raise BadSetting(f"{ENV}={exc}") from None
    return Patience(GIVE_UP_AFTER if value is None else value)


def wait_options() -> argparse.ArgumentParser:
    """The parent parser of the commands that follow a task: ``--give-up-after SECONDS``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--give-up-after", type=seconds, metavar="SECONDS",
                        help=f"while the gateway does not answer (a restart, HTTP 5xx), keep retrying this long "
                             f"before giving up (exit {exitcodes.GAVE_UP}; the task goes on); default ${ENV}, "
                             f"then {GIVE_UP_AFTER:g}")
    return parent
