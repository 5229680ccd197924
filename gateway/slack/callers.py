"""Who is asking from Slack: the Slack user of a request, the cellgate identity they are linked to,
and how a refusal reads to them."""

from __future__ import annotations

from typing import Any

from ..auth import Identity
from ..errors import CellgateError, Forbidden
from . import links
from .integration import SlackIntegration


def refusal(exc: Exception) -> str:
    """A refusal as the clicking user reads it."""
    if isinstance(exc, CellgateError):
        return f"cellgate refused ({exc.status}): {exc.message}"
    return f"cellgate refused (409): {exc}"


async def identify(slack: SlackIntegration, slack_user_id: str, team_id: str) -> Identity:
    """The linked cellgate identity, groups read now; raises :class:`Forbidden` with the way out when there is none."""
    ident = await links.resolve(slack.store, slack.client, slack_user_id, team_id)
    if ident is None:
        raise Forbidden(links.not_linked(slack_user_id))
    return ident


def who(payload: dict[str, Any]) -> tuple[str, str]:
    """(Slack user ID, workspace ID) of an interaction payload."""
    user = payload.get("user") or {}
    team = (payload.get("team") or {}).get("id") or user.get("team_id") or ""
    return str(user.get("id") or ""), str(team)


def channel_of(payload: dict[str, Any]) -> str | None:
    """The channel an interaction came from (where an ephemeral answer goes), if any."""
    return str((payload.get("channel") or {}).get("id") or "") or None
