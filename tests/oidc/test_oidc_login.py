"""Browser sign-in against a real OpenID provider: users and groups from claims, and every way an
answer from the provider is refused (state, replay, nonce, issuer, expiry)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest
from harness import CELLGATE, Gateway, spawn, wait_until
from oidc_harness import Provider, audit_actions, browser, db_execute, drive, location, query

CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(b"x" * 43).digest()).rstrip(b"=").decode()


def users(gw: Gateway) -> dict[str, dict]:
    with gw.admin() as api:
        return {u["name"]: u for u in api.get("/api/v1/users").json()["users"]}


def groups(gw: Gateway) -> set[str]:
    with gw.admin() as api:
        return {g["name"] for g in api.get("/api/v1/groups").json()["groups"]}


def ensure_groups(gw: Gateway, *names: str) -> None:
    with gw.admin() as api:
        for name in names:
            assert api.post("/api/v1/groups", json={"name": name}).status_code in (201, 409)


def sign_in(gw: Gateway, login: str) -> httpx.Response:
    with browser() as b:
        return drive(b, f"{gw.url}/login", login)


def to_callback(gw: Gateway, b: httpx.Client, login: str) -> str:
    """Sign in at the provider and stop at its redirect back to the gateway; the callback URL."""
    return location(drive(b, f"{gw.url}/login", login, stop_at=f"{gw.url}/oauth/callback"))


def error_of(resp: httpx.Response) -> str:
    body = resp.json()
    assert body["status"] == resp.status_code
    return body["message"]


# ----------------------------------------------------------------------------- sign-in

def test_browser_sign_in_creates_the_user_with_the_providers_groups(gateway: Gateway, provider: Provider) -> None:
    ensure_groups(gateway, "devs", "dba")
    provider.account("alice", preferred_username="alice", email="alice@example.com", email_verified=True,
                     groups=["devs", "dba", "not-in-cellgate"])
    resp = sign_in(gateway, "alice")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert "Signed in to cellgate as alice" in resp.text and "dba, devs" in resp.text

    alice = users(gateway)["alice"]
    assert alice["groups"] == ["dba", "devs"] and alice["is_admin"] is False and alice["active"] is True
    assert "not-in-cellgate" not in groups(gateway)  # OIDC.create_groups is off: unknown groups are ignored
    row = db_execute(gateway, "SELECT email, email_verified, oidc_issuer, oidc_subject, last_login_at FROM users "
                              "WHERE name = 'alice'")[0]
    assert row[:4] == ("alice@example.com", 1, provider.issuer, "alice") and row[4]
    actions = audit_actions(gateway, "alice")
    assert actions.count("group.member_added") == 2
    assert {"user.created", "user.oidc_linked", "user.updated", "user.signed_in"} <= set(actions)


def test_second_sign_in_sets_memberships_to_exactly_the_providers_groups(gateway: Gateway, provider: Provider) -> None:
    ensure_groups(gateway, "devs", "dba", "ops")
    provider.account("bruno", preferred_username="bruno", email="bruno@example.com", email_verified=True,
                     groups=["devs", "dba"])
    assert sign_in(gateway, "bruno").status_code == 200
    assert users(gateway)["bruno"]["groups"] == ["dba", "devs"]
    with gateway.admin() as api:  # a membership given by hand is not one the provider lists
        assert api.put("/api/v1/groups/ops/members/bruno").status_code == 200

    provider.account("bruno", preferred_username="bruno", email="bruno@corp.example", email_verified=False,
                     groups=["/devs"])  # (a Keycloak-style full path counts as its name)
    assert sign_in(gateway, "bruno").status_code == 200
    assert users(gateway)["bruno"]["groups"] == ["devs"]
    assert db_execute(gateway, "SELECT email, email_verified FROM users WHERE name = 'bruno'") == [("bruno@corp.example", 0)]
    actions = audit_actions(gateway, "bruno")
    assert actions.count("group.member_removed") == 2 and actions.count("user.signed_in") == 2
    assert actions.count("user.created") == 1  # the same user, found by (issuer, sub)


def test_groups_claim_missing_leaves_memberships_alone(gateway: Gateway, provider: Provider) -> None:
    ensure_groups(gateway, "devs")
    provider.account("carmen", preferred_username="carmen", groups=["devs"])
    assert sign_in(gateway, "carmen").status_code == 200
    provider.account("carmen", preferred_username="carmen")  # no groups claim at all this time
    assert sign_in(gateway, "carmen").status_code == 200
    assert users(gateway)["carmen"]["groups"] == ["devs"]


def test_admins_come_from_the_configured_admin_groups_only(gateway: Gateway, provider: Provider) -> None:
    provider.account("dora", preferred_username="dora", groups=["cellgate-admins"])
    assert sign_in(gateway, "dora").status_code == 200
    assert users(gateway)["dora"]["is_admin"] is True
    provider.account("dora", preferred_username="dora", groups=[])
    assert sign_in(gateway, "dora").status_code == 200
    assert users(gateway)["dora"]["is_admin"] is False
    assert {"user.admin_granted", "user.admin_revoked"} <= set(audit_actions(gateway, "dora"))
    provider.account("eve", preferred_username="eve", admin=True, is_admin=True, groups=["admins"])
    assert sign_in(gateway, "eve").status_code == 200
    assert users(gateway)["eve"]["is_admin"] is False  # other claims never make an admin


def test_a_local_user_is_linked_once_and_a_name_taken_by_another_identity_is_refused(gateway: Gateway, provider: Provider) -> None:
    with gateway.admin() as api:
        assert api.post("/api/v1/users", json={"name": "frank"}).status_code == 201
    provider.account("frank", preferred_username="frank")
    assert sign_in(gateway, "frank").status_code == 200
    assert db_execute(gateway, "SELECT oidc_subject FROM users WHERE name = 'frank'") == [("frank",)]
    provider.account("impostor", preferred_username="frank")  # another subject claiming the same name
    resp = sign_in(gateway, "impostor")
    assert resp.status_code == 403
    assert "already linked to another identity" in error_of(resp)
    assert "impostor" not in users(gateway)


def test_user_name_falls_back_to_the_verified_email(gateway: Gateway, provider: Provider) -> None:
    provider.account("sub-gina", preferred_username="Gina Smith!", email="gina@example.com", email_verified=True)
    assert sign_in(gateway, "sub-gina").status_code == 200
    assert "gina" in users(gateway)
    provider.account("sub-hal", preferred_username="Hal!", email="hal@example.com", email_verified=False)
    resp = sign_in(gateway, "sub-hal")
    assert resp.status_code == 400 and "no usable user name" in error_of(resp)


def test_a_deactivated_user_cannot_sign_in(gateway: Gateway, provider: Provider) -> None:
    provider.account("ivan", preferred_username="ivan")
    assert sign_in(gateway, "ivan").status_code == 200
    with gateway.admin() as api:
        assert api.delete("/api/v1/users/ivan").status_code == 200
    resp = sign_in(gateway, "ivan")
    assert resp.status_code == 403 and "deactivated" in error_of(resp)


# ------------------------------------------------------------------------ refusals

def test_wrong_state_is_refused_and_the_real_callback_works_once(gateway: Gateway, provider: Provider) -> None:
    provider.account("jane", preferred_username="jane")
    with browser() as b:
        callback = to_callback(gateway, b, "jane")
        params = query(callback)
        assert params["code"] and params["state"] and params["iss"] == provider.issuer
        forged = callback.replace(f"state={params['state']}", "state=" + secrets.token_urlsafe(32))
        resp = b.get(forged)
        assert resp.status_code == 400 and "unknown sign-in" in error_of(resp)
        resp = b.get(callback.replace(f"state={params['state']}&", ""))
        assert resp.status_code == 400 and "no state" in error_of(resp)
        resp = b.get(callback)
        assert resp.status_code == 200 and "as jane" in resp.text
        replay = b.get(callback)
        assert replay.status_code == 400 and "already completed" in error_of(replay)


def test_a_callback_refused_by_the_provider_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.account("kim", preferred_username="kim")
    with browser() as b:
        callback = to_callback(gateway, b, "kim")
        params = query(callback)
        resp = b.get(f"{gateway.url}/oauth/callback", params={"state": params["state"], "error": "access_denied",
                                                               "error_description": "the user said no"})
        assert resp.status_code == 400 and "access_denied: the user said no" in error_of(resp)
        assert b.get(callback).status_code == 400  # that state is spent


def test_a_wrong_iss_parameter_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.account("lena", preferred_username="lena")
    with browser() as b:
        callback = to_callback(gateway, b, "lena")
        resp = b.get(callback.replace("iss=", "iss=https%3A%2F%2Fevil.example.com&was="))
        assert resp.status_code == 400 and "not from the configured" in error_of(resp)
    with browser() as b:
        callback = to_callback(gateway, b, "lena")
        params = query(callback)
        resp = b.get(f"{gateway.url}/oauth/callback", params={"state": params["state"], "code": params["code"]})
        assert resp.status_code == 400 and "no iss parameter" in error_of(resp)
    assert "lena" not in users(gateway)


def test_a_nonce_that_does_not_match_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.account("mia", preferred_username="mia")
    with browser() as b:
        to_idp = b.get(f"{gateway.url}/login")
        assert to_idp.status_code == 302 and location(to_idp).startswith(provider.issuer + "/auth?")
        auth = query(location(to_idp))
        assert auth["code_challenge_method"] == "S256" and len(auth["code_challenge"]) == 43 and auth["nonce"]
        # the request the gateway keeps is changed (as if the ID token were for another sign-in)
        db_execute(gateway, "UPDATE login_requests SET nonce = 'another-nonce' WHERE state = ?", (auth["state"],))
        resp = drive(b, location(to_idp), "mia")
        assert resp.status_code == 400 and "'nonce' claim" in error_of(resp)
    assert "mia" not in users(gateway)


def test_tokens_from_another_issuer_are_refused(alias_gateway: Gateway, provider: Provider) -> None:
    """The gateway trusts issuer PROVIDER/other; the provider's answers and ID tokens say PROVIDER."""
    provider.account("nina", preferred_username="nina")
    with browser() as b:
        callback = to_callback(alias_gateway, b, "nina")
        resp = b.get(callback)  # with the provider's iss parameter (RFC 9207)
        assert resp.status_code == 400 and "not from the configured" in error_of(resp)
    with browser() as b:
        callback = to_callback(alias_gateway, b, "nina")
        params = query(callback)  # without it, the ID token's own iss is what refuses it
        resp = b.get(f"{alias_gateway.url}/oauth/callback", params={"state": params["state"], "code": params["code"]})
        assert resp.status_code == 400 and "'iss' claim" in error_of(resp), resp.text
    assert "nina" not in users(alias_gateway)


