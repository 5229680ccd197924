"""Sign-in with an OpenID provider: the ``OIDC`` configuration and the provider client.

The gateway is an OpenID Connect relying party (Authlib's OAuth 2 and OIDC pieces, joserfc for
the JWS): the authorization code flow with PKCE (S256). :class:`OIDC` is configured in
``cellgate_config.py`` (``c.OIDC.issuer = "https://idp.example.com"``); :class:`OIDCProvider`
does the talking: discovery (``ISSUER/.well-known/openid-configuration``, whose ``issuer``
must be the configured one), the authorization URL, the code exchange and the checks on the
ID token: its signature with a key from the provider's JWKS (fetched from discovery, fetched
again once when a token names a key it does not hold), ``iss``, ``aud``, ``azp``, ``exp``,
``iat``, ``nonce`` and ``at_hash``. What the claims then do to users and groups is
``provision.py``; sign-ins in progress and one-time codes are ``signin.py``.

Errors::

    CellgateError
    ├── SignInRefused (400)         an answer that is not acceptable: bad state, nonce, iss, aud,
    │                               signature, an error from the provider…
    └── ProviderUnavailable (502)   the provider could not be reached or answered nonsense

Secrets (the client secret, codes, tokens) are never logged.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet
from traitlets import Bool, Float, List, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from ..secret_files import read_setting_file
from .errors import BadRequest, CellgateError

log = logging.getLogger("cellgate.gateway.oidc")

SECRET_ENV = "CELLGATE_OIDC_CLIENT_SECRET"
#: asymmetric signatures only: an ID token signed with the client secret (HS*) or not at all is refused
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
#: seconds discovery and the JWKS are kept before they are fetched again
METADATA_TTL = 3600.0
HTTP_TIMEOUT = 10.0
#: seconds of clock skew allowed on exp / iat
LEEWAY = 120
CALLBACK_PATH = "/oauth/callback"


class SignInRefused(BadRequest):
    """The sign-in cannot go on: the message says what was wrong (never a secret)."""


class ProviderUnavailable(CellgateError):
    status = 502


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OIDC(Configurable):
    """Sign-in with an OpenID provider (Okta, Keycloak, Google, Entra ID, Dex…).

    Register the gateway at the provider as a confidential web client whose redirect URI is
    ``<Gateway.public_url>/oauth/callback`` (authorization code grant, PKCE S256).
    """

    issuer = Unicode("", config=True, help=(
        "The provider's issuer URL; its discovery document is ISSUER/.well-known/openid-configuration. "
        "Empty (the default): OIDC sign-in is off and /login answers 404."))
    client_id = Unicode("", config=True, help="The client id the provider gave the gateway.")
    client_secret = Unicode(config=True, help=(
        "The client secret. Load order: this option, then the environment variable "
        f"{SECRET_ENV}, then OIDC.client_secret_file. Empty: a public client (PKCE only)."))
    client_secret_file = Unicode("", config=True, help=(
        "A file holding the client secret (used when neither OIDC.client_secret nor "
        f"{SECRET_ENV} is set); refused when its group or others can read it."))
    scopes = List(Unicode(), ["openid", "profile", "email"], config=True, help=(
        "Scopes asked for; must include openid. Add the scope that releases the groups claim "
        "if the provider needs one (e.g. groups)."))
    username_claim = Unicode("preferred_username", config=True, help=(
        "The claim that names the cellgate user; pick one users cannot change at the provider. "
        "When it is missing or not a valid cellgate name, the local part of the email is used "
        "if the provider verified the email."))
    groups_claim = Unicode("groups", config=True, help=(
        "The claim listing the user's groups at the provider. Empty: group memberships are never "
        "changed by sign-in."))
    create_groups = Bool(False, config=True, help=(
        "Create the provider's groups that cellgate does not have yet. False (the default): "
        "only groups that already exist in cellgate are joined; the others are ignored."))
    admin_groups = List(Unicode(), [], config=True, help=(
        "Provider groups whose members are cellgate admins. Empty (the default): sign-in never "
        "changes who is an admin. Set: every sign-in makes the user an admin exactly when they "
        "are in one of these groups."))
    token_lifetime_hours = Float(12.0, config=True, help=(
        "Hours a token issued by `cellgate login` stays valid."))

    @default("client_secret")
    def _secret_default(self) -> str:
        return os.environ.get(SECRET_ENV, "")

    @validate("issuer")
    def _valid_issuer(self, proposal: Any) -> str:
        value: str = proposal["value"].strip()
        if not value:
            return ""
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and is_loopback(parts.hostname):
            return value  # a provider on this machine (tests, development)
        raise TraitError(f"OIDC.issuer must be an https:// URL (http:// only on loopback), not {value!r}")

    @validate("scopes")
    def _valid_scopes(self, proposal: Any) -> list[str]:
        if "openid" not in proposal["value"]:
            raise TraitError("OIDC.scopes must include 'openid'")
        scopes: list[str] = proposal["value"]
        return scopes

    @validate("token_lifetime_hours")
    def _valid_lifetime(self, proposal: Any) -> float:
        if not proposal["value"] > 0:
            raise TraitError(f"OIDC.token_lifetime_hours must be positive, not {proposal['value']}")
        hours: float = proposal["value"]
        return hours

    @property
    def enabled(self) -> bool:
        return bool(self.issuer)

    def check(self) -> None:
        """Refuse a half configuration at start, naming the option to set."""
        if self.enabled and not self.client_id:
            raise TraitError("OIDC.client_id is required when OIDC.issuer is set")

    def secret(self) -> str:
        """The client secret, following the load order in ``client_secret``'s help."""
        if self.client_secret:
            return self.client_secret
        if not self.client_secret_file:
            return ""
        return read_setting_file(self.client_secret_file, "OIDC.client_secret_file", TraitError)


