"""The gateway's tables, as SQLAlchemy 2.x typed models.

Every change to these classes needs an Alembic revision in ``migrations/versions``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """A time read from the store, in UTC with its zone (SQLite hands back naive UTC datetimes)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    __allow_unmapped__ = True
    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSON, list[str]: JSON}


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_issuer_subject"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), default=None)
    #: the email was verified by the identity provider (``email_verified`` claim)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    oidc_issuer: Mapped[str | None] = mapped_column(String(500), default=None)
    oidc_subject: Mapped[str | None] = mapped_column(String(255), default=None)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    memberships: Mapped[list[Membership]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    memberships: Mapped[list[Membership]] = relationship(back_populates="group", cascade="all, delete-orphan")


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True)
    user: Mapped[User] = relationship(back_populates="memberships")
    group: Mapped[Group] = relationship(back_populates="memberships")


class Token(Base):
    """An API token. Only its SHA-256 is stored; the token itself is shown once."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # "user" | "agent"
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: agent tokens: the one agent name (hello ``agent_id``) this token may speak as
    agent_name: Mapped[str | None] = mapped_column(String(200), default=None)
    #: agent tokens: the targets an admin lets this agent serve
    agent_targets: Mapped[list[str] | None] = mapped_column(default=None)
    user: Mapped[User | None] = relationship()


class Target(Base):
    """A production target. Policy lives here; connection secrets live only on agents."""

    __tablename__ = "targets"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    submit_groups: Mapped[list[str]] = mapped_column(default=list)
    review_groups: Mapped[list[str]] = mapped_column(default=list)
    # what the serving agent announced
    kind: Mapped[str] = mapped_column(String(20), default="")
    language: Mapped[str] = mapped_column(String(40), default="")
    dialect: Mapped[str] = mapped_column(String(40), default="")
    display_name: Mapped[str] = mapped_column(String(200), default="")
    #: the rest of the policy (review mode, auto-approval, deny rules, limits): see policy.Policy
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Kernel(Base):
    __tablename__ = "kernels"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    target: Mapped[str] = mapped_column(String(100))
    agent_id: Mapped[str] = mapped_column(String(200))
    notebook_path: Mapped[str | None] = mapped_column(Text, default=None)
    ephemeral: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (UniqueConstraint("user_id", "idempotency_key", name="uq_tasks_user_idempotency_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # cell | script | notebook | schedule (a schedule's review)
    status: Mapped[str] = mapped_column(String(20), index=True)
    target: Mapped[str] = mapped_column(String(100), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    code: Mapped[str] = mapped_column(Text)
    code_sha256: Mapped[str] = mapped_column(String(64))
    why: Mapped[str] = mapped_column(Text, default="")
    kernel_id: Mapped[str | None] = mapped_column(String(36), default=None)
    msg_id: Mapped[str | None] = mapped_column(String(200), default=None)
    notebook_path: Mapped[str | None] = mapped_column(Text, default=None)
    cell_id: Mapped[str | None] = mapped_column(String(200), default=None)
    agent_id: Mapped[str | None] = mapped_column(String(200), default=None)
    review_groups: Mapped[list[str]] = mapped_column(default=list)
    decided_by: Mapped[str | None] = mapped_column(String(200), default=None)
    decision_comment: Mapped[str | None] = mapped_column(Text, default=None)
    error_ename: Mapped[str | None] = mapped_column(String(200), default=None)
    error_evalue: Mapped[str | None] = mapped_column(Text, default=None)
    output_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    #: risk.Risk.as_dict() at submission; what reviewers decide on
    risk: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: rows an UPDATE/DELETE would touch, estimated with EXPLAIN on the agent (never executed)
    row_estimate: Mapped[int | None] = mapped_column(BigInteger, default=None)
    #: review rule at submission (mode, approvals) so later policy edits do not move the goalposts
    review_rule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: run from a template: {"name", "path", "commit", "parameters": [{name, type, value}]}; the values
    #: the kernel binds come from here (never from the request that runs it)
    template: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    approved_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: an approved task that has not started by then expires
    expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    #: the author's Idempotency-Key (unique per user) and the SHA-256 of the request it came with (idempotency.py)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    request_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    user: Mapped[User] = relationship(lazy="joined")
    reviews: Mapped[list[Review]] = relationship(order_by="Review.id", lazy="selectin")
    #: not stored: what a pending task still needs, filled by reviews.annotate() for views
    missing_approvals: tuple[str, ...] = ()
    #: not stored: ((kind, dialect), statement texts) when this process analysed the task at submission
    analysed: tuple[tuple[str, str | None], tuple[str, ...]] | None = None
    #: not stored: True when a submit found this task by its Idempotency-Key instead of creating it
    replayed: bool = False


class Review(Base):
    __tablename__ = "reviews"
    __table_args__ = (UniqueConstraint("task_id", "user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(10))  # approve | reject
    comment: Mapped[str] = mapped_column(Text, default="")
    code_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    user: Mapped[User] = relationship(lazy="joined")


class TaskOutput(Base):
    """One output of a task, stored once per (task, seq)."""

    __tablename__ = "task_outputs"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    output: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TaskNotebook(Base):
    """The executed notebook of a notebook task (nbformat JSON), stored when the task ends."""

    __tablename__ = "task_notebooks"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    notebook: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Schedule(Base):
    """A template run on a cron schedule, reviewed once (its review task, kind ``schedule``): each due run
    is a task approved by that review, its code byte-identical to what was reviewed."""

    __tablename__ = "schedules"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    template: Mapped[str] = mapped_column(String(500))
    target: Mapped[str] = mapped_column(String(100))
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)   # the values as given (re-rendered on a new commit)
    cron: Mapped[str] = mapped_column(String(100))
    on_missed: Mapped[str] = mapped_column(String(10), default="skip")
    notify: Mapped[str] = mapped_column(String(200), default="")       # a Slack channel; "" = the author
    why: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), index=True)       # pending_review | active | suspended | rejected | deleted
    status_reason: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(10))                      # the runs' kind: script | notebook
    code: Mapped[str] = mapped_column(Text)                            # the rendered code reviewed, run as it is
    code_sha256: Mapped[str] = mapped_column(String(64))
    record: Mapped[dict[str, Any]] = mapped_column(default=dict)      # Task.template of each run: name, path, commit, parameters
    review_task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), default=None)
    next_run_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ScheduleRun(Base):
    """One due occurrence of a schedule, claimed once (its primary key): never two runs for one tick."""

    __tablename__ = "schedule_runs"
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), primary_key=True)
    due_at: Mapped[dt.datetime] = mapped_column(primary_key=True)
    outcome: Mapped[str] = mapped_column(String(20))                   # ran | skipped (missed) | refused
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    """Append-only, hash-chained. ``hash = sha256(prev_hash + canonical(event))``."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(primary_key=True)
    ts: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(60))
    task_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    target: Mapped[str | None] = mapped_column(String(100), default=None)
    kernel_id: Mapped[str | None] = mapped_column(String(36), default=None)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row: the chain's last hash. Locked ``FOR UPDATE`` to serialise appends."""

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    last_hash: Mapped[str] = mapped_column(String(64))


