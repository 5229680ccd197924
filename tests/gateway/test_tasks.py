"""The task state machine (gateway/tasks.py): every edge, every non-edge, compare-and-set, atomicity."""

from __future__ import annotations

import hashlib

import pytest
from gateway_harness import Seed, audit_count, events_after, path_to, race, task_events
from sqlalchemy import select

from cellgate.gateway import tasks
from cellgate.gateway.models import AuditEvent, Task
from cellgate.gateway.store import Store

LEGAL = sorted((src, dest) for src, dests in tasks.TRANSITIONS.items() for dest in dests)
STATUSES = sorted(tasks.ALL)


def _edge_id(edge: tuple[str, str]) -> str:
    return f"{edge[0]}->{edge[1]}"


def _snapshot(store: Store, task_id: int) -> tuple[dict[str, object], int, str]:
    def _tx(session):  # type: ignore[no-untyped-def]
        task = session.get(Task, task_id)
        cols = {c.key: getattr(task, c.key) for c in Task.__table__.columns}
        last = session.execute(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(1)).scalar_one()
        return cols, audit_count(session), last.hash
    return store.call(_tx)


def test_the_table_is_the_documented_machine() -> None:
    """docs/api.md lists 13 statuses; every final status has no way out, every other one has."""
    assert tasks.ALL == {"submitted", "denied", "pending_review", "approved", "rejected", "cancelled", "expired",
                         "dispatched", "running", "succeeded", "failed", "killed", "lost"}
    for status in tasks.FINAL:
        assert status not in tasks.TRANSITIONS, f"final status {status} has outgoing edges"
        assert tasks.sources_of(status), f"final status {status} cannot be reached"
    assert set(tasks.TRANSITIONS) == tasks.ALL - tasks.FINAL
    assert tasks.NOT_RUN <= tasks.FINAL
    # at most once: nothing ever goes back to approved/dispatched from a later state
    assert tasks.sources_of(tasks.DISPATCHED) == [tasks.APPROVED]
    assert tasks.sources_of(tasks.APPROVED) == [tasks.PENDING_REVIEW, tasks.SUBMITTED]
    # every status is reachable from submitted
    for status in tasks.ALL:
        assert path_to(status)[-1] == status


@pytest.mark.parametrize("edge", LEGAL, ids=_edge_id)
def test_legal_edge_moves_the_task_and_audits_once(store: Store, seed: Seed, edge: tuple[str, str]) -> None:
    src, dest = edge
    author = seed.user("alice")
    task_id = seed.task(author, status=src)
    before, count_before, _ = _snapshot(store, task_id)

    def _tx(session):  # type: ignore[no-untyped-def]
        head = audit_count(session)
        task = tasks.transition(session, task_id, src, dest, "bob", {"note": "n"}, decided_by="bob")
        # the event is written in this very transaction, beside the change it records
        new = events_after(session, head)
        return task.status, [(e.action, e.actor, e.task_id, e.detail) for e in new]

    status, new_events = store.call(_tx)
    assert status == dest
    assert new_events == [(f"task.{dest}", "bob", task_id, {"from": src, "code_sha256": before["code_sha256"], "note": "n"})]

    after, count_after, _ = _snapshot(store, task_id)
    assert after["status"] == dest
    assert after["decided_by"] == "bob"
    assert count_after == count_before + 1
    assert after["updated_at"] >= before["updated_at"]
    if dest == tasks.RUNNING:
        assert after["started_at"] is not None
    else:
        assert after["started_at"] == before["started_at"]
    if dest in tasks.FINAL:
        assert after["finished_at"] is not None
    else:
        assert after["finished_at"] is None
    assert seed.verify().ok


def test_started_and_finished_are_set_once_along_a_run(store: Store, seed: Seed) -> None:
    task_id = seed.task(seed.user("alice"), status=tasks.DISPATCHED)
    assert _snapshot(store, task_id)[0]["started_at"] is None
    store.call(lambda s: tasks.transition(s, task_id, tasks.DISPATCHED, tasks.RUNNING, "agent"))
    running, _, _ = _snapshot(store, task_id)
    assert running["started_at"] is not None and running["finished_at"] is None
    store.call(lambda s: tasks.transition(s, task_id, tasks.RUNNING, tasks.SUCCEEDED, "agent"))
    done, _, _ = _snapshot(store, task_id)
    assert done["started_at"] == running["started_at"]
    assert done["finished_at"] is not None and done["finished_at"] >= done["started_at"]


@pytest.mark.parametrize("src", STATUSES)
def test_every_missing_edge_is_illegal_and_writes_nothing(store: Store, seed: Seed, src: str) -> None:
    """From a task really in ``src``: every destination the table does not list is refused."""
    task_id = seed.task(seed.user("alice"), status=src)
    before = _snapshot(store, task_id)
    illegal = [d for d in STATUSES if d not in tasks.TRANSITIONS.get(src, frozenset())]
    if src in tasks.FINAL:
        assert illegal == STATUSES, f"final status {src} has a way out"
    for dest in illegal:
        with pytest.raises(tasks.IllegalTransition) as info:
            store.call(lambda s, d=dest: tasks.transition(s, task_id, src, d, "mallory"))
        assert (info.value.source, info.value.dest) == (src, dest)
        assert isinstance(info.value, tasks.TransitionError)
        # advance() (from whatever the task is in) refuses the same edges
        with pytest.raises(tasks.IllegalTransition):
            store.call(lambda s, d=dest: tasks.advance(s, task_id, d, "mallory"))
    assert _snapshot(store, task_id) == before, "an illegal transition changed the task or the audit log"


