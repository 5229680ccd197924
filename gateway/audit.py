"""The audit chain: append-only events, each carrying the hash of the one before.

``hash = sha256(prev_hash + canonical_json(fields))``; :func:`verify` recomputes the chain, so a
changed, inserted or deleted row is detected. Appends lock the single ``audit_head`` row
(``SELECT … FOR UPDATE`` on PostgreSQL) so concurrent writers never fork the chain, and are
written in the caller's transaction: an event exists exactly when the change it records does.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import AuditEvent, AuditHead, utcnow

GENESIS = "0" * 64
EXPORT_FIELDS = ["id", "ts", "actor", "action", "task_id", "target", "kernel_id", "detail", "prev_hash", "hash"]


def _ts(value: dt.datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive datetimes
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_digest(prev_hash: str, ev: AuditEvent) -> str:
    body = {
        "id": ev.id,
        "ts": _ts(ev.ts),
        "actor": ev.actor,
        "action": ev.action,
        "task_id": ev.task_id,
        "target": ev.target,
        "kernel_id": ev.kernel_id,
        "detail": ev.detail or {},
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def append(
    session: Session,
    actor: str,
    action: str,
    *,
    task_id: int | None = None,
    target: str | None = None,
    kernel_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in ``session``'s transaction.

    The chain head is locked once per transaction (kept in ``session.info``); the events and the
    head's new value are written when the transaction flushes, together.
    """
    head = session.info.get("audit_head")
    if head is None or head not in session:
        head = session.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one()
        session.info["audit_head"] = head
    ev = AuditEvent(
        id=head.last_id + 1,
        ts=utcnow(),
        actor=actor,
        action=action,
        task_id=task_id,
        target=target,
        kernel_id=kernel_id,
        detail=detail or {},
        prev_hash=head.last_hash,
    )
    ev.hash = event_digest(head.last_hash, ev)
    session.add(ev)
    head.last_id = ev.id
    head.last_hash = ev.hash
    return ev


@dataclass
class Verification:
    ok: bool
    events: int
    first_bad: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "events": self.events, "first_bad": self.first_bad, "message": self.message}


def verify(session: Session) -> Verification:
    """Recompute the whole chain; report the first event that does not fit."""
    prev = GENESIS
    expected_id = 1
    count = 0
    for ev in session.execute(select(AuditEvent).order_by(AuditEvent.id)).scalars():
        if ev.id != expected_id:
            return Verification(False, count, expected_id, f"event {expected_id} is missing (next is {ev.id})")
        if ev.prev_hash != prev or event_digest(prev, ev) != ev.hash:
            return Verification(False, count, ev.id, f"event {ev.id} was altered or the chain was broken before it")
        prev = ev.hash
        expected_id += 1
        count += 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_id != count or head.last_hash != prev):
        bad = count + 1 if head.last_id > count else min(head.last_id + 1, count)  # first event the head does not vouch for
        return Verification(False, count, bad, f"events from {bad} on were deleted, added or replaced "
                                               f"(head says {head.last_id} events, table has {count})")
    return Verification(True, count, None, f"{count} events, chain intact")


def as_record(ev: AuditEvent) -> dict[str, Any]:
    return {
        "id": ev.id,
        "ts": _ts(ev.ts),
        "actor": ev.actor,
        "action": ev.action,
        "task_id": ev.task_id,
        "target": ev.target,
        "kernel_id": ev.kernel_id,
        "detail": ev.detail or {},
        "prev_hash": ev.prev_hash,
        "hash": ev.hash,
    }


def query(session: Session, since: dt.datetime | None, until: dt.datetime | None) -> list[dict[str, Any]]:
    stmt = select(AuditEvent).order_by(AuditEvent.id)
    if since is not None:
        stmt = stmt.where(AuditEvent.ts >= (since.astimezone(dt.UTC) if since.tzinfo else since))  # SQLite compares text
    if until is not None:
        stmt = stmt.where(AuditEvent.ts < (until.astimezone(dt.UTC) if until.tzinfo else until))
    return [as_record(ev) for ev in session.execute(stmt).scalars()]


#: characters JSON leaves raw that line readers split on (``str.splitlines``, JavaScript): escaped in JSONL
LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def one_line(text: str) -> str:
    """A JSON text as one line for every reader: U+2028, U+2029 and NEL (only ever inside strings) escaped."""
    for char, escaped in LINE_BREAKS.items():
        text = text.replace(char, escaped)
    return text


def to_jsonl(records: list[dict[str, Any]]) -> Iterator[str]:
    for rec in records:
        yield one_line(json.dumps(rec, ensure_ascii=False)) + "\n"


def to_csv(records: list[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for rec in records:
        writer.writerow({**rec, "detail": json.dumps(rec["detail"], sort_keys=True)})
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    if buf.getvalue():
        yield buf.getvalue()
