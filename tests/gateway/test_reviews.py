"""Review decisions (gateway/reviews.py): who may decide, when a task counts as approved, races."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from gateway_harness import Seed, audit_count, race, task_events
from sqlalchemy import select

from cellgate.gateway import reviews, tasks
from cellgate.gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from cellgate.gateway.models import Review, Task, User
from cellgate.gateway.store import Store


@dataclass
class People:
    alice: int   # author, in dev and dba (a reviewer of other people's tasks)
    root: int    # admin, in dba and sec
    bob: int     # dba
    bert: int    # dba
    carol: int   # sec
    dave: int    # dba and sec
    eve: int     # dev only
    admin_only: int  # admin, in no group


@pytest.fixture
def people(seed: Seed) -> People:
    return People(
        alice=seed.user("alice", ["dev", "dba"]),
        root=seed.user("root", ["dba", "sec"], admin=True),
        bob=seed.user("bob", ["dba"]),
        bert=seed.user("bert", ["dba"]),
        carol=seed.user("carol", ["sec"]),
        dave=seed.user("dave", ["dba", "sec"]),
        eve=seed.user("eve", ["dev"]),
        admin_only=seed.user("admin_only", [], admin=True),
    )


def pending(seed: Seed, author: int, groups: list[str], code: str = "delete from t where id = 1") -> int:
    return seed.task(author, status=tasks.PENDING_REVIEW, review_groups=groups, code=code)


def decide(store: Store, task_id: int, who: int, decision: str, comment: str = "", sha: str | None = None) -> Task:
    return store.call(lambda s: reviews.decide(s, task_id, who, decision, comment, sha))


def snapshot(store: Store, task_id: int) -> tuple[str, int, int]:
    """(status, reviews stored, audit events): what a refused decision must leave alone."""
    def _tx(session):  # type: ignore[no-untyped-def]
        n_reviews = len(session.execute(select(Review).where(Review.task_id == task_id)).scalars().all())
        return session.get(Task, task_id).status, n_reviews, audit_count(session)
    return store.call(_tx)


def refused(store: Store, task_id: int, who: int, decision: str, exc: type[Exception], comment: str = "why not",
            sha: str | None = None) -> str:
    before = snapshot(store, task_id)
    with pytest.raises(exc) as info:
        decide(store, task_id, who, decision, comment, sha)
    assert snapshot(store, task_id) == before, f"a refused {decision} changed something"
    return str(info.value)


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_author_can_never_review_own_task(store: Store, seed: Seed, people: People, decision: str) -> None:
    # alice is in dba, the review group: still no
    task_id = pending(seed, people.alice, ["dba"])
    assert "author" in refused(store, task_id, people.alice, decision, Forbidden)
    # an admin who is a member of every review group: still no
    task_id = pending(seed, people.root, ["dba", "sec"])
    assert "author" in refused(store, task_id, people.root, decision, Forbidden)


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_non_members_are_forbidden_admins_included(store: Store, seed: Seed, people: People, decision: str) -> None:
    task_id = pending(seed, people.alice, ["dba"])
    assert "not in a review group" in refused(store, task_id, people.eve, decision, Forbidden)
    assert "not in a review group" in refused(store, task_id, people.carol, decision, Forbidden)
    # being an admin does not make one a reviewer
    refused(store, task_id, people.admin_only, decision, Forbidden)


def test_membership_is_checked_at_decision_time(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba"])
    seed.leave("bob", "dba")  # just before bob clicks
    refused(store, task_id, people.bob, "approve", Forbidden)
    assert decide(store, task_id, people.bert, "approve", "ok").status == tasks.APPROVED


def test_deactivated_reviewer_is_forbidden(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba"])

    def _deactivate(session):  # type: ignore[no-untyped-def]
        session.get(User, people.bob).active = False
    store.call(_deactivate)
    assert "deactivated" in refused(store, task_id, people.bob, "approve", Forbidden)


def test_one_approval_in_the_only_group_approves(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba"])
    task = decide(store, task_id, people.bob, "approve", "looks fine")
    assert (task.status, task.decided_by, task.decision_comment) == (tasks.APPROVED, "bob", "looks fine")
    events = store.call(lambda s: task_events(s, task_id))
    assert events == ["task.submitted", "task.pending_review", "task.approved"]
    assert seed.verify().ok


def test_one_rejection_rejects(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba", "sec"])
    assert decide(store, task_id, people.bob, "approve", "fine by dba").status == tasks.PENDING_REVIEW
    task = decide(store, task_id, people.carol, "reject", "not on a Friday")
    assert (task.status, task.decided_by, task.decision_comment) == (tasks.REJECTED, "carol", "not on a Friday")
    # a rejection right away, before anyone approved, also rejects
    other = pending(seed, people.alice, ["dba", "sec"])
    assert decide(store, other, people.bert, "reject", "no").status == tasks.REJECTED


def test_every_review_group_must_approve(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba", "sec"])
    task = decide(store, task_id, people.bob, "approve", "dba ok")
    assert task.status == tasks.PENDING_REVIEW
    # a second approval from the same group does not stand in for sec
    assert decide(store, task_id, people.bert, "approve", "dba ok too").status == tasks.PENDING_REVIEW
    task = decide(store, task_id, people.carol, "approve", "sec ok")
    assert (task.status, task.decided_by) == (tasks.APPROVED, "carol")
    events = store.call(lambda s: task_events(s, task_id))
    assert events == ["task.submitted", "task.pending_review", "task.approval_recorded", "task.approval_recorded",
                      "task.approved"]
    assert seed.verify().ok


def test_mode_any_one_approval_from_any_group_approves(store: Store, seed: Seed, people: People) -> None:
    task_id = seed.task(people.alice, status=tasks.PENDING_REVIEW, review_groups=["dba", "sec"],
                        review_rule={"mode": "any"})
    missing = store.call(lambda s: reviews.missing_approvals(s, s.get(Task, task_id)))
    assert missing == ["an approval from any of dba, sec"]
    task = decide(store, task_id, people.carol, "approve", "sec is enough")
    assert (task.status, task.decided_by) == (tasks.APPROVED, "carol")


@pytest.mark.parametrize("needed", [2, 3])
def test_mode_count_needs_n_approvals_from_members(store: Store, seed: Seed, people: People, needed: int) -> None:
    task_id = seed.task(people.eve, status=tasks.PENDING_REVIEW, review_groups=["dba"],
                        review_rule={"mode": "count", "approvals": needed})
    reviewers = [people.bob, people.bert, people.dave][:needed]
    for i, who in enumerate(reviewers[:-1]):
        assert decide(store, task_id, who, "approve").status == tasks.PENDING_REVIEW
        missing = store.call(lambda s: reviews.missing_approvals(s, s.get(Task, task_id)))
        left = needed - i - 1
        assert missing == [f"{left} more approval{'s' if left > 1 else ''} from dba"]
    # an approval from someone outside the groups is refused, so it cannot count
    refused(store, task_id, people.carol, "approve", Forbidden)
    assert decide(store, task_id, reviewers[-1], "approve").status == tasks.APPROVED


def test_approval_sets_its_expiry_from_the_window(store: Store, seed: Seed, people: People) -> None:
    task_id = seed.task(people.alice, status=tasks.PENDING_REVIEW, review_groups=["dba"],
                        review_rule={"approval_window": 90})
    task = decide(store, task_id, people.bob, "approve")
    assert task.approved_at is not None and task.expires_at is not None
    assert round((task.expires_at - task.approved_at).total_seconds()) == 90


def test_one_person_in_both_groups_covers_only_one_of_them(store: Store, seed: Seed, people: People) -> None:
    """Approvals count people: dave (dba and sec) alone is one reviewer, not two."""
    task_id = pending(seed, people.alice, ["dba", "sec"])
    assert decide(store, task_id, people.dave, "approve", "both hats").status == tasks.PENDING_REVIEW
    missing = store.call(lambda s: reviews.missing_approvals(s, s.get(Task, task_id)))
    assert len(missing) == 1 and "dave's approval already counts for" in missing[0], missing
    # a second person from either group completes it: dave is matched to the other one
    assert decide(store, task_id, people.bob, "approve", "dba ok").status == tasks.APPROVED


def test_all_mode_matches_people_to_groups(store: Store, seed: Seed, people: People) -> None:
    """carol (sec) approving after dave (dba, sec) completes the task: dave moves over to dba."""
    task_id = pending(seed, people.alice, ["dba", "sec"])
    decide(store, task_id, people.dave, "approve")
    assert decide(store, task_id, people.carol, "approve").status == tasks.APPROVED
    # two people who are only in dba never cover sec
    other = pending(seed, people.alice, ["dba", "sec"])
    decide(store, other, people.bob, "approve")
    decide(store, other, people.bert, "approve")
    missing = store.call(lambda s: reviews.missing_approvals(s, s.get(Task, other)))
    assert missing == ["an approval from sec"]


def test_matching_finds_an_augmenting_path() -> None:
    # u1 {a, b}, u2 {a}: u1 must take b so u2 can take a
    assert reviews.match_approvers({1: {"a", "b"}, 2: {"a"}}, ["a", "b"]) == {"a": 2, "b": 1}
    assert reviews.match_approvers({1: {"a", "b"}, 2: {"a", "b"}, 3: {"c"}}, ["a", "b", "c"]).keys() == {"a", "b", "c"}
    assert len(reviews.match_approvers({1: {"a", "b", "c"}}, ["a", "b", "c"])) == 1


def test_count_mode_counts_each_person_once(store: Store, seed: Seed, people: People) -> None:
    task_id = seed.task(people.alice, status=tasks.PENDING_REVIEW, review_groups=["dba", "sec"],
                        review_rule={"mode": "count", "approvals": 2})
    assert decide(store, task_id, people.dave, "approve").status == tasks.PENDING_REVIEW
    missing = store.call(lambda s: reviews.missing_approvals(s, s.get(Task, task_id)))
    assert missing == ["1 more approval from dba or sec (dave already counted: each person counts once)"]
    assert decide(store, task_id, people.carol, "approve").status == tasks.APPROVED


def test_coverage_uses_membership_as_of_the_last_decision(store: Store, seed: Seed, people: People) -> None:
    """bob's approval counted for dba while he was in it; once he leaves dba it no longer does."""
    task_id = pending(seed, people.alice, ["dba", "sec"])
    decide(store, task_id, people.bob, "approve", "dba ok")
    seed.leave("bob", "dba")
    assert decide(store, task_id, people.carol, "approve", "sec ok").status == tasks.PENDING_REVIEW
    # a dba approval from someone who is in dba now completes it
    assert decide(store, task_id, people.bert, "approve", "dba ok").status == tasks.APPROVED


