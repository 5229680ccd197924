"""`GET /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` and `cellgate token list|revoke`."""

from __future__ import annotations

import json
import os
import subprocess

from harness import CELLGATE, Gateway


def cellgate(gw: Gateway, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    env.update(CELLGATE_URL=gw.url, CELLGATE_TOKEN=token, CELLGATE_CONFIG_DIR="/nonexistent")
    return subprocess.run([CELLGATE, *args], capture_output=True, text=True, env=env, timeout=60)


def new_token(gw: Gateway, user: str, note: str) -> tuple[str, int]:
    with gw.admin() as api:
        resp = api.post(f"/api/v1/users/{user}/tokens", json={"note": note, "expires_in_days": 3})
    assert resp.status_code == 201, resp.text
    return resp.json()["token"], resp.json()["id"]


def test_token_list_shows_your_tokens_never_the_tokens(gateway: Gateway) -> None:
    gateway.user("uma")
    first, first_id = new_token(gateway, "uma", "laptop")
    second, second_id = new_token(gateway, "uma", "ci job")
    out = cellgate(gateway, first, "token", "list")
    assert out.returncode == 0, out.stderr
    assert first not in out.stdout + out.stderr and second not in out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "NOTE", "PREFIX", "CREATED", "EXPIRES", "LAST", "USED", "REVOKED"]
    assert any(line.startswith(f"{first_id} *") and "laptop" in line and f"{first[:8]}…" in line for line in lines)
    assert any(line.startswith(f"{second_id} ") and "ci job" in line for line in lines)

    body = json.loads(cellgate(gateway, first, "token", "list", "--json").stdout)
    mine = {t["id"]: t for t in body["tokens"]}
    assert {first_id, second_id} <= set(mine) and all(t["user"] == "uma" for t in mine.values())
    assert mine[first_id]["current"] and not mine[second_id]["current"]
    assert mine[first_id]["last_used_at"] and mine[second_id]["last_used_at"] is None
    assert mine[second_id]["expires_at"] and mine[second_id]["state"] == "active"
    assert set(mine[first_id]) == {"id", "kind", "user", "note", "prefix", "state", "created_at", "expires_at",
                                   "last_used_at", "revoked_at", "current"}


def test_token_revoke_takes_effect_on_the_next_request(gateway: Gateway) -> None:
    gateway.user("vic")
    keep, _ = new_token(gateway, "vic", "keep")
    drop, drop_id = new_token(gateway, "vic", "drop")
    assert cellgate(gateway, drop, "tasks").returncode == 0
    out = cellgate(gateway, keep, "token", "revoke", str(drop_id))
    assert out.returncode == 0 and f"token {drop_id} ({drop[:8]}…) revoked" in out.stdout, out.stderr
    refused = cellgate(gateway, drop, "tasks")
    assert refused.returncode == 7 and "refused the token" in refused.stderr
    listed = {t["id"]: t for t in json.loads(cellgate(gateway, keep, "token", "list", "--json").stdout)["tokens"]}
    assert listed[drop_id]["state"] == "revoked" and listed[drop_id]["revoked_at"]
    again = cellgate(gateway, keep, "token", "revoke", str(drop_id))  # idempotent
    assert again.returncode == 0


def test_only_your_own_tokens_unless_admin(gateway: Gateway) -> None:
    mine = gateway.user("wes")
    gateway.user("uma")
    other, other_id = new_token(gateway, "uma", "other")
    out = cellgate(gateway, mine, "token", "revoke", str(other_id))
    assert out.returncode == 8 and f"token {other_id} not found" in out.stderr
    out = cellgate(gateway, mine, "token", "list", "--user", "uma")
    assert out.returncode == 8 and "only admins" in out.stderr
    out = cellgate(gateway, mine, "token", "list", "--agents")
    assert out.returncode == 8 and "only admins" in out.stderr

    admin = gateway.admin_token
    listed = json.loads(cellgate(gateway, admin, "token", "list", "--user", "uma", "--json").stdout)["tokens"]
    assert other_id in {t["id"] for t in listed} and all(t["user"] == "uma" for t in listed)
    out = cellgate(gateway, admin, "token", "revoke", str(other_id), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["state"] == "revoked"
    assert cellgate(gateway, other, "tasks").returncode == 7
    with gateway.admin() as api:
        events = [json.loads(line) for line in api.get("/api/v1/audit", params={"format": "jsonl"}).text.splitlines()]
    [revoked] = [e for e in events if e["action"] == "token.revoked" and e["detail"]["token_id"] == other_id]
    assert revoked["actor"] == "admin" and revoked["detail"]["user"] == "uma"
    assert other not in json.dumps(events)  # no token in the audit log
