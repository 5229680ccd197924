"""The gateway: the service that holds tasks, policy, reviews, identity and the audit chain.

It speaks the Kernel Gateway protocol to users' Jupyter servers and a WebSocket protocol to the
agents; ``app`` builds the tornado application and wires the rooms together (docs/architecture.md).
"""
