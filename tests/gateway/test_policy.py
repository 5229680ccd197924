"""Policy (gateway/policy.py): who may submit to a target, and approve / review / deny."""

from __future__ import annotations

import pytest

from cellgate.gateway import access, policy
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
    assert access.may_submit(who, t) is may
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


# ------------------------------------------------------------- risk-aware rules (with analysis)
from cellgate.gateway.risk import analyze  # noqa: E402

DEMO = {"auto_approve": "read-only", "review": {"groups": ["dba"], "mode": "any"},
        "deny": {"statements": ["DROP", "TRUNCATE"], "tables": ["secrets"], "patterns": ["(?i)pg_terminate_backend"]}}


def rules_target(doc: dict, kind: str = "sql", dialect: str = "postgresql") -> Target:
    t = Target(name="prod", description="", submit_groups=[], review_groups=[], policy={}, kind=kind, dialect=dialect)
    policy.store(t, policy.parse(doc))
    return t


# (name, policy document, kind, code) -> (action, a word the reason must contain)
RISK_CASES = [
    ("read-only SELECT is auto-approved", DEMO, "sql", "SELECT * FROM accounts", policy.APPROVE, "read-only"),
    ("read-only CTE is auto-approved", DEMO, "sql", "WITH a AS (SELECT 1) SELECT * FROM a", policy.APPROVE, "read-only"),
    ("UPDATE waits for review", DEMO, "sql", "UPDATE accounts SET x = 1 WHERE id = 2", policy.REVIEW, "dba"),
    ("DELETE without WHERE waits for review", DEMO, "sql", "DELETE FROM accounts", policy.REVIEW, "dba"),
    ("DROP is denied", DEMO, "sql", "DROP TABLE accounts", policy.DENY, "DROP"),
    ("TRUNCATE is denied", DEMO, "sql", "TRUNCATE accounts", policy.DENY, "TRUNCATE"),
    ("a denied table, even read", DEMO, "sql", "SELECT * FROM secrets", policy.DENY, "secrets"),
    ("a denied schema-qualified table", DEMO, "sql", "SELECT * FROM public.secrets", policy.DENY, "secrets"),
    ("a denied pattern", DEMO, "sql", "SELECT pg_terminate_backend(42)", policy.DENY, "pattern"),
    ("a read and a DROP in one cell", DEMO, "sql", "SELECT 1; DROP TABLE x", policy.DENY, "DROP"),
    ("unparseable SQL is never auto-approved", DEMO, "sql", "SELEC oops FROM", policy.REVIEW, "dba"),
    ("SELECT INTO is not read-only", DEMO, "sql", "SELECT * INTO copy FROM accounts", policy.REVIEW, "dba"),
    ("a write hidden in a CTE", DEMO, "sql", "WITH d AS (DELETE FROM accounts RETURNING *) SELECT * FROM d", policy.REVIEW, "dba"),
    ("a write hidden in a CTE, DELETE denied", {**DEMO, "deny": {"statements": ["DELETE"]}}, "sql",
     "WITH d AS (DELETE FROM accounts RETURNING *) SELECT * FROM d", policy.DENY, "WITH"),
    ("never auto-approve", {**DEMO, "auto_approve": "never"}, "sql", "SELECT 1", policy.REVIEW, "dba"),
    ("no review groups: everything approved", {"auto_approve": "never"}, "sql", "DELETE FROM accounts", policy.APPROVE, "does not require"),
    ("deny by risk level", {**DEMO, "deny": {"risk": "critical"}}, "sql", "DELETE FROM accounts", policy.DENY, "critical"),
    ("below the denied risk level", {**DEMO, "deny": {"risk": "critical"}}, "sql", "DELETE FROM accounts WHERE id = 1",
     policy.REVIEW, "dba"),
    ("Python is not auto-approved by default", DEMO, "python", "print(1)", policy.REVIEW, "dba"),
    ("Python is never auto-approved", {**DEMO, "auto_approve": "read-only"}, "python", "print(1)", policy.REVIEW, "dba"),
    ("Python reading the environment", DEMO, "python",
     "import os; print(os.environ['CELLGATE_TARGET_URL'])", policy.REVIEW, "dba"),
    ("Python syntax error", DEMO, "python", "def (:", policy.REVIEW, "dba"),
    ("MySQL read", DEMO, "sql", "SELECT `id` FROM accounts LIMIT 3", policy.APPROVE, "read-only"),
    # deny rules match the names as the server reads them, not as written
    ("a denied pattern, the function name escaped", DEMO, "sql",
     'SELECT U&"\\0070g_terminate_backend"(42)', policy.DENY, "pattern"),
    ("a denied pattern, escaped with UESCAPE", DEMO, "sql",
     'SELECT U&"!0070g_terminate_backend" UESCAPE \'!\'(42)', policy.DENY, "pattern"),
    ("a denied table, its name escaped", DEMO, "sql", 'SELECT * FROM U&"\\0073ecrets"', policy.DENY, "secrets"),
    ("a denied table, quoted", DEMO, "sql", 'SELECT * FROM "public"."secrets"', policy.DENY, "secrets"),
    ("a denied table in a subquery", DEMO, "sql", "SELECT (SELECT count(*) FROM secrets)", policy.DENY, "secrets"),
    ("a denied statement behind a comment", DEMO, "sql", "/* report */ DROP/**/TABLE x", policy.DENY, "DROP"),
    ("a denied pattern split by a comment", {**DEMO, "deny": {"patterns": ["(?i)drop table"]}}, "sql",
     "DROP/* not a */TABLE x", policy.DENY, "pattern"),
    ("a denied pattern split by a line comment", {**DEMO, "deny": {"patterns": ["(?i)lo_import"]}}, "sql",
     'SELECT "lo_import"(\'/etc/passwd\')', policy.DENY, "pattern"),
]


