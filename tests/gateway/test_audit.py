"""The audit hash chain (gateway/audit.py): verify, tampering of every kind, concurrent appends, export."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json

import pytest
from gateway_harness import race
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from cellgate.gateway import audit
from cellgate.gateway.models import AuditEvent, AuditHead
from cellgate.gateway.store import Store

UTC = dt.UTC


def _append_many(store: Store, n: int, start: int = 1) -> None:
    def _tx(session: Session) -> None:
        for i in range(start, start + n):
            audit.append(session, f"user{i % 3}", "test.event", task_id=i, target="prod",
                         detail={"i": i, "text": f"row {i}, with \"quotes\"\nand é — ünïcode"})
    store.call(_tx)


def _verify(store: Store) -> audit.Verification:
    return store.call(audit.verify)


def test_empty_chain_verifies(store: Store) -> None:
    result = _verify(store)
    assert (result.ok, result.events, result.first_bad) == (True, 0, None)


def test_chain_verifies_after_many_appends_in_many_transactions(store: Store) -> None:
    for batch in range(10):
        _append_many(store, 15, start=batch * 15 + 1)
    result = _verify(store)
    assert (result.ok, result.events, result.first_bad) == (True, 150, None), result.message
    assert result.as_dict() == {"ok": True, "events": 150, "first_bad": None, "message": result.message}

    def _links(session: Session) -> list[tuple[int, str, str]]:
        return [(e.id, e.prev_hash, e.hash) for e in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars()]
    links = store.call(_links)
    assert [i for i, _, _ in links] == list(range(1, 151))
    assert links[0][1] == audit.GENESIS
    assert all(prev == links[k - 1][2] for k, (_, prev, _) in enumerate(links) if k)
    head = store.call(lambda s: (s.get(AuditHead, 1).last_id, s.get(AuditHead, 1).last_hash))
    assert head == (150, links[-1][2])


ALTERATIONS = {
    "detail": {"detail": {"i": 0, "text": "nothing to see"}},
    "actor": {"actor": "somebody-else"},
    "ts": {"ts": dt.datetime(2020, 1, 1, tzinfo=UTC)},
    "action": {"action": "test.harmless"},
    "task_id": {"task_id": 999},
    "target": {"target": "staging"},
}


@pytest.mark.parametrize("field", sorted(ALTERATIONS))
@pytest.mark.parametrize("which", [1, 7, 20])
def test_altered_row_is_the_first_bad(store: Store, field: str, which: int) -> None:
    _append_many(store, 20)
    store.call(lambda s: s.execute(update(AuditEvent).where(AuditEvent.id == which).values(**ALTERATIONS[field])))
    result = _verify(store)
    assert (result.ok, result.first_bad, result.events) == (False, which, which - 1), result.message
    assert str(which) in result.message


def test_altered_row_with_its_own_hash_recomputed_breaks_the_next_link(store: Store) -> None:
    """A forger who recomputes the changed row's hash is caught at the next row (its prev_hash)."""
    _append_many(store, 10)

    def _forge(session: Session) -> None:
        ev = session.get(AuditEvent, 4)
        ev.detail = {"i": 4, "text": "forged"}
        ev.hash = audit.event_digest(ev.prev_hash, ev)
    store.call(_forge)
    result = _verify(store)
    assert (result.ok, result.first_bad) == (False, 5), result.message


@pytest.mark.parametrize("which", [1, 5, 9])
def test_deleted_middle_row_is_missing(store: Store, which: int) -> None:
    _append_many(store, 10)
    store.call(lambda s: s.execute(delete(AuditEvent).where(AuditEvent.id == which)))
    result = _verify(store)
    assert (result.ok, result.first_bad, result.events) == (False, which, which - 1), result.message
    assert "missing" in result.message


@pytest.mark.parametrize("n_deleted", [1, 3, 10])
def test_deleted_last_rows_are_detected_by_the_head(store: Store, n_deleted: int) -> None:
    _append_many(store, 10)
    kept = 10 - n_deleted
    store.call(lambda s: s.execute(delete(AuditEvent).where(AuditEvent.id > kept)))
    result = _verify(store)
    assert (result.ok, result.first_bad, result.events) == (False, kept + 1, kept), result.message
    assert "deleted" in result.message


