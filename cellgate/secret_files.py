"""Files that hold a secret: refused when anyone but their owner may read them.

One check, used wherever cellgate reads a secret from a file (the agent's token file and its
targets' ``url_file``, the agent's config files when they hold a secret inline, the CLI's saved
credentials): any of ``mode & 0o077`` is refused, as JupyterHub does for its secrets. On a system
without POSIX modes (Windows) there is nothing to check.
"""

from __future__ import annotations

import os
import stat

#: permission bits of group and others; a secret file may have none of them
GROUP_OR_OTHERS = 0o077


class SecretFileError(ValueError):
    """The file cannot hold a secret as it is; the message names the file and the fix."""


def exposed_mode(path: str | os.PathLike[str]) -> int | None:
    """The file's permission bits when group or others have any of them, else None.

    Raises ``OSError`` when the file cannot be stat'ed."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if os.name == "posix" and mode & GROUP_OR_OTHERS:
        return mode
    return None


def check_private(path: str | os.PathLike[str]) -> None:
    """Raise ``SecretFileError`` when group or others may access ``path``; ``OSError`` when it
    cannot be stat'ed."""
    mode = exposed_mode(path)
    if mode is not None:
        raise SecretFileError(f"{path} is readable by group or others (mode {mode:o}): run `chmod 600 {path}`")


def read_private_file(path: str | os.PathLike[str]) -> str:
    """The stripped text of a secret file. ``SecretFileError`` when it cannot be read, group or
    others may read it, or it is empty."""
    try:
        check_private(path)
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
    except OSError as exc:
        raise SecretFileError(f"cannot read {path}: {exc.strerror}") from None
    if not text:
        raise SecretFileError(f"{path} is empty")
    return text


def read_setting_file(path: str | os.PathLike[str], setting: str,
                      error: type[Exception] = SecretFileError) -> str:
    """``read_private_file`` for the file a setting names: a refusal is raised as ``error`` (a
    traitlets ``TraitError`` for the gateway's settings), its message opening with the setting."""
    try:
        return read_private_file(path)
    except SecretFileError as exc:
        raise error(f"{setting}: {exc}") from None
