"""What the gateway's and the agent's settings share about waits: the range a number of seconds
may take, and a ``Timeouts`` value object filled from an application's traits."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from traitlets import TraitError

#: the longest wait any setting may ask for (a day)
MAX_SECONDS = 86400

T = TypeVar("T")


def check_seconds(owner: str, name: str, value: float) -> float:
    """``value`` if it is a usable wait; else TraitError naming ``owner.name`` and the range."""
    if not 0 < value <= MAX_SECONDS:
        raise TraitError(f"{owner}.{name} must be more than 0 and at most {MAX_SECONDS} seconds, not {value}")
    return value


def from_traits(make: Callable[..., T], app: Any, fields: Mapping[str, str]) -> T:
    """``make(**{field: app.<trait>})`` for every trait → field of ``fields``."""
    return make(**{fld: getattr(app, trait) for trait, fld in fields.items()})
