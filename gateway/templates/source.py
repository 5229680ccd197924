"""Where templates come from: one branch of a git repository, read at a pinned commit.

``GitSource`` keeps a bare copy of the repository in its own folder and fetches the branch on
``refresh`` (an interval, ``cellgate templates refresh`` or a push webhook call it); everything
else reads the copy at a given commit (``git ls-tree``, ``git cat-file``), never a working tree,
so a run is rendered from exactly the commit its task names while the branch moves on. The
repository is a local path or a URL (``https://``, ``ssh://``, ``git@host:path``); git runs with
no terminal prompt, no system or user config, and the ``ext::`` transport off (it runs commands).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .catalog import Template, kind_of, parse
from .declare import TemplateError

COMMIT = re.compile(r"[0-9a-f]{40}")
#: a branch name as git allows it, conservatively (no "..", no leading "-")
BRANCH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}")
#: the most template files read from one commit
MAX_FILES = 2000


def shown(repository: str) -> str:
    """The repository as logs, errors and admins may see it: a password in the URL replaced by ***."""
    parts = urlsplit(repository)
    if "://" not in repository or parts.password is None:
        return repository
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class SourceError(RuntimeError):
    """The repository cannot be read; the message says what git said and what to check."""


@dataclass(frozen=True)
class Catalog:
    """The templates of one commit, and the files that are templates but could not be read."""

    commit: str
    templates: dict[str, Template] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


class GitSource:
    def __init__(self, repository: str, branch: str, cache: Path, *, timeout: float = 120.0) -> None:
        if not repository:
            raise SourceError("no template repository: give a local path or a git URL")
        self.check_repository(repository)
        if not BRANCH.fullmatch(branch) or ".." in branch:
            raise SourceError(f"template branch {branch!r} is not a branch name")
        self.repository = repository
        self.branch = branch
        self.cache = cache
        self.timeout = timeout

    @staticmethod
    def check_repository(repository: str) -> None:
        """A local path or a git URL; never an option (``-…``) nor the ``ext::`` transport (it runs commands)."""
        if repository.startswith("-") or repository.lower().startswith("ext::"):
            raise SourceError(f"template repository {shown(repository)!r}: give a local path or a git URL")

    def _git(self, *args: str) -> bytes:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.cache), "GIT_TERMINAL_PROMPT": "0",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}
        command = ["git", "-c", "protocol.ext.allow=never", "-C", str(self.cache), *args]
        try:
            done = subprocess.run(command, capture_output=True, env=env, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise SourceError(f"git {args[0]} did not finish within {self.timeout:.0f} s") from None
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").replace(self.repository, shown(self.repository)).strip().splitlines()
            raise SourceError(f"git {args[0]} failed: {said[-1] if said else 'exit ' + str(done.returncode)}")
        return done.stdout

    def refresh(self) -> str:
        """Fetch the branch; return the commit it is at now."""
        if not (self.cache / "HEAD").exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            self._git("init", "--quiet", "--bare")
        ref = f"refs/heads/{self.branch}"
        try:
            self._git("fetch", "--quiet", "--no-tags", "--force", "--", self.repository, f"+{ref}:{ref}")
        except SourceError as exc:
            raise SourceError(f"cannot fetch branch {self.branch} of {shown(self.repository)}: {exc}") from None
        return self.head()

    def head(self) -> str:
        """The commit last fetched; ``SourceError`` before the first ``refresh``."""
        try:
            return self._git("rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}^{{commit}}").decode().strip()
        except SourceError:
            raise SourceError(f"branch {self.branch} of {shown(self.repository)} was not fetched yet") from None

    def files(self, commit: str) -> list[str]:
        """The paths of the template files (by extension) in ``commit``."""
        out = self._git("ls-tree", "-r", "-z", "--name-only", "--", self._commit(commit))
        paths = [p for p in out.decode("utf-8", "replace").split("\0") if p and kind_of(p)]
        return sorted(paths)[:MAX_FILES]

    def read(self, commit: str, path: str) -> bytes:
        """The bytes of ``path`` as it is in ``commit``."""
        return self._git("cat-file", "blob", f"{self._commit(commit)}:{path}")

    def catalog(self, commit: str) -> Catalog:
        """Every template of ``commit``; a file that fails to parse is listed in ``errors``."""
        catalog = Catalog(commit=self._commit(commit))
        for path, result in self._parsed(catalog.commit):
            if isinstance(result, Template):
                catalog.templates[result.name] = result
            else:
                catalog.errors[path] = result
        return catalog

    def _parsed(self, commit: str) -> Iterator[tuple[str, Template | str]]:
        for path in self.files(commit):
            try:
                yield path, parse(path, self.read(commit, path))
            except TemplateError as exc:
                yield path, str(exc)

    def _commit(self, commit: str) -> str:
        if not COMMIT.fullmatch(commit):
            raise SourceError(f"{commit!r} is not a commit id (40 hexadecimal digits)")
        return commit
