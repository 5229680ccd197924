"""Templates over REST, on a real gateway process reading a real git repository made here.

Who sees which template, its parameters as JSON Schema, a refresh by an admin (audited with the
commit), the push webhook (HMAC-signed or refused), and a gateway without a repository.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from gitrepo import commit, new_repo

sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))  # harness: how the e2e tests start gateways

from harness import CELLGATE, Gateway, start_gateway, wait_until

from cellgate.cli import exitcodes

SECRET = "hook-Secret-42"
REFUND = b"""-- ---
-- description: Close a refund paid twice
-- groups: [support]
-- targets: [payments]
-- parameters:
--   refund_id: {type: integer, required: true, help: the refund's id}
--   reason: {type: select, options: [duplicate, fraud], default: duplicate}
-- ---
UPDATE refunds SET reason = {{ reason }} WHERE id = {{ refund_id }};
"""
ADMIN_ONLY = b"# ---\n# kinds: [python]\n# ---\nprint('hello')\n"


@dataclass
class World:
    gw: Gateway
    repo: Path
    support: str
    other: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("templates-api")
    repo = new_repo(workdir / "repo")
    commit(repo, {"fixes/refund.sql": REFUND, "checks/admin_only.py": ADMIN_ONLY, "broken.sql": b"SELECT 1;\n"})
    config = (f"c.Templates.repository = {str(repo)!r}\nc.Templates.cache_dir = {str(workdir / 'cache')!r}\n"
              f"c.Templates.webhook_secret = {SECRET!r}\nc.Templates.refresh_interval = 3600\n")
    gw = start_gateway(workdir, f"sqlite:///{workdir}/gw.db", config=config)
    try:
        yield World(gw=gw, repo=repo, support=gw.user("sam", ("support",)), other=gw.user("olga", ("ops",)))
    finally:
        gw.proc.stop()


def listed(gw: Gateway, token: str) -> dict:
    with gw.api(token) as api:
        r = api.get("/api/v1/templates")
    assert r.status_code == 200, r.text
    return r.json()


def test_each_user_sees_only_the_templates_they_may_run(world: World) -> None:
    wait_until(lambda: listed(world.gw, world.gw.admin_token)["source"]["commit"], 30, "first refresh")
    assert [t["name"] for t in listed(world.gw, world.support)["templates"]] == ["fixes/refund"]
    assert listed(world.gw, world.other)["templates"] == []
    admin = listed(world.gw, world.gw.admin_token)
    assert [t["name"] for t in admin["templates"]] == ["checks/admin_only", "fixes/refund"]  # no group: admins only
    assert "must open with a header" in admin["source"]["errors"]["broken.sql"]
    assert "errors" not in listed(world.gw, world.support)["source"]  # what is broken is the admins' to see


def test_one_template_with_its_parameters_as_json_schema(world: World) -> None:
    wait_until(lambda: listed(world.gw, world.support)["templates"], 30, "first refresh")
    with world.gw.api(world.support) as api:
        r = api.get("/api/v1/templates/fixes/refund")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["schema"] == {"type": "object", "additionalProperties": False, "required": ["refund_id"], "properties": {
            "refund_id": {"type": "integer", "title": "refund_id", "description": "the refund's id"},
            "reason": {"type": "string", "title": "reason", "enum": ["duplicate", "fraud"], "default": "duplicate"}}}
        assert body["code"].startswith("UPDATE refunds") and len(body["commit"]) == 40
        hidden = api.get("/api/v1/templates/checks/admin_only")
        absent = api.get("/api/v1/templates/no/such")
    assert hidden.status_code == absent.status_code == 404
    assert hidden.json()["message"].replace("checks/admin_only", "X") == absent.json()["message"].replace("no/such", "X")


def test_an_admin_refresh_pins_the_new_commit_and_is_audited(world: World) -> None:
    wait_until(lambda: listed(world.gw, world.gw.admin_token)["source"]["commit"], 30, "first refresh")
    before = listed(world.gw, world.gw.admin_token)["source"]["commit"]
    head = commit(world.repo, {"fixes/refund.sql": REFUND.replace(b"default: duplicate", b"default: fraud")})
    with world.gw.api(world.support) as api:
        assert api.post("/api/v1/template-repository").status_code == 403
    with world.gw.admin() as api:
        r = api.post("/api/v1/template-repository")
        assert r.status_code == 200, r.text
        assert r.json()["commit"] == head and r.json()["previous"] == before
        assert list(r.json()["errors"]) == ["broken.sql"]
        events = [json.loads(line) for line in api.get("/api/v1/audit").text.splitlines()]
    refreshed = [e for e in events if e["action"] == "templates.refreshed"]
    assert refreshed[-1]["detail"]["commit"] == head and refreshed[-1]["actor"] == "admin"
    with world.gw.api(world.support) as api:
        schema = api.get("/api/v1/templates/fixes/refund").json()["schema"]
    assert schema["properties"]["reason"]["default"] == "fraud"


def _hook(gw: Gateway, body: bytes, signature: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return httpx.post(f"{gw.url}/api/v1/template-repository/webhook", content=body, headers=headers, timeout=30)


def test_the_push_webhook_refreshes_only_when_signed(world: World) -> None:
    body = b'{"ref": "refs/heads/main"}'
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for signature in (None, "sha256=" + "0" * 64, good.upper(), "sha1=" + good[7:],
                      "sha256=" + hmac.new(b"wrong", body, hashlib.sha256).hexdigest()):
        r = _hook(world.gw, body, signature)
        assert r.status_code == 401 and r.json()["status"] == 401, (signature, r.text)
    assert _hook(world.gw, body + b" ", good).status_code == 401  # the signature covers the exact body
    head = commit(world.repo, {"new.sql": b"-- ---\n-- groups: [support]\n-- kinds: [sql]\n-- ---\nSELECT 1;\n"})
    r = _hook(world.gw, body, good)
    assert r.status_code == 202 and r.json() == {"refreshing": True}
    wait_until(lambda: listed(world.gw, world.support)["source"]["commit"] == head, 30, "the webhook's refresh")
    assert "new" in [t["name"] for t in listed(world.gw, world.support)["templates"]]


def test_without_a_repository_there_are_no_templates_and_it_says_how(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, f"sqlite:///{tmp_path}/gw.db")
    try:
        source = listed(gw, gw.admin_token)["source"]
        assert source["configured"] is False and "c.Templates.repository" in source["message"]
        with gw.admin() as api:
            r = api.post("/api/v1/template-repository")
        assert r.status_code == 409 and "c.Templates.repository" in r.json()["message"]
        r = _hook(gw, b"{}", "sha256=" + hmac.new(b"", b"{}", hashlib.sha256).hexdigest())
        assert r.status_code == 401 and "webhook is off" in r.json()["message"]
    finally:
        gw.proc.stop()


def cellgate(gw: Gateway, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    env.update(CELLGATE_URL=gw.url, CELLGATE_TOKEN=token, CELLGATE_CONFIG_DIR=str(Path(gw.db_url[10:]).parent / "cli"))
    return subprocess.run([CELLGATE, *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_cli_lists_shows_and_refreshes(world: World) -> None:
    wait_until(lambda: listed(world.gw, world.support)["templates"], 30, "first refresh")
    p = cellgate(world.gw, world.support, "templates")
    assert p.returncode == 0, p.stderr
    header, *rows = p.stdout.splitlines()
    assert header.split() == ["NAME", "KIND", "RUNS", "ON", "PARAMETERS", "DESCRIPTION"]
    assert any(r.split()[:3] == ["fixes/refund", "sql", "payments"] and "refund_id, reason" in r for r in rows), p.stdout
    assert "at commit " in p.stderr and "broken.sql" not in p.stderr
    p = cellgate(world.gw, world.support, "templates", "show", "fixes/refund")
    assert p.returncode == 0, p.stderr
    assert "  -p refund_id=…  integer, required — the refund's id" in p.stdout
    assert "UPDATE refunds SET reason = {{ reason }}" in p.stdout and "run by:   support" in p.stdout
    p = cellgate(world.gw, world.support, "templates", "show", "checks/admin_only")
    assert p.returncode == exitcodes.ERROR and "no template 'checks/admin_only'" in p.stderr
    p = cellgate(world.gw, world.support, "templates", "refresh")
    assert p.returncode == exitcodes.ERROR and "may not POST" in p.stderr
    p = cellgate(world.gw, world.gw.admin_token, "templates", "refresh")
    assert p.returncode == 0 and p.stdout.startswith("templates at commit ") and "broken.sql" in p.stderr, p
    p = cellgate(world.gw, world.support, "templates", "list", "--json")
    assert p.returncode == 0 and "fixes/refund" in [t["name"] for t in json.loads(p.stdout)["templates"]]
