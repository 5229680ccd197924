"""Sign-ins in progress (``LoginRequest`` rows) and the CLI's one-time codes.

A row's life, keyed by the OIDC ``state`` the gateway made:

1. ``GET /login`` creates it with a nonce and a PKCE verifier; it expires after 10 minutes.
   For the CLI it also keeps where to send the browser back (a loopback URL), the CLI's own
   PKCE challenge and the CLI's ``state``.
2. ``GET /oauth/callback`` spends it, atomically (``UPDATE … WHERE used_at IS NULL``): a second
   callback with the same state (a replay) is refused, and so is an unknown or expired one.
3. A browser sign-in is then done. A CLI sign-in gets a one-time code, sent to the loopback
   URL; the row keeps the code's hash and now expires 2 minutes later.
4. ``POST /api/v1/login/token`` redeems the code with the CLI's PKCE verifier, once: the first
   attempt clears the code's hash, whether the verifier matches or not.

Spent rows stay until they expire (so a replay is told it is one); expired rows are deleted
whenever a new sign-in starts. Codes are stored as their SHA-256.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from . import audit, auth
from .models import LoginRequest, User, aware, utcnow
from .oidc import SignInRefused

LOGIN_TTL = dt.timedelta(minutes=10)
CODE_TTL = dt.timedelta(minutes=2)

#: RFC 7636: a verifier is 43-128 unreserved characters; an S256 challenge is 43 base64url ones
VERIFIER_RE = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
CHALLENGE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
CLIENT_STATE_RE = re.compile(r"^[A-Za-z0-9._~-]{8,128}$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (base64url, no padding)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def check_return_to(url: str) -> str:
    """A CLI's ``return_to``: ``http://`` on a loopback address with a port, nothing else (no
    open redirect). Returns it without query or fragment."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SignInRefused("return_to is not a valid URL") from None
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or parts.username is not None \
            or parts.password is not None or port is None or parts.query or parts.fragment:
        raise SignInRefused("return_to must be http://127.0.0.1:PORT/…, http://localhost:PORT/… or "
                            "http://[::1]:PORT/… (the CLI's loopback listener); nothing else is accepted")
    return urlunsplit(("http", parts.netloc, parts.path or "/", "", ""))


def with_params(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


def _purge(session: Session) -> None:
    session.execute(delete(LoginRequest).where(LoginRequest.expires_at < utcnow()))


def start(session: Session, kind: str, *, return_to: str | None = None, client_challenge: str | None = None,
          client_state: str | None = None) -> LoginRequest:
    """A new sign-in (``kind`` is ``browser`` or ``cli``) with a fresh state, nonce and verifier."""
    _purge(session)
    now = utcnow()
    row = LoginRequest(state=secrets.token_urlsafe(32), kind=kind, nonce=secrets.token_urlsafe(32),
                       code_verifier=secrets.token_urlsafe(64), return_to=return_to,
                       client_challenge=client_challenge, client_state=client_state,
                       created_at=now, expires_at=now + LOGIN_TTL)
    session.add(row)
    session.flush()
    return row


def spend(session: Session, state: str) -> LoginRequest:
    """The callback's compare-and-set: a live request seen for the first time, now marked used."""
    now = utcnow()
    done = session.execute(update(LoginRequest)
                           .where(LoginRequest.state == state, LoginRequest.used_at.is_(None),
                                  LoginRequest.expires_at > now)
                           .values(used_at=now))
    row = session.get(LoginRequest, state, populate_existing=True)
    if done.rowcount == 1 and row is not None:  # type: ignore[attr-defined]
        return row
    if row is None:
        raise SignInRefused("unknown sign-in (the state does not match any sign-in in progress); start again at /login")
    if row.used_at is not None:
        raise SignInRefused("this sign-in was already completed (the answer was replayed); start again at /login")
    raise SignInRefused("this sign-in took longer than 10 minutes and expired; start again at /login")


def issue_code(session: Session, state: str, user_id: int) -> str:
    """The CLI's one-time code for a spent request: valid 2 minutes, once."""
    code = secrets.token_urlsafe(32)
    session.execute(update(LoginRequest).where(LoginRequest.state == state)
                    .values(user_id=user_id, code_hash=_hash(code), expires_at=utcnow() + CODE_TTL))
    return code


@dataclass(frozen=True)
class Issued:
    token: str | None = None
    token_id: int | None = None
    user: str | None = None
    expires_at: dt.datetime | None = None
    refused: str | None = None


def redeem(session: Session, code: str, verifier: str, *, note: str, lifetime_hours: float) -> Issued:
    """Exchange a one-time code and the CLI's PKCE verifier for a gateway token.

    Returns the refusal instead of raising so that the code is spent even then.
    """
    row = session.execute(select(LoginRequest).where(LoginRequest.code_hash == _hash(code))).scalar_one_or_none()
    if row is None:
        return Issued(refused="unknown or already used sign-in code; run `cellgate login` again")
    spent = session.execute(update(LoginRequest).where(LoginRequest.state == row.state,
                                                       LoginRequest.code_hash == row.code_hash).values(code_hash=None))
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        return Issued(refused="unknown or already used sign-in code; run `cellgate login` again")
    expires = aware(row.expires_at)
    if expires <= utcnow():
        return Issued(refused="the sign-in code expired (codes are valid for 2 minutes); run `cellgate login` again")
    if row.kind != "cli" or not row.client_challenge or row.user_id is None:
        return Issued(refused="this sign-in code is not for the command line")
    if not hmac.compare_digest(s256(verifier), row.client_challenge):
        return Issued(refused="the code verifier does not match the challenge this sign-in started with")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return Issued(refused="this user is deactivated")
    raw, tok = auth.new_token(session, "user", user=user, name=note, expires_in_days=lifetime_hours / 24,
                              actor=user.name)
    audit.append(session, user.name, "user.cli_signed_in", detail={"user": user.name, "token_id": tok.id})
    return Issued(token=raw, token_id=tok.id, user=user.name, expires_at=tok.expires_at)
