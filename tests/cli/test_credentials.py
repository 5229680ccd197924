"""Where the CLI finds its gateway URL and token: flags > env > the saved file."""

from __future__ import annotations

import json
import os
import stat

import pytest

from cellgate.cli import exitcodes
from cellgate.cli.credentials import CredentialsError, credentials_path, resolve, save_credentials


@pytest.fixture
def env(tmp_path):
    return {"CELLGATE_CONFIG_DIR": str(tmp_path / "cfg")}


def test_flags_beat_env_beat_file(env):
    save_credentials("http://file:1", "file-token", env)
    assert resolve(env=env) == resolve(None, None, env)
    creds = resolve(env=env)
    assert (creds.url, creds.token) == ("http://file:1", "file-token")
    env.update(CELLGATE_URL="http://env:2/", CELLGATE_TOKEN="env-token")
    creds = resolve(env=env)
    assert (creds.url, creds.token) == ("http://env:2", "env-token")
    creds = resolve("https://flag:3", "flag-token", env)
    assert (creds.url, creds.token) == ("https://flag:3", "flag-token")


def test_url_and_token_resolve_separately(env):
    save_credentials("http://file:1", "file-token", env)
    creds = resolve(None, "flag-token", env)
    assert (creds.url, creds.token) == ("http://file:1", "flag-token")
    creds = resolve("http://file:1/", None, env)  # same gateway as saved: its token is used
    assert creds.token == "file-token"


def test_saved_token_is_not_sent_to_another_gateway(env):
    save_credentials("http://file:1", "file-token", env)
    with pytest.raises(CredentialsError, match=r"saved token .* is for http://file:1"):
        resolve("http://elsewhere:9", None, env)
    env["CELLGATE_URL"] = "http://elsewhere:9"
    with pytest.raises(CredentialsError, match="cellgate login --gateway http://elsewhere:9"):
        resolve(env=env)


def test_nothing_configured(env):
    with pytest.raises(CredentialsError, match="no gateway URL: pass --gateway") as info:
        resolve(env=env)
    assert info.value.exit_code == exitcodes.UNREACHABLE
    with pytest.raises(CredentialsError, match="no token for http://x:1: pass --token, set CELLGATE_TOKEN"):
        resolve("http://x:1", None, env)
    with pytest.raises(CredentialsError, match="must start with http"):
        resolve("x:1", "t", env)


def test_save_writes_0600(env):
    path = save_credentials("http://gw:8765/", "tok", env)
    assert path == credentials_path(env)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"gateway_url": "http://gw:8765", "token": "tok"}
    path.chmod(0o644)
    save_credentials("http://gw:8765", "tok2", env)  # rewriting fixes the mode
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["credentials.json"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_readable_file_is_refused(env, mode):
    path = save_credentials("http://gw:1", "tok", env)
    path.chmod(mode)
    with pytest.raises(CredentialsError) as info:
        resolve(env=env)
    assert f"chmod 600 {path}" in info.value.message
    assert f"{mode:04o}" in info.value.message
    assert "tok" not in info.value.message.replace("token", "")


def test_readable_file_ignored_when_not_needed(env):
    save_credentials("http://gw:1", "tok", env).chmod(0o644)
    assert resolve("http://a:1", "t", env).token == "t"


def test_broken_file(env):
    path = credentials_path(env)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    path.chmod(0o600)
    with pytest.raises(CredentialsError, match="cellgate login"):
        resolve(env=env)


def test_default_location(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials_path({}) == tmp_path / ".config" / "cellgate" / "credentials.json"


def test_repr_hides_token(env):
    assert "secret" not in repr(resolve("http://a:1", "secret", env))


def test_cli_uses_saved_file_and_refuses_0644(cli, cli_env, gateway):
    env = {k: v for k, v in cli_env.items() if k not in ("CELLGATE_URL", "CELLGATE_TOKEN")}
    path = save_credentials(gateway.url, "good-token", env)
    p = cli("targets", env=env)
    assert p.returncode == 0, p.stderr
    os.chmod(path, 0o644)
    p = cli("targets", env=env)
    assert p.returncode == exitcodes.UNREACHABLE
    assert p.stderr.startswith("cellgate: error: ") and "chmod 600" in p.stderr
    assert "good-token" not in p.stderr
    p = cli("targets", "--gateway", gateway.url, "--token", "good-token", env=env)  # file not needed
    assert p.returncode == 0
