"""Which gateway the CLI talks to, and with which token.

Lookup order, for the URL and the token separately (first found wins):

1. the ``--gateway`` / ``--token`` flags,
2. the ``CELLGATE_URL`` / ``CELLGATE_TOKEN`` environment variables,
3. the file sign-in writes: ``$CELLGATE_CONFIG_DIR/credentials.json`` (default
   ``~/.config/cellgate/credentials.json``), ``{"gateway_url": ..., "token": ...}``.

The file is refused when its group or others can read it (as JupyterHub refuses a readable
cookie secret). Its token is only ever sent to the gateway it was saved for: with another URL
from a flag or the environment, a token must come from a flag or the environment too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cellgate.cli import exitcodes
from cellgate.secret_files import exposed_mode

URL_ENV = "CELLGATE_URL"
TOKEN_ENV = "CELLGATE_TOKEN"
CONFIG_DIR_ENV = "CELLGATE_CONFIG_DIR"
FILENAME = "credentials.json"


class CredentialsError(Exception):
    """No usable gateway URL or token; the message says how to provide one."""

    exit_code = exitcodes.UNREACHABLE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str

    def __repr__(self) -> str:  # never show the token, even in a debugger or a log
        return f"Credentials(url={self.url!r}, token=<hidden>)"


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CONFIG_DIR_ENV):
        return Path(env[CONFIG_DIR_ENV]).expanduser()
    return Path("~/.config/cellgate").expanduser()


def credentials_path(env: Mapping[str, str] | None = None) -> Path:
    return config_dir(env) / FILENAME


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise CredentialsError(
            f"the gateway URL {url!r} must start with http:// or https:// "
            "(e.g. --gateway http://127.0.0.1:8765)"
        )
    return url


def load_file(path: Path) -> dict[str, str]:
    """The saved credentials, or ``{}`` when there is no file. Refuses a file others can read."""
    try:
        mode = exposed_mode(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror}") from None
    if mode is not None:
        raise CredentialsError(
            f"{path} holds a token and is readable by others (mode {mode:04o}); "
            f"refusing to use it. Run: chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CredentialsError(
            f"cannot read {path} ({exc}); run `cellgate login` to write it again"
        ) from None
    if not isinstance(data, dict):
        raise CredentialsError(f"{path} is not a JSON object; run `cellgate login` to write it again")
    return {k: str(v) for k, v in data.items() if k in ("gateway_url", "token") and v}


def resolve(flag_url: str | None = None, flag_token: str | None = None,
            env: Mapping[str, str] | None = None) -> Credentials:
    """The gateway URL and token to use, following the lookup order in the module docstring."""
    env = os.environ if env is None else env
    url = flag_url or env.get(URL_ENV) or None
    token = flag_token or env.get(TOKEN_ENV) or None
    saved: dict[str, str] = {}
    if url is None or token is None:
        saved = load_file(credentials_path(env))
    saved_url = normalize_url(saved["gateway_url"]) if saved.get("gateway_url") else None

    if url is None:
        url = saved_url
    if url is None:
        raise CredentialsError(
            "no gateway URL: pass --gateway URL, set CELLGATE_URL, or sign in with `cellgate login`"
        )
    url = normalize_url(url)

    if token is None and saved.get("token"):
        if saved_url == url:
            token = saved["token"]
        else:
            raise CredentialsError(
                f"no token for {url}: the saved token ({credentials_path(env)}) is for "
                f"{saved_url or 'no gateway'}; pass --token, set CELLGATE_TOKEN, "
                f"or run `cellgate login --gateway {url}`"
            )
    if token is None:
        raise CredentialsError(
            f"no token for {url}: pass --token, set CELLGATE_TOKEN, or sign in with `cellgate login`"
        )
    return Credentials(url=url, token=token)


def save_credentials(url: str, token: str, env: Mapping[str, str] | None = None) -> Path:
    """Write the credentials file (mode 0600, its folder 0700) atomically; returns its path."""
    url = normalize_url(url)
    path = credentials_path(env)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{FILENAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"gateway_url": url, "token": token}, f)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