def test_a_sign_in_older_than_ten_minutes_is_refused(gateway: Gateway, provider: Provider) -> None:
    provider.account("omar", preferred_username="omar")
    with browser() as b:
        callback = to_callback(gateway, b, "omar")
        db_execute(gateway, "UPDATE login_requests SET expires_at = '2000-01-01 00:00:00.000000' WHERE state = ?",
                   (query(callback)["state"],))
        resp = b.get(callback)
        assert resp.status_code == 400 and "expired" in error_of(resp)


@pytest.mark.parametrize("return_to", [
    "http://evil.example.com:8080/callback",
    "https://127.0.0.1:8080/callback",
    "http://127.0.0.1.evil.example.com:8080/callback",
    "http://user@127.0.0.1:8080/callback",
    "http://127.0.0.1/callback",
    "http://10.0.0.1:8080/callback",
    "http://127.0.0.1:8080/callback?next=https://evil.example.com",
    "javascript:alert(1)",
    "",
])
def test_return_to_must_be_a_loopback_http_url(gateway: Gateway, return_to: str) -> None:
    resp = httpx.get(f"{gateway.url}/login", params={"cli": "1", "return_to": return_to, "challenge": CHALLENGE,
                                                     "state": "cli-state-123"})
    assert resp.status_code == 400 and "location" not in resp.headers
    assert "return_to must be" in error_of(resp)


