"""The gateway-mode kernel WebSocket, without Nagle's algorithm on either leg.

jupyter_server's ``GatewayWebSocketConnection`` relays each kernel message as its own small
WebSocket frame, to the browser and to the gateway, on sockets where Nagle's algorithm is on.
A cell's burst of small messages (busy, input, result, reply, idle) then waits for delayed
ACKs: tens of milliseconds per cell. This subclass turns on ``TCP_NODELAY`` on both sockets.
"""

from __future__ import annotations

from typing import Any

from jupyter_server.gateway.connections import GatewayWebSocketConnection


class CellgateWebSocketConnection(GatewayWebSocketConnection):
    async def connect(self) -> None:
        self.websocket_handler.set_nodelay(True)
        await super().connect()

    def _connection_done(self, fut: Any) -> None:
        super()._connection_done(fut)
        if self.ws is not None:
            # the connection is done: its protocol and stream exist
            assert self.ws.protocol is not None and self.ws.protocol.stream is not None
            self.ws.protocol.stream.set_nodelay(True)
