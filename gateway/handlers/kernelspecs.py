"""Kernel Gateway protocol: the targets a user may use, as kernel specs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from ..models import Target
from ..access import may_submit
from .base import APIHandler

LANGUAGES = {"sql": "sql", "python": "python"}


def spec_model(target: Target, online: bool) -> dict[str, Any]:
    language = target.language or LANGUAGES.get(target.kind, "sql")
    display = target.display_name or target.name
    return {
        "name": target.name,
        "spec": {
            "argv": [],
            "display_name": f"{display} (cellgate{'' if online else ', offline'})",
            "language": language,
            "interrupt_mode": "message",
            "env": {},
            "metadata": {"cellgate": {"target": target.name, "kind": target.kind, "dialect": target.dialect,
                                      "review_groups": target.review_groups, "online": online}},
        },
        "resources": {},
    }


class KernelSpecsHandler(APIHandler):
    access = {"GET": "user"}

    async def get(self) -> None:
        targets = await self.store.run(lambda s: list(s.execute(select(Target).order_by(Target.name)).scalars()))
        specs = {t.name: spec_model(t, bool(self.agents.serving(t.name)))
                 for t in targets if may_submit(self.user, t)}
        self.send({"default": next(iter(specs), ""), "kernelspecs": specs})


class KernelSpecHandler(APIHandler):
    access = {"GET": "user"}

    async def get(self, name: str) -> None:
        target = await self.flow.check_target(self.user, name)
        self.send(spec_model(target, bool(self.agents.serving(name))))


class KernelSpecResourceHandler(APIHandler):
    """Logos and other files: cellgate targets have none (404, which jupyter_server expects)."""

    access = {"GET": "user"}

    async def get(self, name: str, path: str) -> None:
        await self.flow.check_target(self.user, name)
        self.send({"status": 404, "message": f"kernel spec {name} has no resource {path}"}, 404)


default_handlers = [
    (r"/api/kernelspecs/?", KernelSpecsHandler),
    (r"/api/kernelspecs/(?P<name>[\w.\-]+)/?", KernelSpecHandler),
    (r"/kernelspecs/(?P<name>[\w.\-]+)/(?P<path>.+)", KernelSpecResourceHandler),
]
