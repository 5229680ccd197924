"""`cellgate login` end to end (the real CLI, the real provider), and the one-time code's rules."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
from pathlib import Path
from urllib.parse import urlencode

import httpx
from harness import CELLGATE, Gateway, free_port
from oidc_harness import Provider, browser, db_execute, drive, location, query


def cli_env(config_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    return {**env, "CELLGATE_CONFIG_DIR": str(config_dir)}


def start_login(gw: Gateway, config_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """`cellgate login --no-browser`; returns the process and the URL it asks to open."""
    proc = subprocess.Popen([CELLGATE, "login", "--gateway", gw.url, "--no-browser", "--timeout", "60", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(config_dir))
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "/login?cli=1" in line:
            return proc, line.strip()
    proc.wait(10)
    raise AssertionError(f"cellgate login printed no URL:\n{''.join(seen)}")


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def test_cellgate_login_end_to_end(gateway: Gateway, provider: Provider, tmp_path: Path) -> None:
    provider.account("paula", preferred_username="paula", email="paula@example.com", email_verified=True)
    config_dir = tmp_path / "cfg"
    proc, url = start_login(gateway, config_dir)
    params = query(url)
    assert url.startswith(f"{gateway.url}/login?") and params["cli"] == "1" and len(params["challenge"]) == 43
    assert params["return_to"].startswith("http://127.0.0.1:") and params["return_to"].endswith("/callback")

    with browser() as b:
        resp = drive(b, url, "paula")  # ends at the CLI's loopback listener
    assert resp.status_code == 200 and "Signed in" in resp.text
    assert str(resp.url).startswith(params["return_to"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"Signed in to {gateway.url} as paula" in err

    creds = config_dir / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    saved = json.loads(creds.read_text())
    assert saved["gateway_url"] == gateway.url and saved["token"].startswith("cg_")
    assert saved["token"] not in out + err + url  # the token is never printed

    # the saved sign-in is what the other commands use
    tasks = subprocess.run([CELLGATE, "tasks"], capture_output=True, text=True, env=cli_env(config_dir), timeout=60)
    assert tasks.returncode == 0, tasks.stderr
    listing = subprocess.run([CELLGATE, "token", "list", "--json"], capture_output=True, text=True,
                             env=cli_env(config_dir), timeout=60)
    assert listing.returncode == 0, listing.stderr
    [token] = json.loads(listing.stdout)["tokens"]
    assert token["current"] is True and token["note"].startswith("cellgate login on ")
    assert saved["token"].startswith(token["prefix"]) and saved["token"] not in listing.stdout
    assert token["expires_at"] is not None  # c.OIDC.token_lifetime_hours = 1.5
    rows = db_execute(gateway, "SELECT (julianday(expires_at) - julianday(created_at)) * 24 FROM tokens WHERE id = ?",
                      (token["id"],))
    assert abs(rows[0][0] - 1.5) < 0.01


def test_cellgate_login_reports_a_refused_sign_in(gateway: Gateway, provider: Provider, tmp_path: Path) -> None:
    provider.account("quentin", preferred_username="quentin")
    with browser() as b:
        assert drive(b, f"{gateway.url}/login", "quentin").status_code == 200
    with gateway.admin() as api:
        assert api.delete("/api/v1/users/quentin").status_code == 200
    proc, url = start_login(gateway, tmp_path / "cfg")
    with browser() as b:
        resp = drive(b, url, "quentin")  # the gateway sends the browser back with the error
    assert resp.status_code == 200 and "Sign-in failed" in resp.text
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 8 and "sign-in refused" in err and "deactivated" in err
    assert not (tmp_path / "cfg" / "credentials.json").exists()


def _code_for(gw: Gateway, login: str, verifier: str) -> tuple[str, str]:
    """A CLI sign-in driven by hand: (one-time code, state) from the redirect to the loopback URL."""
    return_to = f"http://127.0.0.1:{free_port()}/callback"
    with browser() as b:
        resp = drive(b, f"{gw.url}/login?" + urlencode(dict(cli="1", return_to=return_to, challenge=s256(verifier),
                                                                 state="cli-state-abc")), login, stop_at=return_to)
    params = query(location(resp))
    assert params["state"] == "cli-state-abc" and set(params) == {"code", "state"}
    return params["code"], location(resp)


def exchange(gw: Gateway, code: str, verifier: str) -> httpx.Response:
    return httpx.post(f"{gw.url}/api/v1/login/token", json={"code": code, "code_verifier": verifier})


def test_one_time_codes_work_once_and_only_with_the_verifier(gateway: Gateway, provider: Provider) -> None:
    provider.account("rosa", preferred_username="rosa")
    verifier = secrets.token_urlsafe(48)
    code, _ = _code_for(gateway, "rosa", verifier)
    resp = exchange(gateway, code, secrets.token_urlsafe(48))
    assert resp.status_code == 400 and "does not match the challenge" in resp.json()["message"]
    resp = exchange(gateway, code, verifier)  # the wrong verifier spent it
    assert resp.status_code == 400 and "already used" in resp.json()["message"]

    code, _ = _code_for(gateway, "rosa", verifier)
    resp = exchange(gateway, code, verifier)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user"] == "rosa" and body["token"].startswith("cg_") and body["expires_at"]
    me = httpx.get(f"{gateway.url}/api/v1/me", headers={"Authorization": f"token {body['token']}"})
    assert me.status_code == 200 and me.json()["name"] == "rosa"
    replay = exchange(gateway, code, verifier)
    assert replay.status_code == 400 and "already used" in replay.json()["message"]


def test_one_time_codes_expire_after_two_minutes(gateway: Gateway, provider: Provider) -> None:
    provider.account("sami", preferred_username="sami")
    verifier = secrets.token_urlsafe(48)
    code, _ = _code_for(gateway, "sami", verifier)
    left = db_execute(gateway, "SELECT (julianday(expires_at) - julianday('now')) * 86400 FROM login_requests "
                               "WHERE code_hash = ?", (hashlib.sha256(code.encode()).hexdigest(),))
    assert 100 < left[0][0] <= 120
    db_execute(gateway, "UPDATE login_requests SET expires_at = '2000-01-01 00:00:00.000000' WHERE code_hash = ?",
               (hashlib.sha256(code.encode()).hexdigest(),))
    resp = exchange(gateway, code, verifier)
    assert resp.status_code == 400 and "expired" in resp.json()["message"]


def test_a_browser_code_cannot_be_exchanged(gateway: Gateway, provider: Provider) -> None:
    provider.account("tara", preferred_username="tara")
    with browser() as b:
        callback = location(drive(b, f"{gateway.url}/login", "tara", stop_at=f"{gateway.url}/oauth/callback"))
    resp = exchange(gateway, query(callback)["code"], secrets.token_urlsafe(48))  # the provider's code, not ours
    assert resp.status_code == 400