@pytest.mark.parametrize("edge", LEGAL, ids=_edge_id)
def test_stale_source_is_a_conflict_and_changes_nothing(store: Store, seed: Seed, edge: tuple[str, str]) -> None:
    """The caller believes the task is in ``src``; someone else already moved it on."""
    src, dest = edge
    # someone else took another way out of src first (every non-final status has several)
    actual = next(d for d in sorted(tasks.TRANSITIONS[src]) if d != dest)
    task_id = seed.task(seed.user("alice"), status=src)
    store.call(lambda s: tasks.transition(s, task_id, src, actual, "someone-else"))
    before = _snapshot(store, task_id)

    with pytest.raises(tasks.TransitionConflict) as info:
        store.call(lambda s: tasks.transition(s, task_id, src, dest, "late"))
    assert (info.value.task_id, info.value.expected, info.value.dest, info.value.actual) == (task_id, src, dest, actual)
    assert _snapshot(store, task_id) == before
    assert seed.verify().ok


def test_missing_task_is_a_conflict(store: Store, seed: Seed) -> None:
    with pytest.raises(tasks.TransitionConflict) as info:
        store.call(lambda s: tasks.transition(s, 4242, tasks.SUBMITTED, tasks.APPROVED, "x"))
    assert info.value.actual is None and "gone" in str(info.value)
    with pytest.raises(tasks.TransitionConflict):
        store.call(lambda s: tasks.advance(s, 4242, tasks.APPROVED, "x"))
    assert store.call(audit_count) == 0


def test_create_audits_the_code_and_its_hash(store: Store, seed: Seed) -> None:
    author = seed.user("alice")
    code = "update accounts set balance = 0 where id = 7"

    def _tx(session):  # type: ignore[no-untyped-def]
        head = audit_count(session)
        task = tasks.create(session, "alice", kind="script", target="prod", user_id=author, code=code, why="fix #7")
        return task.id, task.status, task.code_sha256, events_after(session, head)

    task_id, status, digest, events = store.call(_tx)
    assert status == tasks.SUBMITTED
    assert digest == tasks.sha256(code) == hashlib.sha256(code.encode()).hexdigest()
    assert [(e.action, e.task_id, e.actor) for e in events] == [("task.submitted", task_id, "alice")]
    assert events[0].detail["code"] == code and events[0].detail["code_sha256"] == digest
    assert events[0].detail["why"] == "fix #7"


def test_a_failing_transaction_keeps_neither_the_change_nor_the_event(store: Store, seed: Seed) -> None:
    task_id = seed.task(seed.user("alice"), status=tasks.PENDING_REVIEW, review_groups=["dba"])
    before = _snapshot(store, task_id)

    class Boom(Exception):
        pass

    def _tx(session):  # type: ignore[no-untyped-def]
        tasks.transition(session, task_id, tasks.PENDING_REVIEW, tasks.APPROVED, "bob")
        raise Boom

    with pytest.raises(Boom):
        store.call(_tx)
    assert _snapshot(store, task_id) == before
    assert "task.approved" not in store.call(lambda s: task_events(s, task_id))
    # and the chain is whole: the next transition appends right after the last kept event
    store.call(lambda s: tasks.transition(s, task_id, tasks.PENDING_REVIEW, tasks.REJECTED, "bob"))
    assert seed.verify().ok


@pytest.mark.postgres
def test_racing_transitions_exactly_one_wins(pg_store: Store) -> None:
    """Eight sessions at once move the same pending task to four different outcomes."""
    seed = Seed(pg_store)
    author = seed.user("alice")
    dests = sorted(tasks.TRANSITIONS[tasks.PENDING_REVIEW])
    for _round in range(3):
        task_id = seed.task(author, status=tasks.PENDING_REVIEW, review_groups=["dba"])
        results = race(8, lambda i: pg_store.call(
            lambda s: tasks.transition(s, task_id, tasks.PENDING_REVIEW, dests[i % len(dests)], f"r{i}").status))
        wins = [value for kind, value in results if kind == "ok"]
        losses = [value for kind, value in results if kind == "err"]
        assert len(wins) == 1, results
        assert all(isinstance(exc, tasks.TransitionConflict) for exc in losses), losses
        assert all(exc.actual == wins[0] for exc in losses)
        assert seed.status(task_id) == wins[0]
        events = pg_store.call(lambda s: task_events(s, task_id))
        assert events == ["task.submitted", "task.pending_review", f"task.{wins[0]}"]
    assert seed.verify().ok
