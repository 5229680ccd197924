"""Administration commands against the fake gateway."""

from __future__ import annotations

import json
import stat

from cellgate.cli import exitcodes


def test_users(cli, gateway):
    p = cli("users", "add", "bob", "--admin")
    assert p.returncode == 0 and p.stdout == "user bob added (admin)\n"
    assert gateway.requests[-1]["body"] == {"name": "bob", "is_admin": True}
    assert cli("users", "add", "carol").returncode == 0
    assert gateway.requests[-1]["body"] == {"name": "carol", "is_admin": False}
    assert cli("users", "deactivate", "carol").returncode == 0
    assert gateway.requests[-1]["method"] == "DELETE" and gateway.requests[-1]["path"] == "users/carol"
    p = cli("users", "list")
    rows = [ln.split() for ln in p.stdout.splitlines()]
    assert rows[0] == ["NAME", "ADMIN", "ACTIVE", "GROUPS"]
    assert ["bob", "yes", "yes"] in rows and ["carol", "no", "no"] in rows
    names = [u["name"] for u in json.loads(cli("users", "list", "--json").stdout)["users"]]
    assert names == ["alice", "bob", "carol"]


def test_admin_commands_refused_for_non_admin(cli, cli_env):
    p = cli("users", "list", env={**cli_env, "CELLGATE_TOKEN": "carol-token"})
    assert p.returncode == exitcodes.ERROR and p.stderr == "cellgate: error: administrators only\n"


def test_groups(cli, gateway):
    assert cli("groups", "add", "sre").stdout == "group sre added\n"
    p = cli("groups", "add-member", "sre", "bob")
    assert p.returncode == 0 and p.stdout == "bob added to sre\n"
    assert gateway.requests[-1]["method"] == "PUT" and gateway.requests[-1]["path"] == "groups/sre/members/bob"
    p = cli("groups", "list")
    assert [ln.split() for ln in p.stdout.splitlines()] == [["NAME", "MEMBERS"], ["dba", "alice"], ["sre", "bob"]]
    assert cli("groups", "remove-member", "sre", "bob").returncode == 0
    assert gateway.groups["sre"] == []
    p = cli("groups", "add-member", "nope", "bob")
    assert p.returncode == exitcodes.ERROR and "group nope not found" in p.stderr
    assert cli("groups").returncode == exitcodes.USAGE


def test_tokens_print_only_the_token_on_stdout(cli, gateway):
    p = cli("tokens", "create", "bob", "--note", "laptop", "--expires-in-days", "30")
    assert p.returncode == 0
    assert p.stdout == "cg_bob_secret\n"
    assert "shown only this once" in p.stderr
    assert gateway.requests[-1]["body"] == {"note": "laptop", "expires_in_days": 30}
    assert gateway.requests[-1]["path"] == "users/bob/tokens"
    assert cli("tokens", "create", "bob", "--expires-in-days", "0").returncode == exitcodes.USAGE
    p = cli("agent-tokens", "create", "eu-1", "--targets", "failing,db")
    assert p.returncode == 0 and p.stdout == "cga_eu-1_secret\n"
    assert "agent eu-1 (targets: db, failing)" in p.stderr
    assert gateway.requests[-1]["body"] == {"name": "eu-1", "targets": ["failing", "db"]}
    assert json.loads(cli("agent-tokens", "create", "eu-1", "--targets", "db", "--json").stdout) == \
        {"token": "cga_eu-1_secret", "id": 8, "agent": "eu-1", "targets": ["db"]}


