"""What the gateway allowed a cell to do: the ``metadata.cellgate`` of an execute_request, checked.

The gateway puts ``{"task_id": N, "statements": [...], "mode": "read-only" | "read-write"}`` into
the metadata of every execute_request it dispatches, and ``"parameters": [{name, type, value}]``
for a rendered template, whose statements hold a marker where each value goes (``params.py``):
each marker must be a whole token with a value, or nothing runs. A kernel started by the agent
(``CELLGATE_GATED=1``) runs a cell only when that list is exactly the kernel's own split of the
code, so what runs is what the gateway analysed; anything else is refused before a connection
is opened. A kernel started by hand (no ``CELLGATE_GATED``) splits the cell itself and runs it
read-write, as a plain SQL kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .params import MarkerError, Params, for_driver, values_from
from .split import split_statements

READ_ONLY = "read-only"
READ_WRITE = "read-write"
MODES = (READ_ONLY, READ_WRITE)


class Refused(Exception):
    """The cell must not run; the message says why and what to do. Nothing was executed."""


@dataclass(frozen=True)
class Plan:
    """The statements to run, one protocol call each, and the connection mode to run them in;
    ``bound``: each statement as the driver takes it, with its parameters (None: sent raw)."""

    statements: list[str]
    mode: str = READ_WRITE
    bound: list[tuple[str, Params | None]] | None = None

    def calls(self) -> list[tuple[str, Params | None]]:
        return self.bound if self.bound is not None else [(s, None) for s in self.statements]


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
    try:
        values = values_from(meta["parameters"]) if "parameters" in meta else {}
        bound = [for_driver(s, dialect, values) for s in own]
    except (MarkerError, ValueError) as exc:
        raise Refused(f"{exc}; nothing ran") from None
    return Plan(own, mode, bound)
