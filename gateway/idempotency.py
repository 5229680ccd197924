"""Idempotent submission: ``POST /api/v1/tasks`` with an ``Idempotency-Key`` header creates one task.

A client that lost the answer to a submit (the gateway restarted, the connection dropped, its
read timed out) sends the same request again with the same key. The task records its author's key
and the SHA-256 of the request (:func:`fingerprint`), unique per user
(``uq_tasks_user_idempotency_key``): a repeat with the same key and the same request gets the first
task back (HTTP 200, not a second 201, and nothing runs twice); the same key with another request
is refused (422). Keys are kept with their task, so for as long as the task exists (at least 24 h).
Two repeats that race both reach the insert: the unique index lets one win, the other is answered
with the winner's task.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import BadRequest, Unprocessable
from .models import Task

HEADER = "Idempotency-Key"
MAX_LENGTH = 200
_VALID = re.compile(rf"^[\x21-\x7e]{{1,{MAX_LENGTH}}}$")  # printable ASCII, no spaces


@dataclass(frozen=True)
class Idempotency:
    """The key a user sent and the fingerprint of the request it came with."""

    key: str
    request_sha256: str


def from_request(header: str | None, route: str, body: dict[str, Any]) -> Idempotency | None:
    """The request's key (None without the header); a malformed key is a 400 that says what is allowed."""
    if header is None:
        return None
    key = header.strip()
    if not _VALID.match(key):
        raise BadRequest(f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters without spaces "
                         "(e.g. a UUID: the CLI sends one per `cellgate run`)")
    return Idempotency(key, fingerprint(route, body))


def fingerprint(route: str, body: dict[str, Any]) -> str:
    """SHA-256 of the route and the body as canonical JSON (key order and spacing do not matter)."""
    text = json.dumps([route, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def find(session: Session, user_id: int, key: str) -> Task | None:
    """The user's task submitted with ``key``, if any."""
    return session.execute(select(Task).where(Task.user_id == user_id, Task.idempotency_key == key)).unique().scalar_one_or_none()


def check_same(task: Task, idem: Idempotency) -> Task:
    """``task`` (found by its key) if it came from the same request; else a 422 that says why."""
    if task.request_sha256 != idem.request_sha256:
        raise Unprocessable(f"{HEADER} {idem.key!r} was used for another request (task {task.id}): "
                            "a retry must send the very same request; use a new key for a new submission")
    task.replayed = True
    return task


def fields(idem: Idempotency | None) -> dict[str, Any]:
    """The task's columns for ``idem`` (none without a key)."""
    return {} if idem is None else {"idempotency_key": idem.key, "request_sha256": idem.request_sha256}