def _forged_row(session: Session, id_: int, prev_hash: str, *, rehash: bool) -> AuditEvent:
    ev = AuditEvent(id=id_, ts=dt.datetime.now(UTC), actor="admin", action="task.approved", task_id=1,
                    target="prod", kernel_id=None, detail={"forged": True}, prev_hash=prev_hash, hash="f" * 64)
    if rehash:
        ev.hash = audit.event_digest(prev_hash, ev)
    return ev


def test_forged_row_appended_with_a_bad_hash(store: Store) -> None:
    _append_many(store, 10)

    def _forge(session: Session) -> None:
        session.add(_forged_row(session, 11, session.get(AuditEvent, 10).hash, rehash=False))
    store.call(_forge)
    result = _verify(store)
    assert (result.ok, result.first_bad) == (False, 11), result.message


def test_forged_row_appended_with_a_valid_hash_is_caught_by_the_head(store: Store) -> None:
    """The forger knows the algorithm and chains the row correctly, but does not move the head."""
    _append_many(store, 10)

    def _forge(session: Session) -> None:
        session.add(_forged_row(session, 11, session.get(AuditEvent, 10).hash, rehash=True))
    store.call(_forge)
    result = _verify(store)
    assert result.ok is False, result.message
    assert result.first_bad == 11, f"the forged event is 11, verify says {result.first_bad}: {result.message}"


def test_last_row_replaced_with_a_valid_forgery_is_caught_by_the_head(store: Store) -> None:
    _append_many(store, 10)

    def _forge(session: Session) -> None:
        prev = session.get(AuditEvent, 9).hash
        session.execute(delete(AuditEvent).where(AuditEvent.id == 10))
        session.add(_forged_row(session, 10, prev, rehash=True))
    store.call(_forge)
    result = _verify(store)
    assert result.ok is False, result.message
    assert result.first_bad == 10, f"the forged event is 10, verify says {result.first_bad}: {result.message}"


def test_forged_row_inserted_in_the_middle(store: Store) -> None:
    """Rows 5.. renumbered to make room for a well-chained forgery at 5: row 6 no longer fits."""
    _append_many(store, 10)

    def _forge(session: Session) -> None:
        for i in range(10, 4, -1):
            session.execute(update(AuditEvent).where(AuditEvent.id == i).values(id=i + 1))
        session.add(_forged_row(session, 5, session.get(AuditEvent, 4).hash, rehash=True))
    store.call(_forge)
    result = _verify(store)
    assert (result.ok, result.first_bad) == (False, 6), result.message


def test_appends_roll_back_with_their_transaction(store: Store) -> None:
    _append_many(store, 3)

    def _boom(session: Session) -> None:
        audit.append(session, "x", "test.lost")
        raise RuntimeError("the change this event records failed")
    with pytest.raises(RuntimeError):
        store.call(_boom)
    _append_many(store, 2, start=4)
    result = _verify(store)
    assert (result.ok, result.events) == (True, 5), result.message


@pytest.mark.postgres
def test_concurrent_appends_keep_one_chain(pg_store: Store) -> None:
    """Eight threads, each appending in its own transactions: ids contiguous, one unforked chain."""
    per_thread = 25

    def work(i: int) -> int:
        for k in range(per_thread):
            pg_store.call(lambda s, k=k: audit.append(s, f"thread{i}", "test.concurrent", detail={"thread": i, "k": k}))
        return i

    results = race(8, work)
    assert all(kind == "ok" for kind, _ in results), results
    ids = pg_store.call(lambda s: list(s.execute(select(AuditEvent.id).order_by(AuditEvent.id)).scalars()))
    assert ids == list(range(1, 8 * per_thread + 1))
    result = pg_store.call(audit.verify)
    assert (result.ok, result.events) == (True, 8 * per_thread), result.message
    # no two events claim the same predecessor (a fork)
    prevs = pg_store.call(lambda s: list(s.execute(select(AuditEvent.prev_hash)).scalars()))
    assert len(set(prevs)) == len(prevs)


# ------------------------------------------------------------------------------- export

