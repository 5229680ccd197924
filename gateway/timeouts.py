"""How long the gateway waits for agents, kernels and reviews: one value object, set from config.

Every wait the gateway does on something outside it is a field here, filled from the
``Gateway`` traits of the same meaning (``c.Gateway.agent_grace = 60``; ``cellgate gateway --help-all`` lists them)
and passed to the parts that wait. Defaults are the values documented in docs/agent-protocol.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    #: seconds an agent may be away before what ran on its kernels counts as lost
    agent_grace: float = 30.0
    #: seconds a connected agent has to answer the ping sent when a second connection claims its id
    agent_probe: float = 3.0
    #: seconds between the gateway's pings on an agent's socket
    agent_ping: float = 10.0
    #: seconds between the gateway's pings on every other WebSocket (kernel channels from Jupyter servers)
    client_ping: float = 20.0
    #: seconds an agent has to answer an EXPLAIN request (the row estimate shown to reviewers)
    explain: float = 10.0
    #: seconds an agent has to start a kernel (or restart one)
    kernel_start: float = 120.0
    #: seconds an agent has to stop or interrupt a kernel
    kernel_request: float = 30.0
    #: after a task's time limit: seconds for the agent to take the interrupt, then for the kernel to end the cell
    time_limit_interrupt: float = 10.0
    time_limit_reply: float = 30.0
    #: seconds between re-reads of a waiting task from the store (a change by another process is seen this late)
    task_poll: float = 2.0
    #: seconds between looks for an agent while an approved script waits for one
    agent_poll: float = 1.0
    #: longest ``wait`` of one long-poll request on ``GET /api/v1/tasks/{id}``
    long_poll_max: float = 30.0
    #: seconds a request (or any other ``Store.run``) waits for the store before it answers 503
    store_call: float = 10.0
    #: the same for a call that reads a whole table (the audit chain's export and verification)
    store_long_call: float = 300.0
    #: PostgreSQL ``statement_timeout`` of the store's connections, in seconds (a lock wait or a slow query ends)
    store_statement: float = 30.0
    #: seconds to open a connection to the store (libpq ``connect_timeout``; at least 2)
    store_connect: float = 5.0
    #: seconds to wait for a free connection of the store's pool (SQLAlchemy ``pool_timeout``)
    store_pool: float = 10.0
    #: longest pause between two attempts of an execution record's write while the store is unavailable
    store_retry_max: float = 10.0
    #: seconds between the sweeper's looks for tasks this gateway lost track of
    sweep_interval: float = 60.0
    #: seconds past a task's time limit before the sweeper ends it ``lost`` (when nothing tracks it)
    sweep_margin: float = 300.0
    #: on SIGTERM: seconds running scripts have to end before they end ``lost`` (the whole stop stays under 5 s)
    stop_grace: float = 2.0
