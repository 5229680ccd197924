"""Jupyter messages the gateway writes itself (for held, refused and aborted requests)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

PROTOCOL_VERSION = "5.3"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reply_type(request_type: str) -> str:
    return request_type[: -len("_request")] + "_reply" if request_type.endswith("_request") else request_type + "_reply"


def make(msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None, channel: str,
         session: str = "cellgate-gateway") -> dict[str, Any]:
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": msg_type, "session": session, "username": "cellgate",
              "date": now_iso(), "version": PROTOCOL_VERSION}
    return {
        "header": header,
        "msg_id": msg_id,
        "msg_type": msg_type,
        "parent_header": (parent or {}).get("header", {}),
        "metadata": {},
        "content": content,
        "buffers": [],
        "channel": channel,
    }


def status(state: str, parent: dict[str, Any] | None) -> dict[str, Any]:
    return make("status", {"execution_state": state}, parent, "iopub")


def error_messages(parent: dict[str, Any], ename: str, evalue: str, *, execution_count: int | None = None) -> list[dict[str, Any]]:
    """What ends a refused cell: ``error`` → ``execute_reply`` (status error) → ``idle``."""
    traceback = [f"\x1b[0;31m{ename}\x1b[0m: {evalue}"]
    err = {"ename": ename, "evalue": evalue, "traceback": traceback}
    reply_content = {"status": "error", "execution_count": execution_count, **err}
    msgs = []
    if parent["header"]["msg_type"] == "execute_request":
        msgs.append(make("error", err, parent, "iopub"))
    msgs.append(make(reply_type(parent["header"]["msg_type"]), reply_content, parent, parent.get("channel", "shell")))
    msgs.append(status("idle", parent))
    return msgs


def aborted_messages(parent: dict[str, Any]) -> list[dict[str, Any]]:
    """What ipykernel sends for a request skipped after an earlier error (stop_on_error)."""
    return [
        status("busy", parent),
        make("execute_reply", {"status": "aborted", "execution_count": None}, parent, "shell"),
        status("idle", parent),
    ]


def display(parent: dict[str, Any], display_id: str, text: str, html: str, *, update: bool) -> dict[str, Any]:
    content = {"data": {"text/plain": text, "text/html": html}, "metadata": {},
               "transient": {"display_id": display_id}}
    return make("update_display_data" if update else "display_data", content, parent, "iopub")
