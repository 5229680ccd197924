"""A small synchronous client for the gateway's REST API (docs/api.md), for the CLI.

The CLI is the sync edge of an async system: it uses httpx's sync client and blocks.

Errors, each with the exit code the CLI returns and a message a person can act on::

    GatewayError (exit_code, message)
    ├── GatewayUnreachable   connection refused, DNS failure, timeout      → 7 UNREACHABLE
    ├── AuthError            HTTP 401: the token was refused               → 7 UNREACHABLE
    └── ApiError (status)    any other HTTP 4xx/5xx, the gateway's message → 8 ERROR

``cellgate.cli.credentials.CredentialsError`` (no URL or token configured, unsafe credentials
file) is the fourth kind; :func:`command` turns all of them into a one-line message on stderr
and an exit code, never a traceback. No message ever contains the token.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

import httpx

from cellgate.cli import exitcodes
from cellgate.cli.credentials import CredentialsError, resolve


class GatewayError(Exception):
    """Base of the errors a gateway call raises; ``exit_code`` is what the CLI exits with."""

    exit_code = exitcodes.ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class GatewayUnreachable(GatewayError):
    """The gateway did not answer: connection refused, name not resolved, timeout."""

    exit_code = exitcodes.UNREACHABLE


class AuthError(GatewayError):
    """The gateway answered 401: the token is unknown, expired or revoked."""

    exit_code = exitcodes.UNREACHABLE


class ApiError(GatewayError):
    """The gateway refused the request (any 4xx/5xx but 401); ``message`` is the gateway's."""

    exit_code = exitcodes.ERROR

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


#: Seconds to wait for the gateway to accept a connection / answer a plain request.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0


