"""Tokens and identities (gateway/auth.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from gateway_harness import Seed
from sqlalchemy import inspect, select, text, update
from sqlalchemy.orm import Session

from cellgate.gateway import auth
from cellgate.gateway.models import AuditEvent, Token, User, utcnow
from cellgate.gateway.store import Store


def make_token(store: Store, *, user: str | None = None, agent: str | None = None,
               days: float | None = None) -> tuple[str, int]:
    def _tx(session: Session) -> tuple[str, int]:
        if agent is not None:
            raw, tok = auth.new_token(session, "agent", name=agent, actor="root")
        else:
            raw, tok = auth.new_token(session, "user", user=auth.get_user(session, user), name="laptop",
                                      expires_in_days=days, actor="root")
        return raw, tok.id
    return store.call(_tx)


def identify(store: Store, raw: str) -> auth.Identity | None:
    return store.call(lambda s: auth.identify(s, raw))


def test_token_is_random_and_stored_only_as_its_hash(store: Store, seed: Seed) -> None:
    seed.user("alice", ["dev"])
    raw, tok_id = make_token(store, user="alice")
    raw2, _ = make_token(store, user="alice")
    agent_raw, _ = make_token(store, agent="agent-1")
    assert raw.startswith(auth.TOKEN_PREFIX) and len(raw) >= 40
    assert len({raw, raw2, agent_raw}) == 3

    row = store.call(lambda s: s.get(Token, tok_id))
    assert row.hash == auth.hash_token(raw) and row.hash != raw
    assert row.prefix == raw[:8]
    # the raw token is nowhere in the database: not in the tokens table, not in the audit log
    def _dump(session: Session) -> str:
        out = []
        for name in inspect(session.get_bind()).get_table_names():
            out.extend(repr(tuple(r)) for r in session.execute(text(f'SELECT * FROM "{name}"')))
        return "\n".join(out)
    dump = store.call(_dump)
    for secret in (raw, raw2, agent_raw):
        assert secret not in dump
        assert secret[len(auth.TOKEN_PREFIX):][:16] not in dump
    assert row.hash in dump


def test_user_token_identifies_the_user_with_groups(store: Store, seed: Seed) -> None:
    uid = seed.user("alice", ["dev", "dba"])
    seed.user("root", ["ops"], admin=True)
    raw, tok_id = make_token(store, user="alice")
    admin_raw, _ = make_token(store, user="root")

    ident = identify(store, raw)
    assert ident == auth.Identity(kind="user", name="alice", user_id=uid, is_admin=False,
                                  groups=frozenset({"dev", "dba"}), token_id=tok_id)
    assert ident.actor == "alice"
    admin = identify(store, admin_raw)
    assert admin is not None and admin.is_admin and admin.groups == {"ops"}


def test_groups_are_read_on_every_request(store: Store, seed: Seed) -> None:
    seed.user("alice", ["dev", "dba"])
    raw, _ = make_token(store, user="alice")
    assert identify(store, raw).groups == {"dev", "dba"}
    seed.leave("alice", "dba")
    assert identify(store, raw).groups == {"dev"}


def test_agent_token_is_only_an_agent(store: Store, seed: Seed) -> None:
    seed.user("agent-1")  # a user with the same name changes nothing
    raw, tok_id = make_token(store, agent="agent-1")
    ident = identify(store, raw)
    assert ident == auth.Identity(kind="agent", name="agent-1", token_id=tok_id)
    assert (ident.user_id, ident.is_admin, ident.groups) == (None, False, frozenset())
    assert ident.actor == "agent:agent-1"


@pytest.mark.parametrize("raw", ["", "cg_", "cg_not-a-real-token", "token", "x" * 500])
def test_unknown_token_is_nobody(store: Store, seed: Seed, raw: str) -> None:
    seed.user("alice")
    make_token(store, user="alice")
    assert identify(store, raw) is None


def test_revoked_token_is_refused(store: Store, seed: Seed) -> None:
    seed.user("alice")
    raw, tok_id = make_token(store, user="alice")
    agent_raw, agent_id = make_token(store, agent="agent-1")
    assert identify(store, raw) is not None and identify(store, agent_raw) is not None
    store.call(lambda s: s.execute(update(Token).where(Token.id.in_([tok_id, agent_id])).values(revoked_at=utcnow())))
    assert identify(store, raw) is None
    assert identify(store, agent_raw) is None


def test_expiry(store: Store, seed: Seed) -> None:
    seed.user("alice")
    raw, tok_id = make_token(store, user="alice", days=1)
    expires = store.call(lambda s: s.get(Token, tok_id).expires_at)
    expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
    assert dt.timedelta(hours=23) < expires - utcnow() <= dt.timedelta(days=1)
    assert identify(store, raw) is not None
    store.call(lambda s: s.execute(update(Token).where(Token.id == tok_id)
                                   .values(expires_at=utcnow() - dt.timedelta(seconds=1))))
    assert identify(store, raw) is None
    # a token without expiry does not expire
    forever, forever_id = make_token(store, user="alice")
    assert store.call(lambda s: s.get(Token, forever_id).expires_at) is None
    assert identify(store, forever) is not None


def test_deactivated_user_is_refused_and_reactivated_is_back(store: Store, seed: Seed) -> None:
    uid = seed.user("alice", ["dev"])
    raw, _ = make_token(store, user="alice")
    store.call(lambda s: s.execute(update(User).where(User.id == uid).values(active=False)))
    assert identify(store, raw) is None
    store.call(lambda s: s.execute(update(User).where(User.id == uid).values(active=True)))
    assert identify(store, raw) is not None


def test_last_use_is_recorded_coarsely(store: Store, seed: Seed) -> None:
    seed.user("alice")
    raw, tok_id = make_token(store, user="alice")
    assert store.call(lambda s: s.get(Token, tok_id).last_used_at) is None
    identify(store, raw)
    first = store.call(lambda s: s.get(Token, tok_id).last_used_at)
    assert first is not None
    identify(store, raw)  # within a minute: not written again
    assert store.call(lambda s: s.get(Token, tok_id).last_used_at) == first


def test_membership_helpers_are_idempotent_and_audited(store: Store) -> None:
    def _tx(session: Session) -> list[bool]:
        user = auth.ensure_user(session, "alice")
        assert auth.ensure_user(session, "alice") is user
        group = auth.ensure_group(session, "dba")
        return [auth.add_member(session, group, user), auth.add_member(session, group, user),
                auth.remove_member(session, group, user), auth.remove_member(session, group, user)]
    assert store.call(_tx) == [True, False, True, False]
    actions = store.call(lambda s: list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars()))
    assert actions == ["user.created", "group.created", "group.member_added", "group.member_removed"]
