"""``/api/v1/audit``: export and verify the chain (admins)."""

from __future__ import annotations

import datetime as dt

from .. import audit
from ..errors import BadRequest
from .base import APIHandler
from .inputs import Operation, Query

FORMATS = {"jsonl": ("application/x-ndjson", audit.to_jsonl), "csv": ("text/csv; charset=UTF-8", audit.to_csv)}


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T12:00:00Z") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


class AuditExportHandler(APIHandler):
    access = {"GET": "admin"}
    api = {"GET": Operation(query=(Query("format", choices=tuple(FORMATS), default="jsonl"),
                                   Query("since", help="ISO 8601 date or time"),
                                   Query("until", help="ISO 8601 date or time")))}

    async def get(self) -> None:
        fmt = self.argument("format")
        since = parse_time(self.argument("since"), "since")
        until = parse_time(self.argument("until"), "until")
        records = await self.store.run_long(audit.query, since, until)  # the chain, or a span of it
        content_type, render = FORMATS[fmt]
        self.set_header("Content-Type", content_type)
        for chunk in render(records):
            self.write(chunk)
        self.finish()


class AuditVerifyHandler(APIHandler):
    access = {"GET": "admin"}

    async def get(self) -> None:
        result = await self.store.run_long(audit.verify)  # the whole chain
        self.send(result.as_dict())


default_handlers = [
    (r"/api/v1/audit/?", AuditExportHandler),
    (r"/api/v1/audit/verify/?", AuditVerifyHandler),
]
