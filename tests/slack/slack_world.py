"""The Slack tests' world: a real gateway (subprocess) configured to use the Slack stand-in, its users and links.

The gateway reads ``cellgate_config.py`` from its working directory (``c.Slack.*``) and the bot
token from ``CELLGATE_SLACK_BOT_TOKEN``, as an operator would set them.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from harness import CELLGATE, Gateway, Proc, cli, free_port, wait_until  # tests/e2e, on the path by conftest
from slack_standin import Call, SlackStandIn

SECRET = "8f742231b10e8888abcd99yyyzzz85a5-test-signing-secret"
BOT_TOKEN = "xoxb-000000000000-000000000000-testbottokenvalue"


def slack_config(standin: SlackStandIn, **extra: Any) -> dict[str, Any]:
    return {"signing_secret": SECRET, "api_url": standin.url, "retries": 3, "retry_delay": 0.05, "timeout": 3.0,
            "channels": {"payments": "CPAY"}, "default_channel": "CREVIEWS", **extra}


def start_slack_gateway(workdir: Path, db_url: str, slack: dict[str, Any] | None, bot_token: str | None = BOT_TOKEN,
                        config: str = "") -> Gateway:
    """``cellgate gateway`` run in its own directory holding ``cellgate_config.py`` with ``slack`` as
    ``c.Slack`` (and ``config``, more of that file's text)."""
    home = workdir / f"gateway-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    if slack is not None or config:
        (home / "cellgate_config.py").write_text("".join(f"c.Slack.{k} = {v!r}\n" for k, v in (slack or {}).items()) + config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELLGATE_")}
    if bot_token:
        env["CELLGATE_SLACK_BOT_TOKEN"] = bot_token
    out = subprocess.run([CELLGATE, "init-admin", "admin", "--db-url", db_url], capture_output=True, text=True,
                         env=env, cwd=home, check=False)
    assert out.returncode == 0, out.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = home / "gateway.log"
    with open(log, "ab") as fh:
        popen = subprocess.Popen([CELLGATE, "gateway", "--port", str(port), "--db-url", db_url, "--public-url", url,
                                  "--log-level", "INFO"], stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=home)
    gw = Gateway(url=url, db_url=db_url, admin_token=out.stdout.strip(), proc=Proc(popen, log))
    wait_until(lambda: httpx.get(f"{url}/api/v1/").status_code == 200, 30, "gateway", log)
    return gw


@dataclass
class World:
    gw: Gateway
    standin: SlackStandIn
    agent: Proc
    db: Path
    templates_commit: str = ""
    #: the SQLite file of target ``ledger`` (table ``entries``), for the direct-message tests
    ledger: Path | None = None

    def token(self, name: str) -> str:
        return self.gw.tokens[name]

    def api(self, name: str) -> httpx.Client:
        return self.gw.api(self.gw.tokens[name])

    def submit(self, who: str, target: str, code: str, why: str = "") -> dict[str, Any]:
        with self.api(who) as api:
            r = api.post("/api/v1/tasks", json={"target": target, "code": code, "why": why})
            assert r.status_code == 201, r.text
            return r.json()

    def task(self, task_id: int) -> dict[str, Any]:
        with self.gw.admin() as api:
            r = api.get(f"/api/v1/tasks/{task_id}")
            assert r.status_code == 200, r.text
            return r.json()

    def log(self) -> str:
        return self.gw.proc.log.read_text()


def set_email(db: Path, user: str, email: str, verified: bool) -> None:
    """What an OIDC sign-in records (users.email, users.email_verified)."""
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("UPDATE users SET email = ?, email_verified = ? WHERE name = ?", (email, verified, user))


def seed(gw: Gateway) -> None:
    gw.user("dev", ("developers",))
    gw.user("rev", ("dba",))
    gw.user("rev2", ("dba",))
    gw.user("ops", ("ops",))
    gw.user("unver", ("dba",))
    gw.set_target("payments", review_groups=["dba"])
    gw.set_target("py", review_groups=["dba"])
    gw.set_target("vault", review_groups=["dba"], submit_groups=["dba"])
    for slack_id, user in (("UDEV", "dev"), ("UREV", "rev"), ("UOPS", "ops")):
        out = cli(gw, gw.admin_token, "slack", "link", slack_id, user)
        assert out.returncode == 0, out.stderr




def notice_of(standin: SlackStandIn, task_id: int) -> Call:
    """The review notice of ``task_id`` (a top-level chat.postMessage)."""
    return standin.wait_for("chat.postMessage", lambda c: "thread_ts" not in c.params
                            and c.params.get("text", "").startswith(f"cellgate task #{task_id} on "))
