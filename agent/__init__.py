"""The agent: runs inside the production network, dials out to the gateway, runs approved cells.

It holds the targets' credentials and starts each kernel isolated from them (docs/agent.md);
``app`` is the command, ``connection`` the WebSocket to the gateway, ``kernels`` the kernels.
"""
