"""What the gateway allowed a cell to do: the ``metadata.cellgate`` of an execute_request, checked.

The gateway puts ``{"task_id": N, "statements": [...], "mode": "read-only" | "read-write"}`` into
the metadata of every execute_request it dispatches. A kernel started by the agent
(``CELLGATE_GATED=1``) runs a cell only when that list is exactly the kernel's own split of the
code, so what runs is what the gateway analysed; anything else is refused before a connection
is opened. A kernel started by hand (no ``CELLGATE_GATED``) splits the cell itself and runs it
read-write, as a plain SQL kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .split import split_statements

READ_ONLY = "read-only"
READ_WRITE = "read-write"
MODES = (READ_ONLY, READ_WRITE)


class Refused(Exception):
    """The cell must not run; the message says why and what to do. Nothing was executed."""


@dataclass(frozen=True)
class Plan:
    """The statements to run, one protocol call each, and the connection mode to run them in."""

    statements: list[str]
    mode: str = READ_WRITE


def plan(code: str, dialect: str, metadata: Mapping[str, Any] | None, gated: bool) -> Plan:
    """The plan for ``code``; raises :class:`Refused` when a gated kernel must not run it."""
    own = split_statements(code, dialect)
    if not gated:
        return Plan(own)
    meta = (metadata or {}).get("cellgate")
    if not isinstance(meta, Mapping):
        raise Refused("this kernel runs only cells dispatched by the cellgate gateway, and this request "
                      "carries no metadata.cellgate; nothing ran (send the cell through the gateway)")
    statements = meta.get("statements")
    if not isinstance(statements, list) or not all(isinstance(s, str) for s in statements):
        raise Refused("metadata.cellgate.statements must be a list of statement texts; nothing ran")
    if statements != own:
        raise Refused(f"the cell splits into {len(own)} statement(s) here but the gateway analysed "
                      f"{len(statements)} different one(s); nothing ran (resubmit the cell through the gateway)")
    mode = meta.get("mode")
    if mode not in MODES:
        raise Refused(f"metadata.cellgate.mode must be one of {', '.join(MODES)}, got {mode!r}; nothing ran")
    return Plan(own, mode)
