"""How long the agent waits, and how often it looks: one value object, set from config.

Every timeout and interval of the agent is a field here, filled from the ``Agent`` trait of the
same meaning (``c.Agent.kernel_start_timeout = 90``; ``agent.app.TIMEOUT_FIELDS`` maps them) and
passed to the parts that wait: the gateway connection, the kernel host, uid reclaiming and the
EXPLAIN estimates. The defaults here are the traits' defaults (docs/agent.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    #: first reconnect delay in seconds; it doubles per failed attempt up to ``reconnect_max``
    #: (each delay randomised to 50–100 %)
    reconnect_min: float = 0.5
    reconnect_max: float = 10.0
    #: seconds one attempt to open the WebSocket to the gateway may take
    connect: float = 10.0
    #: seconds between WebSocket pings to the gateway; a ping unanswered this long drops the connection
    ws_ping: float = 20.0
    #: seconds a kernel has to answer its first kernel_info request after (re)start
    kernel_start: float = 60.0
    #: seconds between kernel_info probes while a kernel starts
    kernel_probe: float = 1.0
    #: seconds between checks that a running kernel is still alive
    kernel_watch: float = 1.0
    #: seconds a kernel has to exit after a shutdown request before it is killed (jupyter_client's
    #: ``shutdown_wait_time``)
    kernel_shutdown: float = 5.0
    #: seconds the agent keeps SIGKILLing a kernel uid's processes before it gives up on the uid
    uid_kill: float = 5.0
    #: statement timeout, in seconds, of the EXPLAIN run for a row estimate (read-only credential)
    explain: float = 10.0