@pytest.mark.parametrize("status", [tasks.SUBMITTED, tasks.APPROVED, tasks.REJECTED, tasks.CANCELLED, tasks.EXPIRED,
                                    tasks.DISPATCHED, tasks.SUCCEEDED])
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_decision_on_a_task_not_pending_is_a_conflict(store: Store, seed: Seed, people: People, status: str,
                                                      decision: str) -> None:
    task_id = seed.task(people.alice, status=status, review_groups=["dba"])
    assert "not pending_review" in refused(store, task_id, people.bob, decision, Conflict)


@pytest.mark.parametrize("comment", ["", "   \n\t"])
def test_reject_needs_a_reason(store: Store, seed: Seed, people: People, comment: str) -> None:
    task_id = pending(seed, people.alice, ["dba"])
    assert "reason" in refused(store, task_id, people.bob, "reject", BadRequest, comment=comment)
    # approving without a comment is fine
    assert decide(store, task_id, people.bob, "approve", "").status == tasks.APPROVED


def test_unknown_decision_and_unknown_task(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba"])
    refused(store, task_id, people.bob, "lgtm", BadRequest)
    with pytest.raises(NotFound):
        decide(store, 4242, people.bob, "approve")


def test_approval_binds_to_the_code_hash(store: Store, seed: Seed, people: People) -> None:
    code = "update accounts set balance = 0 where id = 7"
    task_id = pending(seed, people.alice, ["dba"], code=code)
    other = tasks.sha256(code.replace("= 7", "= 8"))
    assert "hash mismatch" in refused(store, task_id, people.bob, "approve", Conflict, sha=other)
    task = decide(store, task_id, people.bob, "approve", "ok", sha=tasks.sha256(code))
    assert task.status == tasks.APPROVED
    stored = store.call(lambda s: s.execute(select(Review.code_sha256).where(Review.task_id == task_id)).scalar_one())
    assert stored == tasks.sha256(code)


def test_the_same_reviewer_cannot_decide_twice(store: Store, seed: Seed, people: People) -> None:
    task_id = pending(seed, people.alice, ["dba", "sec"])
    decide(store, task_id, people.bob, "approve", "ok")
    assert "already decided" in refused(store, task_id, people.bob, "approve", Conflict)
    assert "already decided" in refused(store, task_id, people.bob, "reject", Conflict, comment="changed my mind")
    # the refusal left the session usable: the task can still be decided by others
    assert decide(store, task_id, people.carol, "approve", "ok").status == tasks.APPROVED


def test_inbox_lists_only_what_the_user_may_decide(store: Store, seed: Seed, people: People) -> None:
    dba_by_alice = pending(seed, people.alice, ["dba"])
    both_by_eve = pending(seed, people.eve, ["dba", "sec"])
    sec_by_bob = pending(seed, people.bob, ["sec"])
    seed.task(people.eve, status=tasks.APPROVED, review_groups=["dba"])       # decided already
    seed.task(people.eve, status=tasks.SUBMITTED, review_groups=["dba"])      # not yet pending
    decide(store, both_by_eve, people.bert, "approve", "dba ok")              # bert has decided on it

    def inbox(user: int) -> list[int]:
        return [t.id for t in store.call(lambda s: reviews.inbox(s, user))]

    assert inbox(people.alice) == [both_by_eve]               # not her own task
    assert inbox(people.bob) == [dba_by_alice, both_by_eve]   # not his own sec task, not a member of sec anyway
    assert inbox(people.bert) == [dba_by_alice]               # already decided on both_by_eve
    assert inbox(people.carol) == [both_by_eve, sec_by_bob]
    assert inbox(people.dave) == [dba_by_alice, both_by_eve, sec_by_bob]
    assert inbox(people.root) == [dba_by_alice, both_by_eve, sec_by_bob]
    assert inbox(people.eve) == []
    assert inbox(people.admin_only) == []
    # what the inbox offers can really be decided by its owner
    assert decide(store, sec_by_bob, people.carol, "reject", "inbox check").status == tasks.REJECTED
    assert inbox(people.carol) == [both_by_eve]


# ------------------------------------------------------------------------------- races

@pytest.mark.postgres
def test_approve_and_reject_at_the_same_instant_give_one_outcome(pg_store: Store) -> None:
    seed = Seed(pg_store)
    alice = seed.user("alice", ["dev"])
    bob = seed.user("bob", ["dba"])
    bert = seed.user("bert", ["dba"])
    for _round in range(5):
        task_id = pending(seed, alice, ["dba"])
        results = race(2, lambda i: decide(pg_store, task_id, (bob, bert)[i], ("approve", "reject")[i], "now").status)
        wins = [v for kind, v in results if kind == "ok"]
        losses = [v for kind, v in results if kind == "err"]
        assert len(wins) == 1 and len(losses) == 1, results
        assert isinstance(losses[0], (Conflict, tasks.TransitionConflict)), losses
        final = seed.status(task_id)
        assert final == wins[0] and final in (tasks.APPROVED, tasks.REJECTED)
        events = pg_store.call(lambda s: task_events(s, task_id))
        decisions = [e for e in events if e in ("task.approved", "task.rejected", "task.approval_recorded")]
        assert decisions == [f"task.{final}"], events
        stored = pg_store.call(lambda s: s.execute(select(Review.decision).where(Review.task_id == task_id)).scalars().all())
        assert len(stored) == 1, f"the loser's review row survived: {stored}"
    assert seed.verify().ok


@pytest.mark.postgres
def test_last_two_approvals_at_the_same_instant_approve(pg_store: Store) -> None:
    """dba and sec approve at once: each alone is not enough, together they are. The task must end
    approved, not stay pending with both approvals recorded (write skew between the two decisions)."""
    seed = Seed(pg_store)
    alice = seed.user("alice", ["dev"])
    bob = seed.user("bob", ["dba"])
    carol = seed.user("carol", ["sec"])
    stuck = []
    for _round in range(5):
        task_id = pending(seed, alice, ["dba", "sec"])
        results = race(2, lambda i: decide(pg_store, task_id, (bob, carol)[i], "approve", "ok").status)
        assert all(kind == "ok" or isinstance(v, (Conflict, tasks.TransitionConflict)) for kind, v in results), results
        if seed.status(task_id) != tasks.APPROVED:
            stuck.append((task_id, seed.status(task_id), pg_store.call(lambda s: task_events(s, task_id))))
    assert not stuck, f"both groups approved but the task was not approved: {stuck}"
    assert seed.verify().ok
