"""The gateway's templates: the catalog of the commit last fetched, its refreshes, who sees what.

``TemplateLibrary.refresh`` fetches the branch (git runs in a thread, one fetch at a time), reads
the new commit's catalog and records ``templates.refreshed`` in the audit with the commit, the
one before, and the files that could not be read. A failed fetch keeps the catalog it had and
says why (``last_error``); nothing is half-replaced. ``run`` refreshes on the interval.

Who sees a template is :func:`cellgate.gateway.access.may_run_template`: an admin, or a member of
one of its groups; a template that names no group is for admins only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import audit
from ..access import may_manage_templates, may_run_template
from ..auth import Identity
from ..errors import Conflict, NotFound, Unavailable
from ..store import Store
from .catalog import Template
from .config import Templates
from .source import Catalog, GitSource, SourceError, shown

log = logging.getLogger("cellgate.gateway.templates")

NOT_CONFIGURED = "templates are not configured: set c.Templates.repository in cellgate_config.py (docs/templates.md)"


@dataclass(frozen=True)
class Refreshed:
    commit: str
    previous: str | None
    templates: int
    errors: dict[str, str]

    def as_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "previous": self.previous, "templates": self.templates, "errors": self.errors}


class TemplateLibrary:
    def __init__(self, store: Store, config: Templates | None = None) -> None:
        self.store = store
        self.config = config or Templates()
        self.source = (GitSource(self.config.repository, self.config.branch, Path(self.config.cache_dir),
                                 timeout=self.config.fetch_timeout) if self.config.repository else None)
        self.catalog: Catalog | None = None
        self.last_error: str | None = None
        self.refreshed_at: float | None = None
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return self.source is not None

    async def refresh(self, actor: str) -> Refreshed:
        """Fetch and read the branch now; ``Conflict`` when not configured, ``Unavailable`` when
        the repository cannot be read (the catalog stays as it was)."""
        source = self.source
        if source is None:
            raise Conflict(NOT_CONFIGURED)
        async with self._lock:
            try:
                catalog = await asyncio.to_thread(lambda: source.catalog(source.refresh()))
            except SourceError as exc:
                self.last_error = str(exc)
                log.warning("templates: %s", exc)
                raise Unavailable(f"the template repository cannot be read: {exc}") from None
            previous = self.catalog.commit if self.catalog else None
            self.catalog, self.last_error, self.refreshed_at = catalog, None, time.time()
            done = Refreshed(commit=catalog.commit, previous=previous, templates=len(catalog.templates),
                             errors=dict(catalog.errors))
            if previous != catalog.commit:
                await self.store.run(lambda s: audit.append(s, actor, "templates.refreshed", detail=done.as_json()))
            return done

    async def run(self) -> None:
        """Refresh now and then every ``Templates.refresh_interval`` seconds (until cancelled)."""
        if self.source is None:
            return
        while True:
            try:
                await self.refresh("system")
            except Unavailable:
                pass  # logged, kept in last_error; the catalog stays
            await asyncio.sleep(self.config.refresh_interval)

    def visible(self, ident: Identity) -> list[Template]:
        """The templates ``ident`` may run, by name."""
        if self.catalog is None:
            return []
        return [t for _, t in sorted(self.catalog.templates.items()) if may_run_template(ident, t.groups)]

    def get(self, ident: Identity, name: str) -> Template:
        """One template ``ident`` may run; ``NotFound`` (the same for one they may not see)."""
        template = self.catalog.templates.get(name) if self.catalog else None
        if template is None or not may_run_template(ident, template.groups):
            raise NotFound(f"no template {name!r}: `cellgate templates` lists the ones you may run")
        return template

    def status(self, ident: Identity) -> dict[str, Any]:
        """Where the templates come from and how the last fetch went (the errors for admins only)."""
        data: dict[str, Any] = {"configured": self.configured, "commit": self.catalog.commit if self.catalog else None,
                                "refreshed_at": self.refreshed_at}
        if not self.configured:
            data["message"] = NOT_CONFIGURED
        if may_manage_templates(ident):
            data.update(repository=shown(self.config.repository) if self.config.repository else None,
                        branch=self.config.branch, last_error=self.last_error,
                        errors=dict(self.catalog.errors) if self.catalog else {})
        return data