class OIDCProvider:
    """The provider, as the gateway talks to it. Discovery and keys are cached for an hour."""

    def __init__(self, config: OIDC, redirect_uri: str) -> None:
        self.config = config
        self.issuer = config.issuer
        self.client_id = config.client_id
        self.redirect_uri = redirect_uri
        self._secret = config.secret()
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = 0.0

    def __repr__(self) -> str:
        return f"OIDCProvider(issuer={self.issuer!r}, client_id={self.client_id!r})"

    # ------------------------------------------------------------------ fetching
    async def _get_json(self, url: str, *, headers: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                resp = await http.get(url, headers={"Accept": "application/json", **(headers or {})})
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"the identity provider could not be reached at {url}: "
                                      f"{type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ProviderUnavailable(f"the identity provider answered {resp.status_code} for {url}")
        try:
            data = resp.json()
        except ValueError:
            raise ProviderUnavailable(f"the identity provider sent something that is not JSON from {url}") from None
        if not isinstance(data, dict):
            raise ProviderUnavailable(f"the identity provider sent something that is not a JSON object from {url}")
        return data

    async def metadata(self) -> dict[str, Any]:
        """The discovery document (cached); its ``issuer`` must be exactly the configured one."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < METADATA_TTL:
            return self._metadata
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        meta = await self._get_json(url)
        if meta.get("issuer") != self.issuer:
            raise ProviderUnavailable(f"the discovery document at {url} is for issuer {meta.get('issuer')!r}, "
                                      f"not {self.issuer!r} (OIDC.issuer must be exactly the provider's issuer)")
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not meta.get(k)]
        if missing:
            raise ProviderUnavailable(f"the discovery document at {url} lacks {', '.join(missing)}")
        self._metadata, self._metadata_at = meta, time.monotonic()
        return meta

    async def keys(self, *, refresh: bool = False) -> KeySet:
        if not refresh and self._keys is not None and time.monotonic() - self._keys_at < METADATA_TTL:
            return self._keys
        meta = await self.metadata()
        data = await self._get_json(meta["jwks_uri"])
        try:
            keys = KeySet.import_key_set(data)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise ProviderUnavailable(f"the provider's JWKS at {meta['jwks_uri']} cannot be read: {exc}") from None
        self._keys, self._keys_at = keys, time.monotonic()
        return keys

    # ------------------------------------------------------------------- the flow
    async def authorization_url(self, state: str, nonce: str, code_verifier: str) -> str:
        meta = await self.metadata()
        return str(prepare_grant_uri(
            meta["authorization_endpoint"], self.client_id, "code", self.redirect_uri, self.config.scopes, state,
            nonce=nonce, code_challenge_method="S256",
            # types-Authlib leaves create_s256_code_challenge unannotated; it takes and returns str
            code_challenge=create_s256_code_challenge(code_verifier)))  # type: ignore[no-untyped-call]

    async def check_iss_param(self, iss: str | None) -> None:
        """RFC 9207: the ``iss`` of the authorization response, when sent, must be our issuer
        (and must be sent when the provider says it sends it): a mix-up attack otherwise."""
        meta = await self.metadata()
        if iss is None:
            if meta.get("authorization_response_iss_parameter_supported"):
                raise SignInRefused("the answer from the identity provider has no iss parameter, which this provider always sends")
            return
        if iss != self.issuer:
            raise SignInRefused(f"the answer comes from issuer {iss!r}, not from the configured {self.issuer!r}")

    async def exchange(self, code: str, code_verifier: str, nonce: str) -> dict[str, Any]:
        """Redeem the authorization code; return the ID token's verified claims (with userinfo's
        for the claims the ID token does not carry)."""
        meta = await self.metadata()
        tokens = await self._token_request(meta, code, code_verifier)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("the identity provider sent no ID token (is 'openid' among OIDC.scopes?)")
        access_token = tokens.get("access_token") if isinstance(tokens.get("access_token"), str) else None
        claims = await self.verify_id_token(id_token, nonce, access_token)
        return await self._with_userinfo(meta, claims, access_token)

    async def _token_request(self, meta: dict[str, Any], code: str, code_verifier: str) -> dict[str, Any]:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
                "code_verifier": code_verifier}
        extra: dict[str, Any] = {}
        methods = meta.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if not self._secret:
            data["client_id"] = self.client_id
        elif "client_secret_basic" in methods:
            extra["auth"] = (quote(self.client_id, safe=""), quote(self._secret, safe=""))  # RFC 6749 §2.3.1
        else:
            data.update(client_id=self.client_id, client_secret=self._secret)
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as http:
                resp = await http.post(meta["token_endpoint"], data=data, headers={"Accept": "application/json"},
                                       **extra)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f"the identity provider's token endpoint could not be reached: {type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"the identity provider's token endpoint answered {resp.status_code} without JSON")
        if resp.status_code != 200 or "error" in body:
            error = str(body.get("error") or resp.status_code)
            detail = str(body.get("error_description") or "")[:200]
            if error in ("invalid_client", "unauthorized_client"):
                log.error("the identity provider refused the gateway's client credentials (%s); check OIDC.client_id "
                          "and the client secret", error)
            raise SignInRefused(f"the identity provider refused the code: {error}{': ' + detail if detail else ''}")
        return body

    async def verify_id_token(self, id_token: str, nonce: str, access_token: str | None = None) -> dict[str, Any]:
        meta = await self.metadata()
        algorithms = [a for a in meta.get("id_token_signing_alg_values_supported") or ["RS256"] if a in ALGORITHMS]
        if not algorithms:
            raise ProviderUnavailable("the provider signs ID tokens with none of the algorithms cellgate accepts "
                                      f"({', '.join(ALGORITHMS)})")
        try:
            try:
                token = jwt.decode(id_token, await self.keys(), algorithms=algorithms)
            except InvalidKeyIdError:  # the provider rotated its keys
                token = jwt.decode(id_token, await self.keys(refresh=True), algorithms=algorithms)
        except JoseError as exc:
            raise SignInRefused(f"the ID token does not verify with the provider's keys ({exc.error})") from None
        claims = CodeIDToken(
            token.claims, token.header,
            options={"iss": {"essential": True, "value": self.issuer},
                     "aud": {"essential": True, "value": self.client_id},
                     "sub": {"essential": True}},
            params={"nonce": nonce, "client_id": self.client_id, "access_token": access_token})
        try:
            claims.validate(leeway=LEEWAY)
        except ExpiredTokenError:
            raise SignInRefused("the ID token has expired (is this machine's clock right?)") from None
        except ClaimError as exc:
            name = getattr(exc, "claim", None) or str(exc)
            raise SignInRefused(f"the ID token's {name!r} claim is missing or wrong"
                                + {"iss": f" (it must be {self.issuer!r})", "aud": f" (it must name {self.client_id!r})",
                                   "nonce": " (it does not match this sign-in)"}.get(str(name), "")) from None
        return dict(claims)

    async def _with_userinfo(self, meta: dict[str, Any], claims: dict[str, Any], access_token: str | None) -> dict[str, Any]:
        """Providers that keep profile claims out of the ID token serve them at userinfo."""
        wanted = {"email", "email_verified", self.config.username_claim}
        if self.config.groups_claim:
            wanted.add(self.config.groups_claim)
        if wanted <= set(claims) or not access_token or not meta.get("userinfo_endpoint"):
            return claims
        try:
            info = await self._get_json(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"})
        except ProviderUnavailable as exc:
            log.warning("userinfo: %s; signing in with the ID token's claims only", exc.message)
            return claims
        if info.get("sub") != claims.get("sub"):
            log.warning("userinfo answered for another subject; ignored")
            return claims
        return {**{k: v for k, v in info.items() if k in wanted}, **claims}
