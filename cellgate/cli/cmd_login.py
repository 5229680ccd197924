"""`cellgate login`: sign in through the browser (the gateway's OIDC provider), save a token.

1. The CLI makes a PKCE verifier and a state, and listens on a loopback port.
2. The browser opens ``GATEWAY/login?cli=1&return_to=http://127.0.0.1:PORT/callback&challenge=…&state=…``;
   the gateway sends it to the identity provider and, after the sign-in, back to the loopback
   URL with a one-time code (valid 2 minutes, once) and the CLI's state.
3. The CLI exchanges the code with its verifier at ``POST /api/v1/login/token`` for a gateway
   token and saves it with the gateway's URL in the credentials file (mode 0600), where every
   other command and the Jupyter extension find it.

The token and the code are never printed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import os
import secrets
import socket
import sys
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from cellgate.cli import exitcodes, render
from cellgate.cli.client import CONNECT_TIMEOUT, ApiError, GatewayUnreachable, _error_message, command, error
from cellgate.cli.credentials import URL_ENV, CredentialsError, credentials_path, load_file, normalize_url, save_credentials

CALLBACK_PATH = "/callback"


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier``."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


class _Callback(BaseHTTPRequestHandler):
    server: _Listener

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self._answer(404, "Not found", "This is the cellgate CLI waiting for a sign-in.")
            return
        params = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if not secrets.compare_digest(params.get("state", ""), self.server.state):
            self._answer(400, "Not this sign-in", "This answer is not for the sign-in the terminal is waiting for.")
            return
        if params.get("error"):
            self._answer(200, "Sign-in failed", params.get("error_description") or params["error"])
        else:
            self._answer(200, "Signed in", "Return to your terminal; you can close this window.")
        self.server.result = params
        self.server.done.set()

    def _answer(self, status: int, title: str, text: str) -> None:
        body = (f"<!doctype html><meta charset='utf-8'><title>cellgate: {html.escape(title)}</title>"
                f"<h1>cellgate: {html.escape(title)}</h1><p>{html.escape(text)}</p>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the URL holds the code: never log it
        return


class _Listener(HTTPServer):
    """The loopback listener the browser is sent back to; one answer with the right state."""

    def __init__(self, port: int, state: str) -> None:
        super().__init__(("127.0.0.1", port), _Callback)
        self.state = state
        self.result: dict[str, str] | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def __enter__(self) -> _Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)


def _gateway_url(args: argparse.Namespace) -> str:
    url = args.gateway or os.environ.get(URL_ENV) or load_file(credentials_path()).get("gateway_url")
    if not url:
        raise CredentialsError("which gateway? pass --gateway URL (or set CELLGATE_URL)")
    return normalize_url(url)


def _probe(url: str, login_url: str) -> None:
    """Ask the gateway first, so that a gateway without sign-in (or unreachable) fails here, not
    in the browser while the CLI waits. (The sign-in it starts is never finished; it expires.)"""
    try:
        resp = httpx.get(login_url, follow_redirects=False, headers={"Accept": "application/json"},
                         timeout=httpx.Timeout(60, connect=CONNECT_TIMEOUT))
    except httpx.TransportError as exc:
        raise GatewayUnreachable(f"the gateway at {url} could not be reached ({type(exc).__name__}); "
                                 "check the URL (--gateway)") from None
    if not resp.is_redirect:
        raise ApiError(resp.status_code, f"the gateway cannot sign you in: {_error_message(resp)}")


def exchange(url: str, code: str, verifier: str, note: str) -> dict[str, Any]:
    """``POST /api/v1/login/token``: the one-time code and the PKCE verifier for a gateway token."""
    try:
        resp = httpx.post(f"{url}/api/v1/login/token", json={"code": code, "code_verifier": verifier, "note": note},
                          headers={"Accept": "application/json", "User-Agent": "cellgate-cli"},
                          timeout=httpx.Timeout(60, connect=CONNECT_TIMEOUT))
    except httpx.TransportError as exc:
        raise GatewayUnreachable(f"the gateway at {url} could not be reached ({type(exc).__name__})") from None
    if resp.status_code >= 400:
        raise ApiError(resp.status_code, f"the gateway refused the sign-in: {_error_message(resp)}")
    body = resp.json()
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise ApiError(resp.status_code, "the gateway's answer to the sign-in has no token")
    return body


@command
def cmd_login(args: argparse.Namespace) -> int:
    url = _gateway_url(args)
    verifier = secrets.token_urlsafe(64)
    state = secrets.token_urlsafe(24)
    try:
        listener = _Listener(args.port, state)
    except OSError as exc:
        error(f"cannot listen on 127.0.0.1:{args.port} for the sign-in: {exc.strerror}")
        return exitcodes.ERROR
    with listener:
        return_to = f"http://127.0.0.1:{listener.port}{CALLBACK_PATH}"
        login_url = f"{url}/login?" + urlencode({"cli": "1", "return_to": return_to, "challenge": s256(verifier),
                                                  "state": state})
        _probe(url, login_url)
        print(f"Sign in to cellgate ({url}) in your browser{'' if args.no_browser else ' (opening it now)'}:\n\n"
              f"    {login_url}\n\nWaiting for the sign-in (up to {args.timeout:.0f} s)…", file=sys.stderr, flush=True)
        if not args.no_browser:
            try:
                webbrowser.open(login_url)
            except webbrowser.Error:
                pass  # the URL is printed above
        if not listener.done.wait(args.timeout):
            error(f"no sign-in within {args.timeout:.0f} s; run `cellgate login` again")
            return exitcodes.ERROR
        result = listener.result or {}
    if result.get("error"):
        error(f"sign-in refused: {result.get('error_description') or result['error']}")
        return exitcodes.ERROR
    if not result.get("code"):
        error("the gateway sent the browser back without a sign-in code")
        return exitcodes.ERROR
    body = exchange(url, result["code"], verifier, note=f"cellgate login on {socket.gethostname()}"[:200])
    path = save_credentials(url, body["token"])
    expires = render.format_time(body.get("expires_at")) or "never"
    print(f"Signed in to {url} as {body.get('user')} (token {body.get('id')}, expires {expires}); saved to {path}",
          file=sys.stderr)
    return exitcodes.OK


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("login", help="sign in through your browser and save a token for the gateway",
                              description="Sign in with the gateway's identity provider (OIDC) in a browser; the "
                                          "token the gateway issues is saved in the credentials file (mode 0600).")
    p.add_argument("--gateway", metavar="URL", help="gateway URL (default: $CELLGATE_URL, then the saved sign-in)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL to open (e.g. over SSH)")
    p.add_argument("--port", type=int, default=0, metavar="N",
                   help="loopback port for the browser to come back to (default: any free port)")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the browser sign-in (default 300)")
    p.set_defaults(func=cmd_login)
