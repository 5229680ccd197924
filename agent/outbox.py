"""The frames of tasks the gateway has not acknowledged yet: kept, in order, to resend after a reconnect.

Each ``kernel_msg`` of a task carries ``(task_id, seq)``; the agent keeps its text here until an
``ack`` covers it (every frame of that task up to ``seq`` is stored by the gateway). Up to
``memory_bytes`` of text is held in memory; beyond that, frames go to a spill file
(``<state_dir>/outbox.spill``, mode 0600: it is target data) and only their offset stays in memory.
The file is emptied as soon as nothing is pending, so memory and disk return to their baseline.
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

SPILL_FILE = "outbox.spill"


@dataclass
class _Held:
    order: int
    seq: int
    text: str | None  # None: on disk at (offset, length)
    offset: int = 0
    length: int = 0


class Outbox:
    def __init__(self, state_dir: str | Path | None, memory_bytes: int) -> None:
        self.memory_bytes = memory_bytes
        self.in_memory = 0  # bytes of text held in memory
        self._tasks: dict[int, deque[_Held]] = {}
        self._order = itertools.count()
        self._path = Path(state_dir) / SPILL_FILE if state_dir is not None else None
        self._spill: IO[bytes] | None = None

    def drop_stale(self) -> None:
        """Remove an earlier run's spill file (its kernels are gone with it); call once the state
        directory is this process's (the journal's lock)."""
        if self._path is not None and self._spill is None:
            self._path.unlink(missing_ok=True)

    def add(self, task_id: int, seq: int, text: str) -> None:
        held = _Held(next(self._order), seq, text)
        if self.in_memory + len(text) > self.memory_bytes and self._path is not None:
            data = text.encode()
            spill = self._spill_file()
            held.offset = spill.seek(0, os.SEEK_END)
            spill.write(data)
            held.text, held.length = None, len(data)
        else:
            self.in_memory += len(text)
        self._tasks.setdefault(task_id, deque()).append(held)

    def ack(self, task_id: int, seq: int) -> None:
        """Drop the frames of ``task_id`` up to ``seq``."""
        queue = self._tasks.get(task_id)
        while queue and queue[0].seq <= seq:
            held = queue.popleft()
            if held.text is not None:
                self.in_memory -= len(held.text)
        if queue is not None and not queue:
            del self._tasks[task_id]
        if not self._tasks and self._spill is not None:
            self._spill.close()
            self._spill = None
            if self._path is not None:
                self._path.unlink(missing_ok=True)

    def pending(self) -> dict[int, int]:
        """Unacknowledged frames per task."""
        return {task_id: len(queue) for task_id, queue in self._tasks.items()}

    def frames(self) -> Iterator[str]:
        """Every pending frame's text, in the order they were added."""
        held = sorted((h for q in self._tasks.values() for h in q), key=lambda h: h.order)
        for h in held:
            if h.text is not None:
                yield h.text
            else:
                spill = self._spill_file()
                spill.seek(h.offset)
                yield spill.read(h.length).decode()

    def _spill_file(self) -> IO[bytes]:
        if self._spill is None:
            assert self._path is not None
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            self._spill = os.fdopen(fd, "r+b")
        return self._spill
