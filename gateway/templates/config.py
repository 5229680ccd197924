"""``c.Templates.*``: which git repository and branch hold the templates, how often to fetch it.

Without ``Templates.repository`` there are no templates (listings are empty and say so). The push
webhook (``POST /api/v1/templates/webhook``) needs ``Templates.webhook_secret`` (or the env
``CELLGATE_TEMPLATES_WEBHOOK_SECRET``, or ``Templates.webhook_secret_file``, mode 0600): without
one it refuses every call.
"""

from __future__ import annotations

import os
from typing import Any

from traitlets import Float, TraitError, Unicode, default, validate
from traitlets.config import Configurable

from ...seconds import check_seconds
from ...secret_files import read_setting_file
from .source import BRANCH, GitSource, SourceError

WEBHOOK_SECRET_ENV = "CELLGATE_TEMPLATES_WEBHOOK_SECRET"


class Templates(Configurable):
    """Where the templates come from."""

    repository = Unicode("", config=True, help=(
        "The git repository of the templates: a local path or a URL (https://…, ssh://…, git@host:path). "
        "Empty: no templates."))
    branch = Unicode("main", config=True, help="The branch read; every run is pinned to the commit it was rendered from.")
    refresh_interval = Float(300.0, config=True, help=(
        "Seconds between fetches of the branch (also: `cellgate templates refresh` and the push webhook)."))
    cache_dir = Unicode("cellgate-templates", config=True, help=(
        "Folder of the gateway's bare copy of the repository (made if missing; relative to the working directory)."))
    fetch_timeout = Float(120.0, config=True, help="Seconds one fetch of the repository may take.")
    webhook_secret = Unicode(config=True, help=(
        f"Secret of the push webhook's HMAC-SHA256 signature (X-Hub-Signature-256). Default: env {WEBHOOK_SECRET_ENV}, "
        "then Templates.webhook_secret_file. Empty: the webhook refuses every call."))
    webhook_secret_file = Unicode("", config=True, help="File holding the webhook secret (mode 0600).")

    @default("webhook_secret")
    def _webhook_secret_default(self) -> str:
        value = os.environ.get(WEBHOOK_SECRET_ENV, "").strip()
        if value or not self.webhook_secret_file:
            return value
        return read_setting_file(self.webhook_secret_file, "Templates.webhook_secret_file", TraitError)

    @validate("repository")
    def _valid_repository(self, proposal: Any) -> str:
        repository: str = proposal["value"]
        try:
            GitSource.check_repository(repository)
        except SourceError as exc:
            raise TraitError(f"Templates.repository: {exc}") from None
        return repository

    @validate("branch")
    def _valid_branch(self, proposal: Any) -> str:
        branch: str = proposal["value"]
        if not BRANCH.fullmatch(branch) or ".." in branch:
            raise TraitError(f"Templates.branch must be a branch name such as main, not {branch!r}")
        return branch

    @validate("refresh_interval", "fetch_timeout")
    def _valid_seconds(self, proposal: Any) -> float:
        return check_seconds("Templates", proposal["trait"].name, proposal["value"])

    def __repr__(self) -> str:  # never the secret
        return f"Templates(repository={self.repository!r}, branch={self.branch!r})"
