"""The agent's task journal: what it was given and how each task ended, on disk, across restarts.

An append-only JSON-lines file, ``<state_dir>/journal.jsonl``, one record per line:

- ``{"t": "started", "task": 7, "kernel": "…", "msg": "…", "at": 1.7e9}``: written and fsynced
  *before* the request (``msg``: its msg_id) goes to the kernel, so a task the journal does not
  know never reached a kernel;
- ``{"t": "ended", "task": 7, "status": "ok", "ename": …, "evalue": …, "at": …, "seq": 12}``:
  fsynced when the kernel answered (or died);
- ``{"t": "acked", "task": 7}``: the gateway stored the end; the task is forgotten.

After a reconnect or a restart the agent reports every task not forgotten (``hello.tasks``), and
the gateway reconciles (docs/agent-protocol.md). The file is rewritten with only the open tasks
when the agent starts and whenever it holds many forgotten ones. An exclusive lock on it keeps a
second agent process off the same state directory.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cellgate import protocol

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"
#: forgotten records the file may hold before it is rewritten with the open tasks only
COMPACT_AFTER = 1000


class JournalError(ValueError):
    """The journal cannot be opened (another agent holds it, or the directory is unusable)."""


@dataclass
class Entry:
    task_id: int
    kernel_id: str
    started_at: float
    state: str = "started"  # started | ended
    status: str | None = None
    ename: str | None = None
    evalue: str | None = None
    ended_at: float | None = None
    last_seq: int = 0
    msg_id: str | None = None

    def report(self, unacked: int) -> protocol.TaskReport:
        return protocol.TaskReport(task_id=self.task_id, kernel_id=self.kernel_id, state=self.state,
                                   started_at=self.started_at, status=self.status, ename=self.ename,
                                   evalue=self.evalue, ended_at=self.ended_at, last_seq=self.last_seq,
                                   unacked=unacked, msg_id=self.msg_id)


class Journal:
    """The open tasks, kept in ``state_dir`` (``None``: in memory only, nothing survives a restart)."""

    def __init__(self, state_dir: str | Path | None) -> None:
        self.open: dict[int, Entry] = {}
        self._dir = Path(state_dir) if state_dir is not None else None
        self._file: IO[str] | None = None
        self._forgotten = 0

    def load(self) -> None:
        """Open, lock and replay the file (once; raises :class:`JournalError`)."""
        if self._dir is None or self._file is not None:
            return
        directory = self._dir
        try:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            directory.chmod(0o700)  # the spilled outputs beside the journal are target data
            self.path = directory / JOURNAL_FILE
            self._file = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the agent's life
        except OSError as exc:
            raise JournalError(f"cannot use the state directory {directory} (Agent.state_dir): {exc}") from None
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise JournalError(f"another agent process uses the state directory {directory} (Agent.state_dir): "
                               "stop it, or give each agent its own state directory") from None
        self._replay()
        self._compact()
        if self.open:
            log.info("journal: %d task(s) of an earlier run to report: %s", len(self.open),
                     ", ".join(f"#{e.task_id} {e.state}" for e in self.open.values()))

    # -- records -----------------------------------------------------------------------------

    def started(self, task_id: int, kernel_id: str, msg_id: str | None = None) -> None:
        """The request is about to go to the kernel (fsynced first). A later cell of a notebook task
        starts the same task again: its seq numbering goes on."""
        entry = self.open.get(task_id)
        last_seq = entry.last_seq if entry is not None else 0
        entry = Entry(task_id, kernel_id, time.time(), last_seq=last_seq, msg_id=msg_id)
        self.open[task_id] = entry
        self._write({"t": "started", "task": task_id, "kernel": kernel_id, "msg": msg_id, "at": entry.started_at,
                     "seq": last_seq}, sync=True)

    def ended(self, task_id: int, status: str, ename: str | None, evalue: str | None, last_seq: int) -> None:
        entry = self.open.get(task_id)
        if entry is None or entry.state == "ended":
            return
        entry.state, entry.status, entry.ename, entry.evalue = "ended", status, ename, evalue
        entry.ended_at, entry.last_seq = time.time(), last_seq
        self._write({"t": "ended", "task": task_id, "status": status, "ename": ename, "evalue": evalue,
                     "at": entry.ended_at, "seq": last_seq}, sync=True)

    def forget(self, task_id: int) -> None:
        """The gateway stored the task's end."""
        if self.open.pop(task_id, None) is None:
            return
        self._write({"t": "acked", "task": task_id}, sync=False)
        self._forgotten += 1
        if self._forgotten >= COMPACT_AFTER:
            self._compact()

    def reports(self, unacked: dict[int, int]) -> list[protocol.TaskReport]:
        return [e.report(unacked.get(e.task_id, 0)) for e in self.open.values()]

    # -- file --------------------------------------------------------------------------------

    def _write(self, record: dict[str, Any], *, sync: bool) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def _replay(self) -> None:
        assert self._file is not None
        self._file.seek(0)
        for number, line in enumerate(self._file, 1):
            try:
                rec = json.loads(line)
                kind, task_id = rec["t"], int(rec["task"])
                if kind == "started":
                    msg = rec.get("msg")
                    self.open[task_id] = Entry(task_id, str(rec["kernel"]), float(rec["at"]), last_seq=int(rec.get("seq", 0)),
                                               msg_id=msg if isinstance(msg, str) else None)
                elif kind == "ended" and task_id in self.open:
                    e = self.open[task_id]
                    e.state, e.status, e.ename, e.evalue = "ended", rec["status"], rec.get("ename"), rec.get("evalue")
                    e.ended_at, e.last_seq = float(rec["at"]), int(rec.get("seq", 0))
                elif kind == "acked":
                    self.open.pop(task_id, None)
            except (ValueError, KeyError, TypeError):  # a line cut by a crash mid-write
                log.warning("journal %s: line %d is unreadable, skipped", self.path, number)

    def _compact(self) -> None:
        """Rewrite the file with the open tasks only (a new file renamed over the old one; the lock
        moves with it)."""
        if self._file is None:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for e in self.open.values():
                out.write(json.dumps({"t": "started", "task": e.task_id, "kernel": e.kernel_id, "msg": e.msg_id,
                                      "at": e.started_at, "seq": e.last_seq}) + "\n")
                if e.state == "ended":
                    out.write(json.dumps({"t": "ended", "task": e.task_id, "status": e.status, "ename": e.ename,
                                          "evalue": e.evalue, "at": e.ended_at, "seq": e.last_seq}) + "\n")
            out.flush()
            os.fsync(out.fileno())
        new = open(tmp, "a+", encoding="utf-8")  # noqa: SIM115 - replaces the held file
        fcntl.flock(new.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else can hold it: it is ours
        os.replace(tmp, self.path)
        old, self._file = self._file, new
        old.close()
        self._forgotten = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
