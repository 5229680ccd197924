"""Sign-in: ``/login`` → the identity provider → ``/oauth/callback``; ``/api/v1/login/token``.

Browser: ``GET /login`` sends the browser to the provider (authorization code + PKCE); the
callback checks the answer (state, iss, then the ID token: signature, iss, aud, nonce),
creates or updates the user (``provision.py``) and shows who signed in.

CLI (``cellgate login``): ``GET /login?cli=1&return_to=http://127.0.0.1:PORT/callback&challenge=C&state=S``;
after the provider, the callback sends the browser to ``return_to`` with a one-time ``code`` and
the CLI's ``state`` (or ``error``/``error_description`` when the sign-in failed), and the CLI
exchanges the code with its PKCE verifier at ``POST /api/v1/login/token`` for a gateway token.
See ``signin.py`` for the rules (10 minutes per sign-in, codes valid 2 minutes and once).
"""

from __future__ import annotations

import html
from typing import Any

from tornado import web

from .. import audit, provision, signin
from ..errors import CellgateError, NotFound
from ..models import LoginRequest
from ..oidc import OIDCProvider, SignInRefused
from ..views import iso
from .base import APIHandler
from .inputs import STRING, Operation, Query, obj

NOT_CONFIGURED = "OIDC sign-in is not configured on this gateway (an admin sets OIDC.issuer and OIDC.client_id)"


class SignInHandler(APIHandler):
    @property
    def provider(self) -> OIDCProvider:
        provider: OIDCProvider | None = self.settings.get("oidc")
        if provider is None:
            raise NotFound(NOT_CONFIGURED)
        return provider

    def _request_summary(self) -> str:
        """The access log line without the query: it holds codes and states (never logged)."""
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def arg(self, name: str) -> str | None:
        value: str | None = self.argument(name)
        return value if value else None


class LoginHandler(SignInHandler):
    access = {"GET": "anonymous"}
    api = {"GET": Operation(query=(Query("cli", help="1: sign in for `cellgate login`"), Query("return_to"),
                                   Query("challenge", help="S256 PKCE challenge"), Query("state")))}

    async def get(self) -> None:
        provider = self.provider
        cli = self.arg("cli") in ("1", "true", "yes")
        return_to = challenge = client_state = None
        if cli:
            return_to = signin.check_return_to(self.arg("return_to") or "")
            challenge = self.arg("challenge")
            if challenge is None or not signin.CHALLENGE_RE.match(challenge):
                raise SignInRefused("challenge must be the S256 PKCE challenge of the CLI's verifier (43 base64url characters)")
            client_state = self.arg("state")
            if client_state is None or not signin.CLIENT_STATE_RE.match(client_state):
                raise SignInRefused("state must be 8-128 URL-safe characters chosen by the CLI")
        elif self.arg("return_to") or self.arg("challenge"):
            raise SignInRefused("return_to and challenge are for the command line's sign-in (cli=1) only")
        await provider.metadata()  # the provider is reachable before anything is stored
        row = await self.store.run(signin.start, "cli" if cli else "browser", return_to=return_to,
                                           client_challenge=challenge, client_state=client_state)
        self.redirect(await provider.authorization_url(row.state, row.nonce, row.code_verifier))


class CallbackHandler(SignInHandler):
    access = {"GET": "anonymous"}
    api = {"GET": Operation(query=tuple(Query(n) for n in ("state", "code", "error", "error_description", "iss")))}

    async def get(self) -> None:
        provider = self.provider
        state = self.arg("state")
        if state is None:
            raise SignInRefused("the answer from the identity provider has no state; start again at /login")
        row = await self.store.run(signin.spend, state)
        try:
            signed = await self._sign_in(provider, row)
        except CellgateError as exc:
            reason = exc.message
            await self.store.run(lambda s: audit.append(
                s, "oidc", "user.sign_in_refused", detail={"via": row.kind, "reason": reason}))
            if row.kind != "cli" or not row.return_to:
                raise
            self.redirect(signin.with_params(row.return_to, error="access_denied",
                                             error_description=reason, state=row.client_state or ""))
            return
        if row.kind == "cli" and row.return_to:
            code = await self.store.run(signin.issue_code, row.state, signed.user_id)
            self.redirect(signin.with_params(row.return_to, code=code, state=row.client_state or ""))
            return
        self._page(signed)

    async def _sign_in(self, provider: OIDCProvider, row: LoginRequest) -> provision.SignedIn:
        error = self.arg("error")
        if error is not None:
            detail = (self.arg("error_description") or "")[:200]
            raise SignInRefused(f"the identity provider answered {error}{': ' + detail if detail else ''}")
        await provider.check_iss_param(self.arg("iss"))
        code = self.arg("code")
        if code is None:
            raise SignInRefused("the answer from the identity provider has no code")
        claims = await provider.exchange(code, row.code_verifier, row.nonce)
        return await self.store.run(provision.sign_in, provider.config, provider.issuer, claims, via=row.kind)

    def _page(self, signed: provision.SignedIn) -> None:
        name = html.escape(signed.name)
        groups = html.escape(", ".join(signed.groups)) or "none"
        url = html.escape(self.public_url)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(f"""<!doctype html><meta charset="utf-8"><title>Signed in to cellgate</title>
<h1>Signed in to cellgate as {name}</h1>
<p>Groups: {groups}{' (admin)' if signed.is_admin else ''}</p>
<p>From a terminal: <code>cellgate login --gateway {url}</code> signs the command line and
your Jupyter server in.</p>""")


class LoginTokenHandler(SignInHandler):
    access = {"POST": "anonymous"}
    api = {"POST": Operation(body=obj(("code", "code_verifier"), code=STRING, code_verifier=STRING, note=STRING))}

    async def post(self) -> None:
        provider = self.provider
        data = self.body()
        code = self.field(data, "code")
        verifier = self.field(data, "code_verifier")
        note = self.field(data, "note", required=False, default="cellgate login")[:200]
        if not signin.VERIFIER_RE.match(verifier):
            raise SignInRefused("code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~ (RFC 7636)")
        issued = await self.store.run(signin.redeem, code, verifier, note=note,
                                              lifetime_hours=provider.config.token_lifetime_hours)
        if issued.refused:
            raise SignInRefused(issued.refused)
        self.send(_issued_json(issued))


def _issued_json(issued: signin.Issued) -> dict[str, Any]:
    return {"token": issued.token, "id": issued.token_id, "user": issued.user, "expires_at": iso(issued.expires_at)}


default_handlers: list[tuple[str, type[web.RequestHandler]]] = [
    (r"/login/?", LoginHandler),
    (r"/oauth/callback/?", CallbackHandler),
    (r"/api/v1/login/token/?", LoginTokenHandler),
]
