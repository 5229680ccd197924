"""An agent connection whose socket closed says so with the gateway's own error (gateway/agents.py)."""

from __future__ import annotations

import pytest
from tornado.websocket import WebSocketClosedError

from cellgate import protocol
from cellgate.gateway.agents import AgentConnection, AgentRegistry
from cellgate.gateway.errors import Unavailable


def _closed(text: str) -> None:
    raise WebSocketClosedError()


def test_sending_on_a_closed_socket_raises_unavailable_not_tornados_error() -> None:
    conn = AgentConnection(agent_id="eu-1", token_name="t", send_text=_closed)
    with pytest.raises(Unavailable, match="agent eu-1 is not connected"):
        conn.send(protocol.Ping(ts=1.0))


def test_each_connection_of_an_agent_id_is_a_new_generation() -> None:
    """What a grace timer compares: a reconnect since its disconnect, even one that dropped again, ends it."""
    registry = AgentRegistry()
    first = AgentConnection(agent_id="eu-1", token_name="t", send_text=lambda text: None)
    registry.add(first)
    seen = registry.generations["eu-1"]
    registry.remove(first)
    again = AgentConnection(agent_id="eu-1", token_name="t", send_text=lambda text: None)
    registry.add(again)
    registry.remove(again)
    assert registry.get("eu-1") is None and registry.generations["eu-1"] != seen