class GatewayClient:
    """One method per REST endpoint; each returns the decoded JSON body.

    Raises :class:`GatewayUnreachable`, :class:`AuthError` or :class:`ApiError`.
    """

    def __init__(self, url: str, token: str, *, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"token {token}", "Accept": "application/json",
                     "User-Agent": "cellgate-cli"},
            timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------

    def _unreachable(self, exc: Exception) -> GatewayUnreachable:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "could not be reached"
        return GatewayUnreachable(
            f"the gateway at {self.url} {kind} ({type(exc).__name__}). "
            "Start the gateway (`cellgate gateway`) or pass the right URL with --gateway "
            "(or CELLGATE_URL)."
        )

    def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        if not response.is_closed:
            response.read()
        message = _error_message(response)
        if response.status_code == 401:
            raise AuthError(
                f"the gateway at {self.url} refused the token ({message}). "
                "Run `cellgate login` or set CELLGATE_TOKEN to a valid token."
            )
        raise ApiError(response.status_code, message)

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: Any = None, timeout: float | None = None, headers: dict[str, str] | None = None) -> Any:
        params = {k: v for k, v in (params or {}).items() if v is not None}
        extra: dict[str, Any] = {"headers": headers} if headers else {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=CONNECT_TIMEOUT)
        try:
            response = self._http.request(method, path, params=params, json=json, **extra)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        except httpx.InvalidURL as exc:
            raise GatewayUnreachable(f"invalid gateway URL {self.url!r}: {exc}") from None
        self._check(response)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code,
                           f"the gateway at {self.url} sent a response that is not JSON") from None

    def stream_to(self, path: str, out: IO[bytes], *, params: dict[str, Any] | None = None) -> int:
        """GET ``path`` and copy the body to ``out`` as it arrives; returns the bytes written."""
        params = {k: v for k, v in (params or {}).items() if v is not None}
        written = 0
        try:
            with self._http.stream("GET", path, params=params,
                                   headers={"Accept": "*/*"}) as response:
                self._check(response)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    out.flush()
                    written += len(chunk)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        return written

    # -- endpoints ------------------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/me")

    def targets(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/targets")

    def target(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/targets/{_seg(name)}")

    def put_target(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"/api/v1/targets/{_seg(name)}", json=body)

    def submit(self, body: dict[str, Any], key: str | None = None, path: str = "/api/v1/tasks") -> dict[str, Any]:
        """POST a script (``{"target", "code", "why"}``), a notebook, or (``path`` ``/api/v1/template-runs``) a
        template run; ``key``: its ``Idempotency-Key`` (a retry with the same key and body gets the task the
        first attempt created, never a second)."""
        return self.request("POST", path, json=body, headers={"Idempotency-Key": key} if key else None)

    def tasks(self, *, status: str | None = None, target: str | None = None,
              user: str | None = None, limit: int | None = None) -> dict[str, Any]:
        return self.request("GET", "/api/v1/tasks",
                            params={"status": status, "target": target, "user": user, "limit": limit})

    def task(self, task_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/v1/tasks/{task_id}")

    def output(self, task_id: int, after: int | None = None, wait: float | None = None) -> dict[str, Any]:
        """One poll of the task's outputs; with ``wait`` the gateway holds the request."""
        timeout = READ_TIMEOUT + (wait or 0)
        return self.request("GET", f"/api/v1/tasks/{task_id}/output",
                            params={"after": after, "wait": wait}, timeout=timeout)

    def all_outputs(self, task_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The task and every output it has so far (no waiting)."""
        after: int | None = None
        outputs: list[dict[str, Any]] = []
        while True:
            page = self.output(task_id, after=after)
            new = page.get("outputs") or []
            outputs.extend(new)
            if page.get("done") or not new:
                return page["task"], outputs
            after = max(int(o["seq"]) for o in new)

    def cancel(self, task_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/tasks/{task_id}/cancel")

    def reviews(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/reviews")

    def review(self, task_id: int, decision: str, comment: str | None) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/tasks/{task_id}/review",
                            json={"decision": decision, "comment": comment or ""})

    def users(self) -> Any:
        return self.request("GET", "/api/v1/users")

    def add_user(self, name: str, is_admin: bool) -> Any:
        return self.request("POST", "/api/v1/users", json={"name": name, "is_admin": is_admin})

    def deactivate_user(self, name: str) -> Any:
        return self.request("DELETE", f"/api/v1/users/{_seg(name)}")

    def groups(self) -> Any:
        return self.request("GET", "/api/v1/groups")

    def add_group(self, name: str) -> Any:
        return self.request("POST", "/api/v1/groups", json={"name": name})

    def add_member(self, group: str, user: str) -> Any:
        return self.request("PUT", f"/api/v1/groups/{_seg(group)}/members/{_seg(user)}")

    def remove_member(self, group: str, user: str) -> Any:
        return self.request("DELETE", f"/api/v1/groups/{_seg(group)}/members/{_seg(user)}")

    def create_token(self, user: str, note: str | None, expires_in_days: int | None) -> dict[str, Any]:
        return self.request("POST", f"/api/v1/users/{_seg(user)}/tokens",
                            json={"note": note or "", "expires_in_days": expires_in_days})

    def list_tokens(self, *, user: str | None = None, kind: str | None = None) -> dict[str, Any]:
        return self.request("GET", "/api/v1/tokens", params={"user": user, "kind": kind})

    def revoke_token(self, token_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def create_agent_token(self, name: str, targets: list[str]) -> dict[str, Any]:
        return self.request("POST", "/api/v1/agent-tokens", json={"name": name, "targets": targets})

    def agent_tokens(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/agent-tokens")

    def set_agent_token_targets(self, token_id: int, targets: list[str]) -> dict[str, Any]:
        return self.request("PUT", f"/api/v1/agent-tokens/{int(token_id)}", json={"targets": targets})

    def agents(self) -> Any:
        return self.request("GET", "/api/v1/agents")

    def export_audit(self, out: IO[bytes], fmt: str, since: str | None, until: str | None) -> int:
        return self.stream_to("/api/v1/audit", out, params={"format": fmt, "since": since, "until": until})

    def verify_audit(self) -> dict[str, Any]:
        return self.request("GET", "/api/v1/audit/verify")


def _seg(value: str) -> str:
    """Quote one path segment (names could hold '/' or spaces)."""
    from urllib.parse import quote

    return quote(str(value), safe="")


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    text = response.text.strip()
    if text and len(text) < 300 and "<" not in text:
        return f"HTTP {response.status_code}: {text}"
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def connect(args: Any) -> GatewayClient:
    """A client for the gateway and token that ``args`` (--gateway/--token), env or file name."""
    creds = resolve(getattr(args, "gateway", None), getattr(args, "token", None))
    return GatewayClient(creds.url, creds.token)


def error(message: str) -> None:
    """Print a one-line error the way argparse does."""
    print(f"cellgate: error: {message}", file=sys.stderr)


def command(func: Callable[[Any], int]) -> Callable[[Any], int]:
    """Wrap a sub-command: known errors become a message on stderr and their exit code."""

    @functools.wraps(func)
    def wrapper(args: Any) -> int:
        try:
            return func(args)
        except (GatewayError, CredentialsError) as exc:
            error(exc.message)
            return exc.exit_code
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 130
        except BrokenPipeError:
            # `cellgate tasks | head`: stop quietly; keep Python from complaining at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return exitcodes.FAILED

    return wrapper


def iter_json_list(body: Any, key: str) -> Iterator[dict[str, Any]]:
    """Items of a listing that is either ``{key: [...]}`` or a bare list."""
    items = body.get(key, []) if isinstance(body, dict) else body
    yield from items or []


def connection_options() -> Any:
    """The parent parser every gateway command takes: ``--gateway`` and ``--token``."""
    import argparse

    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("connection")
    group.add_argument("--gateway", metavar="URL",
                       help="gateway URL (default: $CELLGATE_URL, then the saved sign-in)")
    group.add_argument("--token", metavar="TOKEN",
                       help="API token (default: $CELLGATE_TOKEN, then the saved sign-in; "
                            "prefer those: a flag is visible to other local users)")
    return parent


def json_option() -> Any:
    """The parent parser for commands that list or show: ``--json``."""
    import argparse

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true",
                        help="print the gateway's JSON on stdout instead of text")
    return parent