def _offline_verify(records: list[dict]) -> bool:
    """What an auditor can do with the export alone: recompute every hash."""
    prev = audit.GENESIS
    for rec in records:
        body = {k: rec[k] for k in ("id", "ts", "actor", "action", "task_id", "target", "kernel_id", "detail")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if rec["prev_hash"] != prev or hashlib.sha256((prev + canonical).encode()).hexdigest() != rec["hash"]:
            return False
        prev = rec["hash"]
    return True


def test_jsonl_round_trip(store: Store) -> None:
    _append_many(store, 12)
    store.call(lambda s: audit.append(s, "agent:a1", "kernel.started", kernel_id="0b9f5c1e-1111-2222-3333-444455556666"))
    records = store.call(lambda s: audit.query(s, None, None))
    assert len(records) == 13
    text = "".join(audit.to_jsonl(records))
    lines = text.splitlines()
    assert len(lines) == 13 and text.endswith("\n")
    parsed = [json.loads(line) for line in lines]
    assert parsed == records
    assert list(parsed[0]) == audit.EXPORT_FIELDS
    assert parsed[3]["detail"]["text"] == 'row 4, with "quotes"\nand é — ünïcode'
    assert _offline_verify(parsed)


def test_jsonl_is_one_record_a_line_whatever_the_text_holds(store: Store) -> None:
    """U+2028, U+2029 and NEL are line breaks to str.splitlines and JavaScript, and JSON leaves them raw."""
    odd = "a\u2028b\u2029c\x85d\x1ce\x0bf\x0cg\r\nh"
    store.call(lambda s: audit.append(s, "dev", "task.submitted", detail={"code": odd}))
    records = store.call(lambda s: audit.query(s, None, None))
    text = "".join(audit.to_jsonl(records))
    lines = text.splitlines()
    assert len(lines) == len(records)
    assert json.loads(lines[-1])["detail"]["code"] == odd
    assert _offline_verify([json.loads(line) for line in lines])


def test_csv_round_trip(store: Store) -> None:
    _append_many(store, 12)
    store.call(lambda s: audit.append(s, "agent:a1", "kernel.started", kernel_id="0b9f5c1e-1111-2222-3333-444455556666"))
    records = store.call(lambda s: audit.query(s, None, None))
    text = "".join(audit.to_csv(records))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(records) == 13
    assert list(rows[0]) == audit.EXPORT_FIELDS

    def _back(row: dict[str, str]) -> dict:
        return {**row, "id": int(row["id"]), "task_id": int(row["task_id"]) if row["task_id"] else None,
                "target": row["target"] or None, "kernel_id": row["kernel_id"] or None,
                "detail": json.loads(row["detail"])}
    parsed = [_back(r) for r in rows]
    assert parsed == records
    assert _offline_verify(parsed)


def test_csv_of_nothing_is_just_the_header(store: Store) -> None:
    assert "".join(audit.to_csv([])).strip() == ",".join(audit.EXPORT_FIELDS)
    assert list(audit.to_jsonl([])) == []


def test_query_by_since_and_until(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """``since`` inclusive, ``until`` exclusive; times in any zone mean the same instant."""
    hours = iter(range(8, 16))
    monkeypatch.setattr(audit, "utcnow", lambda: dt.datetime(2026, 11, 2, next(hours), 0, 0, tzinfo=UTC))
    store.call(lambda s: [audit.append(s, "x", "test.hourly", detail={"n": n}) for n in range(8)])  # 08:00 .. 15:00

    def hours_of(since: dt.datetime | None, until: dt.datetime | None) -> list[int]:
        return [r["detail"]["n"] + 8 for r in store.call(lambda s: audit.query(s, since, until))]

    at = lambda h, tz=UTC: dt.datetime(2026, 11, 2, h, tzinfo=UTC).astimezone(tz)  # noqa: E731
    assert hours_of(None, None) == list(range(8, 16))
    assert hours_of(at(10), None) == [10, 11, 12, 13, 14, 15]
    assert hours_of(None, at(10)) == [8, 9]
    assert hours_of(at(10), at(12)) == [10, 11]
    assert hours_of(at(16), None) == []
    assert store.call(lambda s: audit.query(s, at(12), None))[0]["ts"] == "2026-11-02T12:00:00.000000Z"
    # the same instants written in another zone (the REST API accepts ?since=…+02:00)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert hours_of(at(10, plus2), at(12, plus2)) == [10, 11]
