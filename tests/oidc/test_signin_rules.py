"""The small rules of sign-in, without a provider: return_to, PKCE, names and groups from claims."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from cellgate.gateway import signin
from cellgate.gateway.oidc import OIDC, SignInRefused
from cellgate.gateway.provision import provider_groups, username


@pytest.mark.parametrize("url, expected", [
    ("http://127.0.0.1:5000/callback", "http://127.0.0.1:5000/callback"),
    ("http://localhost:5000", "http://localhost:5000/"),
    ("http://[::1]:5000/cb", "http://[::1]:5000/cb"),
])
def test_loopback_return_to(url: str, expected: str) -> None:
    assert signin.check_return_to(url) == expected


@pytest.mark.parametrize("url", [
    "http://127.0.0.2:5000/cb", "http://127.0.0.1:5000@evil.example.com/cb", "http://[::1]/cb",
    "http://127.0.0.1:99999/cb", "http://127.0.0.1:5000/cb#x", "//127.0.0.1:5000/cb", "HTTP://evil.example.com:1/",
])
def test_anything_else_is_refused(url: str) -> None:
    with pytest.raises(SignInRefused):
        signin.check_return_to(url)


def test_s256_agrees_with_authlib_and_the_cli() -> None:
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    from cellgate.cli.cmd_login import s256 as cli_s256

    verifier = "dBjftJeZ4CVP-mJ92K9S76F1RWCdEDKljWsw0G6jpKc"
    assert signin.s256(verifier) == cli_s256(verifier) == create_s256_code_challenge(verifier)
    assert signin.CHALLENGE_RE.match(signin.s256(verifier))


def test_user_names_from_claims() -> None:
    rules = OIDC()
    assert username({"preferred_username": "ann", "email": "x@example.com"}, rules) == "ann"
    assert username({"preferred_username": "Ann Smith", "email": "ann.s@example.com", "email_verified": True}, rules) == "ann.s"
    with pytest.raises(SignInRefused):
        username({"preferred_username": "Ann Smith", "email": "ann.s@example.com", "email_verified": False}, rules)
    assert username({"upn": "ann2"}, OIDC(username_claim="upn")) == "ann2"


def test_groups_from_claims() -> None:
    assert provider_groups({}, "groups") is None
    assert provider_groups({"groups": ["a"]}, "") is None
    assert provider_groups({"groups": "dba"}, "groups") == ({"dba"}, [])
    names, ignored = provider_groups({"groups": ["/devs", "dba", "has space", 7, None]}, "groups")
    assert names == {"devs", "dba"} and ignored == ["has space", "7", "None"]


def test_configuration_is_checked() -> None:
    with pytest.raises(TraitError, match="https"):
        OIDC(issuer="http://idp.example.com")
    assert OIDC(issuer="http://127.0.0.1:8080").issuer == "http://127.0.0.1:8080"
    with pytest.raises(TraitError, match="openid"):
        OIDC(scopes=["profile"])
    with pytest.raises(TraitError, match="client_id"):
        OIDC(issuer="https://idp.example.com").check()
    with pytest.raises(TraitError, match="positive"):
        OIDC(token_lifetime_hours=0)


def test_secret_load_order(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLGATE_OIDC_CLIENT_SECRET", "from-env")
    assert OIDC(client_secret="from-config").secret() == "from-config"
    assert OIDC().secret() == "from-env"
    monkeypatch.delenv("CELLGATE_OIDC_CLIENT_SECRET")
    path = tmp_path / "secret"
    path.write_text("from-file\n")
    path.chmod(0o644)
    with pytest.raises(TraitError, match=r"^OIDC.client_secret_file: .* \(mode 644\): run `chmod 600"):
        OIDC(client_secret_file=str(path)).secret()
    path.chmod(0o600)
    assert OIDC(client_secret_file=str(path)).secret() == "from-file"
    path.write_text("\n")
    with pytest.raises(TraitError, match=r"^OIDC.client_secret_file: .* is empty"):
        OIDC(client_secret_file=str(path)).secret()