@pytest.mark.parametrize(("doc", "kind", "code", "action", "word"), [c[1:] for c in RISK_CASES], ids=[c[0] for c in RISK_CASES])
def test_evaluate_with_risk(doc: dict, kind: str, code: str, action: str, word: str) -> None:
    t = rules_target(doc, kind)
    decision = policy.evaluate(user(), t, code, analyze(code, kind, "mysql" if "`" in code else "postgresql"))
    assert decision.action == action, decision.reason
    assert word.lower() in decision.reason.lower()


# policy documents that must be refused, with the field named
BAD = [
    ({"review": {"mode": "most"}}, "review.mode"),
    ({"review": {"mode": "count"}}, "review.mode"),
    ({"review": {"approvals": 0, "groups": ["dba"]}}, "review.approvals"),
    ({"review": {"groups": "dba"}}, "review.groups"),
    ({"auto_approve": "always"}, "auto_approve"),
    ({"python_auto_approve": True}, "python_auto_approve"),
    ({"python_auto_approve": "unflagged"}, "python_auto_approve"),
    ({"introspection": "sometimes"}, "introspection"),
    ({"deny": {"patterns": ["("]}}, "deny.patterns[0]"),
    ({"deny": {"risk": "severe"}}, "deny.risk"),
    ({"deny": {"nope": []}}, "deny.nope"),
    ({"limits": {"timeout": -1}}, "limits.timeout"),
    ({"limits": {"max_rows": True}}, "limits.max_rows"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("doc", "field"), BAD, ids=[b[1] for b in BAD])
def test_bad_policies_name_the_field(doc: dict, field: str) -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.parse(doc)
    assert err.value.field == field


def test_policy_round_trips_through_the_target_row() -> None:
    t = rules_target(DEMO)
    assert t.review_groups == ["dba"] and t.submit_groups == []
    assert policy.of(t) == policy.parse(DEMO)
    assert policy.of(t).limits == policy.Limits()


def test_python_auto_approval_was_removed_and_says_why() -> None:
    with pytest.raises(policy.PolicyError) as err:
        policy.parse({"python_auto_approve": "unflagged"})
    message = str(err.value)
    for word in ("removed", "bypassed", "getattr", "sys.modules", "always reviewed"):
        assert word in message, word
    assert policy.parse({"python_auto_approve": "never"}).python_auto_approve == "never"
    # no Python cell is auto-approvable, whatever its risk says
    clean = analyze("print(1)", "python", None)
    assert policy.auto_approvable(policy.parse({**DEMO, "auto_approve": "read-only"}), "python", clean) is None


def test_introspection_defaults_to_refuse_and_round_trips() -> None:
    assert policy.parse({}).introspection == "refuse"
    t = rules_target({**DEMO, "introspection": "allow"}, "python")
    assert policy.of(t).introspection == "allow"
    assert policy.parse({}).as_dict()["introspection"] == "refuse"


@pytest.mark.parametrize(("doc", "code", "run_as"), [
    (DEMO, "SELECT * FROM accounts", "read-only"),              # auto-approved because read-only
    (DEMO, "UPDATE accounts SET x = 1 WHERE id = 2", "read-write"),  # reviewed
    ({"auto_approve": "read-only"}, "SELECT 1", "read-write"),  # no review at all: not because read-only
    ({**DEMO, "auto_approve": "never"}, "SELECT 1", "read-write"),
])
def test_decision_says_how_an_approved_task_runs(doc: dict, code: str, run_as: str) -> None:
    decision = policy.evaluate(user(), rules_target(doc), code, analyze(code, "sql", "postgresql"))
    assert decision.run_as == run_as
    assert decision.read_only is (run_as == "read-only")
