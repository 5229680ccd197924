"""Concurrent transitions have one winner: a hypothesis state machine on a real PostgreSQL store.

Tasks are made in a status on the way (pending review, approved, dispatched, running); each step
races two to four moves on one task in threads released together, each move the gateway's own
function for it: a reviewer's approve or reject (``reviews.decide``), the author's cancel
(``TaskFlow.cancel``), the dispatch of an approved task (the relay's compare-and-set), the agent
reporting it running, the kernel stopped under it (``Relay.finish`` with ``killed``), its agent gone
(``Relay.finish`` with ``lost``, as ``KernelLifecycle.lost`` ends it) and the run ending. After each
step: of the moves that conflict exactly one won (and one won whenever one could), every winner is
one legal edge from the status before it, a losing decision left no review behind, a task is
dispatched at most once, and ``audit.verify`` holds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from gateway_harness import Seed, ident, race
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from cellgate.gateway import audit, reviews, tasks
from cellgate.gateway.agents import AgentRegistry
from cellgate.gateway.errors import Conflict
from cellgate.gateway.events import TaskEvents
from cellgate.gateway.flow import TaskFlow
from cellgate.gateway.models import AuditEvent, Review, Task
from cellgate.gateway.relay import Relay, _running_tx
from cellgate.gateway.store import Store

pytestmark = pytest.mark.postgres

STARTS = [tasks.PENDING_REVIEW, tasks.APPROVED, tasks.DISPATCHED, tasks.RUNNING]
MOVES = ["approve", "approve2", "reject", "cancel", "dispatch", "running", "kill", "agent_gone", "succeed"]
#: the moves that apply from each status, and where each one takes the task
APPLIES: dict[str, dict[str, str]] = {
    tasks.PENDING_REVIEW: {"approve": tasks.APPROVED, "approve2": tasks.APPROVED, "reject": tasks.REJECTED,
                           "cancel": tasks.CANCELLED},
    tasks.APPROVED: {"cancel": tasks.CANCELLED, "dispatch": tasks.DISPATCHED},
    tasks.DISPATCHED: {"running": tasks.RUNNING, "kill": tasks.KILLED, "agent_gone": tasks.LOST,
                       "succeed": tasks.SUCCEEDED},
    tasks.RUNNING: {"kill": tasks.KILLED, "agent_gone": tasks.LOST, "succeed": tasks.SUCCEEDED},
}


def serial_histories(before: str, moves: list[str]) -> set[tuple[str, ...]]:
    """The statuses a task goes through if ``moves`` ran one after another, in every order: what
    the race may show (each move applies when the task's status then allows it, else it loses)."""
    found = set()
    for order in itertools.permutations(moves):
        status, path = before, []
        for move in order:
            dest = APPLIES.get(status, {}).get(move)
            if dest is not None:
                status = dest
                path.append(dest)
        found.add(tuple(path))
    return found


class World:
    """The store and the gateway's parts whose functions the moves call."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.seed = Seed(store)
        self.author = self.seed.user("dev")
        self.reviewers = (self.seed.user("rev1", ["dba"]), self.seed.user("rev2", ["dba"]))
        events, agents = TaskEvents(), AgentRegistry()
        self.flow = TaskFlow(store, events, agents, "http://gateway.test")
        self.relay = Relay(store, events, agents, self.flow)

    def move(self, name: str, task_id: int) -> Callable[[], Any]:
        store, relay = self.store, self.relay
        moves: dict[str, Callable[[], Any]] = {
            "approve": lambda: store.call(lambda s: reviews.decide(s, task_id, self.reviewers[0], "approve", "ok")),
            "approve2": lambda: store.call(lambda s: reviews.decide(s, task_id, self.reviewers[1], "approve", "ok")),
            "reject": lambda: store.call(lambda s: reviews.decide(s, task_id, self.reviewers[1], "reject", "no")),
            "cancel": lambda: asyncio.run(self.flow.cancel(task_id, ident(self.author), "changed my mind")),
            "dispatch": lambda: store.call(lambda s: tasks.transition(s, task_id, tasks.APPROVED, tasks.DISPATCHED,
                                                                      "gateway", {"agent": "a1"}, agent_id="a1")),
            "running": lambda: store.call(lambda s: _running_tx(s, task_id)),
            "kill": lambda: asyncio.run(relay.finish(task_id, tasks.KILLED, "KernelStopped", "the kernel was shut down")),
            "agent_gone": lambda: asyncio.run(relay.finish(task_id, tasks.LOST, "TaskLost", "agent a1 disconnected")),
            "succeed": lambda: asyncio.run(relay.finish(task_id, tasks.SUCCEEDED, None, None)),
        }
        return moves[name]

    def history(self, task_id: int) -> list[tuple[str, str]]:
        """The task's transitions as audited: (from, to), in order."""
        rows = self.store.call(lambda s: list(s.execute(
            select(AuditEvent.action, AuditEvent.detail).where(AuditEvent.task_id == task_id).order_by(AuditEvent.id))))
        return [(detail["from"], action.removeprefix("task.")) for action, detail in rows
                if action.removeprefix("task.") in tasks.ALL and action != "task.submitted"]

    def status(self, task_id: int) -> str:
        return self.seed.status(task_id)

    def reviews_of(self, task_id: int) -> int:
        return self.store.call(lambda s: s.execute(select(func.count()).select_from(Review)
                                                   .where(Review.task_id == task_id)).scalar_one())


def machine(store: Store) -> type[RuleBasedStateMachine]:
    class TransitionRaces(RuleBasedStateMachine):
        made = Bundle("tasks")

        @initialize()
        def world(self) -> None:
            self.w = World(store)

        @rule(target=made, start=st.sampled_from(STARTS))
        def new_task(self, start: str) -> int:
            return self.w.seed.task(self.w.author, status=start, review_groups=["dba"], review_rule={"mode": "any"})

        @rule(task_id=made, moves=st.lists(st.sampled_from(MOVES), min_size=2, max_size=4))
        def race_moves(self, task_id: int, moves: list[str]) -> None:
            before = self.w.status(task_id)
            seen = len(self.w.history(task_id))
            reviews_before = self.w.reviews_of(task_id)
            results = race(len(moves), lambda i: self.w.move(moves[i], task_id)())
            for (kind, value), name in zip(results, moves, strict=True):
                if kind == "err":  # a loser is told why (Conflict, TransitionConflict), never anything else
                    assert isinstance(value, (Conflict, tasks.TransitionConflict)), (name, repr(value))
            won = self.w.history(task_id)[seen:]
            after = self.w.status(task_id)
            # the race ended as the moves would have one after another: of the moves that conflict one
            # won, each winner is one legal edge from the status before it, and one won whenever one could
            shown = tuple(dest for _, dest in won)
            assert shown in serial_histories(before, moves), (before, moves, won)
            assert [src for src, _ in won] == [before, *shown][:len(shown)], (before, moves, won)
            assert after == (shown[-1] if shown else before), (before, moves, won, after)
            # a decision that lost left no review behind; the winning one did
            decided = sum(1 for dest in shown if dest in (tasks.APPROVED, tasks.REJECTED))
            assert self.w.reviews_of(task_id) == reviews_before + decided, (before, moves, won)

        @invariant()
        def chain_holds(self) -> None:
            if not hasattr(self, "w"):
                return
            result = store.call(audit.verify)
            assert result.ok, result.message

        @invariant()
        def dispatched_at_most_once(self) -> None:
            if not hasattr(self, "w"):
                return
            counts = store.call(lambda s: list(s.execute(
                select(AuditEvent.task_id, func.count()).where(AuditEvent.action == "task.dispatched")
                .group_by(AuditEvent.task_id)).all()))
            assert all(n == 1 for _, n in counts), counts

        @invariant()
        def statuses_are_legal(self) -> None:
            if not hasattr(self, "w"):
                return
            found = store.call(lambda s: set(s.execute(select(Task.status)).scalars()))
            assert found <= tasks.ALL, found

    return TransitionRaces


def test_concurrent_transitions_have_one_winner(pg_store: Store) -> None:
    run_state_machine_as_test(machine(pg_store), settings=settings(
        max_examples=6, stateful_step_count=8, deadline=None, database=None, derandomize=True,
        suppress_health_check=list(HealthCheck)))
