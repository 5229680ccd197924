"""In-process notifications that a task changed (status, reviews or outputs).

Waiters also re-read the store on a short timeout, so a change made by another gateway
process (another replica, the CLI on the store) is seen too, only later.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

log = logging.getLogger("cellgate.gateway.events")


Listener = Callable[[int], None]


class TaskEvents:
    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Future[None]]] = defaultdict(set)
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(task_id)`` after every change (Slack notices use this). It must not block:
        start a task for slow work. An exception in it is logged, never raised to the notifier."""
        self._listeners.append(listener)

    def notify(self, task_id: int) -> None:
        for fut in self._waiters.pop(task_id, set()):
            if not fut.done():
                fut.set_result(None)
        for listener in self._listeners:
            try:
                listener(task_id)
            except Exception:
                log.exception("a task listener failed for task %s", task_id)

    async def wait(self, task_id: int, timeout: float) -> bool:
        """Wait until ``notify(task_id)`` or ``timeout``; True if notified."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[task_id].add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiters.pop(task_id, None)
