"""A real OpenID provider (panva/oidc-provider on node) and gateways that sign in with it.

The provider lives in ``provider/`` (``package.json`` + ``package-lock.json``); ``npm ci`` runs
there when its ``node_modules`` is missing or holds another oidc-provider than the one pinned
(under a file lock, so parallel runs do not race). Its development interactions (a login form
taking any login as the account id, then a consent form) are submitted with httpx by
:func:`drive`, as a browser would.
"""

from __future__ import annotations

import fcntl
import html
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from harness import CELLGATE, Gateway, Proc, spawn, wait_until

PROVIDER_DIR = Path(__file__).parent / "provider"
CLIENT_ID = "cellgate"
CLIENT_SECRET = "cellgate-test-secret-3f9a"
ALIAS_PATH = "/other"


def ensure_node_modules() -> None:
    """``npm ci`` in provider/ unless node_modules already holds the pinned oidc-provider."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise RuntimeError("node and npm are needed for the OIDC tests (the OpenID provider runs on node)")
    pinned = json.loads((PROVIDER_DIR / "package.json").read_text())["dependencies"]["oidc-provider"]
    installed = PROVIDER_DIR / "node_modules" / "oidc-provider" / "package.json"

    def ready() -> bool:
        return installed.exists() and json.loads(installed.read_text()).get("version") == pinned

    if ready():
        return
    with open(PROVIDER_DIR / ".npm-ci.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready():
            out = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROVIDER_DIR,
                                 capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"npm ci in {PROVIDER_DIR} failed:\n{out.stdout}\n{out.stderr}")


@dataclass
class Provider:
    issuer: str
    proc: Proc
    accounts_file: Path
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def account(self, login: str, **claims: Any) -> None:
        """Set what the provider says about ``login`` (its ``sub``) from the next sign-in on."""
        self.accounts[login] = claims
        tmp = self.accounts_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.accounts))
        os.replace(tmp, self.accounts_file)


def start_provider(workdir: Path, port: int, redirect_uris: list[str]) -> Provider:
    ensure_node_modules()
    accounts = workdir / "accounts.json"
    accounts.write_text("{}")
    log = workdir / "provider.log"
    proc = spawn(["node", str(PROVIDER_DIR / "provider.js")], log, cwd=PROVIDER_DIR, env={
        "PORT": str(port), "CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET,
        "REDIRECT_URIS": ",".join(redirect_uris), "ACCOUNTS_FILE": str(accounts), "ALIAS_PATH": ALIAS_PATH})
    issuer = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200, 30, "provider", log)
    return Provider(issuer=issuer, proc=proc, accounts_file=accounts)


def start_oidc_gateway(workdir: Path, port: int, issuer: str, *, name: str = "gw", config: str = "") -> Gateway:
    """A gateway on a SQLite store signing in with ``issuer`` (the client secret comes from the env)."""
    db_url = f"sqlite:///{workdir}/{name}.db"
    out = subprocess.run([CELLGATE, "init-admin", "admin", "--db-url", db_url], capture_output=True, text=True,
                         check=False, cwd=workdir)
    assert out.returncode == 0, out.stderr
    cfg = workdir / f"{name}_config.py"
    cfg.write_text(f"c.OIDC.issuer = {issuer!r}\nc.OIDC.client_id = {CLIENT_ID!r}\n"
                   "c.OIDC.scopes = ['openid', 'profile', 'email', 'groups']\n" + config)
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"{name}.log"
    proc = spawn([CELLGATE, "gateway", "--port", str(port), "--db-url", db_url, "--public-url", url,
                  "--config", str(cfg), "--log-level", "INFO"], log,
                 env={"CELLGATE_OIDC_CLIENT_SECRET": CLIENT_SECRET}, cwd=workdir)
    wait_until(lambda: httpx.get(f"{url}/api/v1/").status_code == 200, 30, f"gateway {name}", log)
    return Gateway(url=url, db_url=db_url, admin_token=out.stdout.strip().splitlines()[-1], proc=proc)


# ------------------------------------------------------------------------- the browser
FORM_RE = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)
HIDDEN_RE = re.compile(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', re.IGNORECASE)


def drive(client: httpx.Client, url: str, login: str, *, stop_at: str | None = None, steps: int = 20) -> httpx.Response:
    """Go to ``url`` as a browser: follow redirects and submit the provider's login (as ``login``)
    and consent forms. Returns the first redirect whose target starts with ``stop_at`` (not
    followed), or else the first response that is neither a redirect nor a form."""
    resp = client.get(url)
    for _ in range(steps):
        if resp.is_redirect:
            target = urljoin(str(resp.url), resp.headers["location"])
            if stop_at is not None and target.startswith(stop_at):
                return resp
            resp = client.get(target)
            continue
        form = FORM_RE.search(resp.text) if resp.headers.get("content-type", "").startswith("text/html") else None
        if form is None:
            return resp
        fields = {k: html.unescape(v) for k, v in HIDDEN_RE.findall(resp.text)}
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any password")
        resp = client.post(urljoin(str(resp.url), html.unescape(form.group(1))), data=fields)
    raise AssertionError(f"the sign-in did not end within {steps} steps; last: {resp.status_code} {resp.url}")


def location(resp: httpx.Response) -> str:
    return urljoin(str(resp.url), resp.headers["location"])


def query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def browser() -> httpx.Client:
    """A fresh browser: no session at the provider yet."""
    return httpx.Client(timeout=30, follow_redirects=False)


# ----------------------------------------------------------------------- the store
def db_path(gw: Gateway) -> str:
    return gw.db_url.removeprefix("sqlite:///")


def db_execute(gw: Gateway, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on the gateway's SQLite store (as another process, or a replica, would)."""
    with sqlite3.connect(db_path(gw), timeout=30) as conn:
        rows = conn.execute(sql, params).fetchall()
    conn.close()
    return rows


def audit_actions(gw: Gateway, user: str) -> list[str]:
    with gw.admin() as api:
        resp = api.get("/api/v1/audit", params={"format": "jsonl"})
    assert resp.status_code == 200, resp.text
    events = [json.loads(line) for line in resp.text.splitlines() if line.strip()]
    return [e["action"] for e in events if (e.get("detail") or {}).get("user") == user]


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s")