class LoginRequest(Base):
    """One sign-in in progress (browser or CLI): OIDC state, nonce and PKCE verifier, then a
    one-time code the CLI exchanges (with its own PKCE verifier) for a gateway token."""

    __tablename__ = "login_requests"
    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # browser | cli
    nonce: Mapped[str] = mapped_column(String(128))
    code_verifier: Mapped[str] = mapped_column(String(128))
    #: CLI: where to send the browser back (a loopback URL) and the CLI's PKCE challenge
    return_to: Mapped[str | None] = mapped_column(Text, default=None)
    client_challenge: Mapped[str | None] = mapped_column(String(128), default=None)
    #: CLI: its own ``state``, sent back with the one-time code so the CLI knows the answer is for it
    client_state: Mapped[str | None] = mapped_column(String(128), default=None)
    #: after the IdP answered: who signed in, and the hash of the one-time code
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    code_hash: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    used_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class SlackLink(Base):
    """A Slack user mapped to a cellgate user (by verified email, or `cellgate slack link`)."""

    __tablename__ = "slack_links"
    __table_args__ = (UniqueConstraint("team_id", "slack_user_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    team_id: Mapped[str] = mapped_column(String(64), default="")
    slack_user_id: Mapped[str] = mapped_column(String(64))
    how: Mapped[str] = mapped_column(String(20))  # email | manual
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SlackMessage(Base):
    """The review notice of a task: where it was posted, to update it in place and thread under it."""

    __tablename__ = "slack_messages"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(32))
    #: the last status the message showed, so each transition is posted once
    shown_status: Mapped[str] = mapped_column(String(20), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SlackRunThread(Base):
    """The direct message that announced a template run started from Slack: its result is threaded under it."""

    __tablename__ = "slack_run_threads"
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True)
    #: who ran it from Slack (the message is theirs, whoever the task's author is linked to later)
    slack_user_id: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(64))
    ts: Mapped[str] = mapped_column(String(32))
    #: the last status the thread told, so each step is posted once (as ``SlackMessage.shown_status``)
    shown_status: Mapped[str] = mapped_column(String(20), default="")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SlackDmTarget(Base):
    """The target a Slack user's direct messages to cellgate run on (``target NAME`` in the DM).

    Only a preference: who may submit there is decided again, by the gate, for each message."""

    __tablename__ = "slack_dm_targets"
    team_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slack_user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class SlackSeenRequest(Base):
    """A Slack request signature already accepted, kept until its timestamp is stale anyway:
    a replay is refused by every replica and after a restart. An Events API event is recorded
    here too, by its ``event_id`` (Slack redelivers an event with a new signature)."""

    __tablename__ = "slack_seen_requests"
    #: SHA-256 of the ``X-Slack-Signature`` header, or of ``event:`` + the event's ``event_id``
    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
