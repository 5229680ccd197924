"""Policy (gateway/policy.py): who may submit to a target, and approve / review / deny."""

from __future__ import annotations

import pytest

from cellgate.gateway import policy
from cellgate.gateway.auth import Identity
from cellgate.gateway.models import Target


def user(*groups: str, admin: bool = False) -> Identity:
    return Identity(kind="user", name="u", user_id=1, is_admin=admin, groups=frozenset(groups))


AGENT = Identity(kind="agent", name="a1", token_id=9)
AGENT_CLAIMING_ADMIN = Identity(kind="agent", name="a1", is_admin=True, groups=frozenset({"dev"}), token_id=9)


def target(submit: list[str], review: list[str]) -> Target:
    return Target(name="prod", description="", submit_groups=submit, review_groups=review)


# (who, submit_groups, review_groups) -> (may_submit, action, review groups in the decision)
CASES = [
    # submit_groups empty: every user
    ("plain user, open target, no review", user(), [], [], True, policy.APPROVE, ()),
    ("plain user, open target, review", user("dev"), [], ["dba"], True, policy.REVIEW, ("dba",)),
    ("two review groups keep their order", user(), [], ["sec", "dba"], True, policy.REVIEW, ("sec", "dba")),
    # submit_groups set: members only
    ("member of the submit group", user("dev"), ["dev"], [], True, policy.APPROVE, ()),
    ("member of one of several submit groups", user("ops"), ["dev", "ops"], ["dba"], True, policy.REVIEW, ("dba",)),
    ("not a member", user("sales"), ["dev"], [], False, policy.DENY, ()),
    ("not a member, target needs review", user("sales"), ["dev"], ["dba"], False, policy.DENY, ()),
    ("no groups at all", user(), ["dev"], ["dba"], False, policy.DENY, ()),
    ("reviewer is not a submitter", user("dba"), ["dev"], ["dba"], False, policy.DENY, ()),
    # admins may submit anywhere, and their tasks are reviewed like anyone's
    ("admin outside the submit groups", user(admin=True), ["dev"], [], True, policy.APPROVE, ()),
    ("admin, target needs review", user(admin=True), ["dev"], ["dba"], True, policy.REVIEW, ("dba",)),
    ("admin in the review group still needs review", user("dba", admin=True), [], ["dba"], True, policy.REVIEW, ("dba",)),
    # an agent token can only be an agent
    ("agent, open target", AGENT, [], [], False, policy.DENY, ()),
    ("agent, with review", AGENT, [], ["dba"], False, policy.DENY, ()),
    ("agent claiming admin and a group", AGENT_CLAIMING_ADMIN, ["dev"], [], False, policy.DENY, ()),
]


@pytest.mark.parametrize(("who", "submit", "review", "may", "action", "groups"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_may_submit_and_evaluate(who: Identity, submit: list[str], review: list[str], may: bool, action: str,
                                 groups: tuple[str, ...]) -> None:
    t = target(submit, review)
    assert policy.may_submit(who, t) is may
    decision = policy.evaluate(who, t, "select 1")
    assert (decision.action, decision.review_groups) == (action, groups)
    assert decision.reason, "a decision always says why"
    if action == policy.DENY:
        assert who.name in decision.reason and "prod" in decision.reason
    if action == policy.REVIEW:
        assert all(g in decision.reason for g in groups)


def test_default_policy_does_not_look_at_the_code() -> None:
    """Without deny rules or auto-approval, a SELECT and a DROP get the same decision."""
    t = target([], ["dba"])
    assert policy.evaluate(user(), t, "select 1") == policy.evaluate(user(), t, "drop table accounts")
    assert policy.evaluate(user(), target([], []), "drop table accounts").action == policy.APPROVE


def test_decision_is_immutable() -> None:
    decision = policy.evaluate(user(), target([], ["dba"]), "select 1")
    with pytest.raises(AttributeError):
        decision.action = policy.APPROVE  # type: ignore[misc]
