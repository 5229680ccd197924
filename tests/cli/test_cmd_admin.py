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
    p = cli("agent-tokens", "create", "eu-1")
    assert p.returncode == 0 and p.stdout == "cga_eu-1_secret\n"
    assert json.loads(cli("agent-tokens", "create", "eu-1", "--json").stdout) == {"token": "cga_eu-1_secret", "id": 8}


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
