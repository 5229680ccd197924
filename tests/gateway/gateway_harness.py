"""Helpers for the gateway tests: a seeder for users, targets and tasks, audit look-ups, thread races."""

from __future__ import annotations

import itertools
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import psycopg

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cellgate.gateway import audit, auth, policy, tasks
from cellgate.gateway.auth import Identity
from cellgate.gateway.models import AuditEvent, Target, Task
from cellgate.gateway.store import Store


def wait_answering(proc: subprocess.Popen[bytes], url: str, log: Any, timeout: float = 30) -> None:
    """Return once the gateway process ``proc`` answers ``GET {url}/api/v1``; fail with its log if
    it exits or stays silent for ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the gateway exited with {proc.returncode}:\n{log.read_text()}"
        try:
            if httpx.get(f"{url}/api/v1", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the gateway did not answer within {timeout:g} s:\n{log.read_text()}"
        time.sleep(0.1)


def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def empty_pg(url: str) -> None:
    """Drop every table (and the Alembic stamp) of the module's database."""
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


def audit_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()


def events_after(session: Session, last_id: int) -> list[AuditEvent]:
    return list(session.execute(select(AuditEvent).where(AuditEvent.id > last_id).order_by(AuditEvent.id)).scalars())


def task_events(session: Session, task_id: int) -> list[str]:
    return list(session.execute(select(AuditEvent.action).where(AuditEvent.task_id == task_id)
                                .order_by(AuditEvent.id)).scalars())


def path_to(status: str) -> list[str]:
    """The shortest chain of legal transitions from ``submitted`` to ``status``."""
    seen = {tasks.SUBMITTED: [tasks.SUBMITTED]}
    todo = deque([tasks.SUBMITTED])
    while todo:
        cur = todo.popleft()
        for nxt in sorted(tasks.TRANSITIONS.get(cur, ())):
            if nxt not in seen:
                seen[nxt] = [*seen[cur], nxt]
                todo.append(nxt)
    return seen[status]


class Seed:
    """Builds the world a test needs, each step in its own committed transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def user(self, name: str, groups: tuple[str, ...] | list[str] = (), *, admin: bool = False) -> int:
        def _tx(session: Session) -> int:
            user = auth.ensure_user(session, name, is_admin=admin)
            for g in groups:
                auth.add_member(session, auth.ensure_group(session, g), user)
            return user.id
        return self.store.call(_tx)

    def leave(self, name: str, group: str) -> None:
        def _tx(session: Session) -> None:
            auth.remove_member(session, auth.ensure_group(session, group), auth.get_user(session, name))
        self.store.call(_tx)

    def target(self, name: str, *, submit_groups: list[str] | None = None, review_groups: list[str] | None = None) -> None:
        def _tx(session: Session) -> None:
            session.add(Target(name=name, description="", submit_groups=submit_groups or [],
                               review_groups=review_groups or []))
        self.store.call(_tx)

    def task(self, user_id: int, *, target: str = "prod", code: str = "select 1", status: str = tasks.SUBMITTED,
             review_groups: list[str] | None = None, review_rule: dict | None = None) -> int:
        """A script task walked along legal edges to ``status`` (``review_rule``: mode, approvals, window)."""
        def _tx(session: Session) -> int:
            if session.get(Target, target) is None:
                session.add(Target(name=target, description="", submit_groups=[], review_groups=review_groups or []))
                session.flush()
            task = tasks.create(session, "tester", kind="script", target=target, user_id=user_id, code=code,
                                review_groups=review_groups or [], review_rule=review_rule or {})
            steps = path_to(status)
            for src, dest in itertools.pairwise(steps):
                tasks.transition(session, task.id, src, dest, "tester")
            return task.id
        return self.store.call(_tx)

    def status(self, task_id: int) -> str:
        return self.store.call(lambda s: s.execute(select(Task.status).where(Task.id == task_id)).scalar_one())

    def verify(self) -> audit.Verification:
        return self.store.call(audit.verify)


def race(n: int, work: Callable[[int], Any], timeout: float = 30) -> list[tuple[str, Any]]:
    """Run ``work(i)`` for i in range(n) in n threads released together; [("ok", value) | ("err", exc)]."""
    barrier = threading.Barrier(n, timeout=timeout)
    results: list[tuple[str, Any]] = [("missing", None)] * n

    def _run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = ("ok", work(i))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results[i] = ("err", exc)

    threads = [threading.Thread(target=_run, args=(i,), name=f"race-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a racing thread is stuck (deadlock?)"
    return results


def reviewed_target(store: Store, name: str = "prod", kind: str = "sql", dialect: str = "postgresql") -> None:
    """A target where read-only SQL is auto-approved and everything else waits for dba."""
    def _tx(session: Any) -> None:
        t = Target(name=name, description="", submit_groups=[], review_groups=[], policy={}, kind=kind, dialect=dialect)
        policy.store(t, policy.parse({"auto_approve": "read-only", "review": {"groups": ["dba"]}}))
        session.add(t)
    store.call(_tx)


def ident(user_id: int) -> Identity:
    """The developer ``dev`` (user ``user_id``) as the gateway sees them."""
    return Identity(kind="user", name="dev", user_id=user_id, groups=frozenset({"dev"}))