@pytest.mark.parametrize("return_to", ["http://127.0.0.1:9/callback", "http://localhost:9/cb", "http://[::1]:9/callback"])
def test_loopback_return_to_is_accepted(gateway: Gateway, provider: Provider, return_to: str) -> None:
    resp = httpx.get(f"{gateway.url}/login", params={"cli": "1", "return_to": return_to, "challenge": CHALLENGE,
                                                     "state": "cli-state-123"})
    assert resp.status_code == 302 and location(resp).startswith(provider.issuer + "/auth?")


def test_cli_parameters_are_checked(gateway: Gateway) -> None:
    base = {"cli": "1", "return_to": "http://127.0.0.1:9/callback", "challenge": CHALLENGE, "state": "cli-state-123"}
    for change, message in (({"challenge": "short"}, "challenge must be"), ({"state": "x"}, "state must be"),
                            ({"cli": "", "challenge": ""}, "cli=1")):
        resp = httpx.get(f"{gateway.url}/login", params={**base, **change})
        assert resp.status_code == 400 and message in error_of(resp), resp.text


def test_without_an_issuer_login_is_a_json_404(tmp_path: Path) -> None:
    from harness import free_port

    port = free_port()
    proc = spawn([CELLGATE, "gateway", "--port", str(port), "--db-url", f"sqlite:///{tmp_path}/plain.db"],
                 tmp_path / "plain.log", cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/api/v1/").status_code == 200, 30, "gateway", tmp_path / "plain.log")
        for path in ("/login", "/oauth/callback?state=x&code=y"):
            resp = httpx.get(url + path)
            assert resp.status_code == 404 and resp.headers["content-type"].startswith("application/json")
            assert "OIDC sign-in is not configured" in error_of(resp)
        resp = httpx.post(f"{url}/api/v1/login/token", json={"code": "c", "code_verifier": "v" * 43})
        assert resp.status_code == 404 and "not configured" in error_of(resp)
        out = subprocess.run([CELLGATE, "login", "--gateway", url, "--no-browser"], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "CELLGATE_CONFIG_DIR": str(tmp_path / "cfg")})
        assert out.returncode == 8 and "OIDC sign-in is not configured" in out.stderr
    finally:
        proc.stop()


def test_a_half_configuration_is_refused_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "half_config.py"
    cfg.write_text("c.OIDC.issuer = 'https://idp.example.com'\n")
    out = subprocess.run([CELLGATE, "gateway", "--db-url", f"sqlite:///{tmp_path}/half.db", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0 and "OIDC.client_id is required" in out.stderr
    cfg.write_text("c.OIDC.issuer = 'http://idp.example.com'\nc.OIDC.client_id = 'x'\n")
    out = subprocess.run([CELLGATE, "gateway", "--db-url", f"sqlite:///{tmp_path}/half.db", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode != 0 and "OIDC.issuer must be an https:// URL" in out.stderr