def test_agent_tokens_are_bound_to_targets(cli, gateway):
    p = cli("agent-tokens", "create", "eu-1")
    assert p.returncode == exitcodes.USAGE and "--targets" in p.stderr
    assert cli("agent-tokens", "create", "eu-1", "--targets", ",").returncode == exitcodes.USAGE
    p = cli("agent-tokens", "create", "eu-1", "--targets", "db", "--targets", "nope,db")
    assert p.returncode == exitcodes.ERROR and "unknown target(s): nope" in p.stderr
    assert gateway.requests[-1]["body"] == {"name": "eu-1", "targets": ["db", "nope"]}
    p = cli("agent-tokens", "list")
    assert p.returncode == 0, p.stderr
    rows = [ln.split() for ln in p.stdout.splitlines()]
    assert rows[0] == ["ID", "AGENT", "TARGETS", "STATE", "CREATED", "LAST", "USED", "REVOKED"]
    assert rows[1][:4] == ["8", "eu-1", "db,", "warehouse"] and rows[1][-1] == "never"
    assert "(unbound: refused)" in p.stdout
    assert json.loads(cli("agent-tokens", "list", "--json").stdout)["agent_tokens"][0]["agent"] == "eu-1"
    p = cli("agent-tokens", "set-targets", "8", "--targets", "failing")
    assert p.returncode == 0 and p.stdout == "agent token 8 (eu-1) may serve: failing\n"
    assert gateway.requests[-1]["method"] == "PUT" and gateway.requests[-1]["path"] == "agent-tokens/8"
    assert gateway.requests[-1]["body"] == {"targets": ["failing"]}


def test_agents(cli):
    p = cli("agents")
    assert p.returncode == 0
    assert p.stdout.splitlines()[1].split() == ["a1", "0.1.0", "eu", "db"]


def test_target_set_keeps_what_is_not_given(cli, gateway):
    p = cli("target", "set", "db", "--review-group", "dba", "sre")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "target db updated: submit eng; review dba, sre\n"
    assert gateway.requests[-1]["body"] == {"description": "orders database", "submit_groups": ["eng"],
                                            "review_groups": ["dba", "sre"]}
    p = cli("target", "set", "warehouse", "--description", "analytics", "--submit-group", "eng",
            "--submit-group", "data", "--json")
    assert p.returncode == 0
    assert json.loads(p.stdout)["submit_groups"] == ["eng", "data"]
    assert gateway.requests[-1]["body"] == {"description": "analytics", "submit_groups": ["eng", "data"],
                                            "review_groups": []}
    assert cli("target", "set", "db", "--review-group", "").returncode == 0
    assert gateway.targets["db"]["review_groups"] == []


def test_target_set_kind_and_dialect(cli, gateway):
    p = cli("target", "set", "db", "--kind", "sql", "--dialect", "mariadb", "--display-name", "Orders (prod)")
    assert p.returncode == 0, p.stderr
    assert p.stdout == "target db updated: submit eng; review dba; kind sql (mariadb)\n"
    body = gateway.requests[-1]["body"]
    assert (body["kind"], body["dialect"], body["display_name"]) == ("sql", "mariadb", "Orders (prod)")
    assert "kind" not in cli("target", "set", "db", "--description", "x").stdout
    assert "kind" not in gateway.requests[-1]["body"]
    assert cli("target", "set", "db", "--kind", "mongo").returncode == exitcodes.USAGE
    p = cli("target", "set", "fresh")
    assert p.returncode == 0 and "has no kind yet" in p.stderr and "--kind sql --dialect" in p.stderr


def test_audit_export(cli, gateway, tmp_path):
    p = cli("audit", "export")
    assert p.returncode == 0
    assert [json.loads(ln)["id"] for ln in p.stdout.splitlines()] == [1, 2, 3]
    out = tmp_path / "audit.csv"
    p = cli("audit", "export", "--format", "csv", "--since", "2024-01-01T00:00:00Z",
            "--until", "2024-02-01T00:00:00Z", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert out.read_text().splitlines()[0] == "id,kind,user"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "audit events to" in p.stderr and p.stdout == ""
    assert gateway.requests[-1]["query"] == {"format": "csv", "since": "2024-01-01T00:00:00Z",
                                             "until": "2024-02-01T00:00:00Z"}
    assert not [x for x in tmp_path.iterdir() if x.name.endswith(".part")]


def test_audit_verify(cli, gateway):
    p = cli("audit", "verify")
    assert p.returncode == 0 and p.stdout == "audit chain intact (3 events)\n"
    gateway.audit_ok = False
    p = cli("audit", "verify")
    assert p.returncode == exitcodes.FAILED
    assert p.stderr == "event 2 does not match the hash chain (3 events); first bad event: 2\n"
    p = cli("audit", "verify", "--json")
    assert p.returncode == exitcodes.FAILED and json.loads(p.stdout)["first_bad"] == 2
