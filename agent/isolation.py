"""Kernel isolation: each kernel runs as its own unprivileged uid, in its own private directory.

What this module holds:

- ``require_privileges``: the agent can only start kernels as other uids when it is root or has
  the capabilities listed in ``NEEDED_CAPS``; otherwise ``IsolationError`` says what to do.
- ``UidPool``: hands out uids from the configured range (``[agent] kernel_uids``). A uid is
  claimed with an ``flock`` on a lock file in a host-wide directory, so two agents on one host
  never hand out the same uid, and a crashed agent's claims end with it. A uid that still has a
  live process (seen in ``/proc``) is never handed out.
- ``kill_uid``: SIGKILL every process of a uid (scanning ``/proc``) until none is left, then
  ``remove_uid_files`` drops what the uid left in the world-writable temp directories.
- ``KernelDir``: ``<runtime>/<kernel_id>/`` (root-owned, 0711) with ``connection.json``
  (the kernel's uid, 0600) and ``home/`` (the kernel's uid, 0700: HOME, cwd, IPYTHONDIR, TMPDIR,
  JUPYTER_RUNTIME_DIR).
- ``IsolatedProvisioner``: jupyter_client's ``LocalProvisioner`` that chowns the connection file
  to the kernel's uid and starts the kernel through ``Popen(user=, group=, extra_groups=[],
  umask=0o077, cwd=home)``; before every (re)start it kills what the uid left behind.
- ``hide_secrets``: the agent's own hardening: ``prctl(PR_SET_DUMPABLE, 0)`` and overwriting the
  secrets in the process's initial argv/environ memory, which ``/proc/<pid>/cmdline`` and
  ``/proc/<pid>/environ`` show (``os.environ`` edits do not change them).
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_client.provisioning import LocalProvisioner

log = logging.getLogger(__name__)

#: capability numbers (linux/capability.h) the agent needs to run kernels as other uids
NEEDED_CAPS = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_KILL": 5, "CAP_SETGID": 6,
               "CAP_SETUID": 7}
#: world-writable places a kernel can leave files in; cleaned of the uid's files after it stops
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")
#: host-wide: every agent on the host claims its kernel uids here
UID_LOCK_DIRS = ("/run/cellgate-kernel-uids", os.path.join(tempfile.gettempdir(), "cellgate-kernel-uids"))
#: where each agent makes its runtime directory ``<pid>-XXXX`` when ``runtime_dir`` is not set
RUNTIME_PARENTS = ("/run/cellgate-agent",
                   os.path.join(tempfile.gettempdir(), f"cellgate-agent-{os.geteuid()}"))
PR_SET_DUMPABLE = 4

OFF_WARNING = ("KERNEL ISOLATION IS OFF ([agent] kernel_isolation = \"off\"): kernels run as the "
               "agent's own user and can read the agent token and every target's URL from "
               "/proc; use this for development only")


class IsolationError(ValueError):
    """Kernels cannot be isolated as configured; the message says what to change."""


# -- privileges ------------------------------------------------------------------------------

def _effective_caps() -> int | None:
    """The effective capability mask from /proc/self/status, or None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        return None
    return None


def require_privileges() -> None:
    """Raise ``IsolationError`` unless the agent can start kernels as other uids."""
    if not sys.platform.startswith("linux"):
        raise IsolationError("kernel_isolation = \"uid\" needs Linux (it finds a uid's processes "
                             "in /proc); elsewhere, for development only, set [agent] "
                             "kernel_isolation = \"off\" in the targets file (or c.Agent.kernel_isolation)")
    caps = _effective_caps()
    if caps is None:
        missing = [] if os.geteuid() == 0 else list(NEEDED_CAPS)
    else:
        missing = [name for name, bit in NEEDED_CAPS.items() if not caps >> bit & 1]
    if missing:
        raise IsolationError(
            f"kernel_isolation = \"uid\" runs every kernel as its own unprivileged uid, but this "
            f"agent (uid {os.geteuid()}) lacks {', '.join(missing)}: run the agent as root or "
            f"grant it CAP_SETUID, CAP_SETGID, CAP_KILL, CAP_CHOWN and CAP_DAC_OVERRIDE "
            f"(systemd: AmbientCapabilities=); for development only, set "
            f"[agent] kernel_isolation = \"off\" in the targets file (or c.Agent.kernel_isolation)")


# -- processes ------------------------------------------------------------------------------

def _uids_of(pid: str) -> tuple[set[int], str] | None:
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    uids: set[int] = set()
    state = ""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            uids = {int(v) for v in line.split()[1:]}
        elif line.startswith("State:"):
            state = line.split()[1] if len(line.split()) > 1 else ""
    return uids, state


def live_processes(uids: Iterable[int] | None = None) -> dict[int, list[int]]:
    """uid → pids of live processes (any of real/effective/saved/fs uid; zombies are dead)."""
    wanted = None if uids is None else set(uids)
    found: dict[int, list[int]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        info = _uids_of(pid)
        if info is None or info[1] in ("Z", "X"):
            continue
        for uid in info[0] if wanted is None else info[0] & wanted:
            found.setdefault(uid, []).append(int(pid))
    return found


def kill_uid(uid: int, timeout: float) -> bool:
    """SIGKILL every process of ``uid`` until none is left; False if some survived ``timeout``
    seconds (``Agent.uid_kill_timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = live_processes([uid]).get(uid, [])
        if not pids:
            return True
        if time.monotonic() > deadline:
            log.error("uid %d: %d process(es) survived SIGKILL: %s", uid, len(pids), pids)
            return False
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)  # a pause between SIGKILL rounds, not a wait: ``timeout`` bounds the loop


def remove_uid_files(uid: int, places: Iterable[str] = SHARED_TMP) -> None:
    """Remove the entries ``uid`` owns at the top of the shared temp directories (best effort)."""
    for place in places:
        try:
            entries = list(os.scandir(place))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError as exc:
                log.warning("uid %d: cannot remove %s: %s", uid, entry.path, exc)


# -- the uid pool ----------------------------------------------------------------------------

def _private_dir(path: str, mode: int) -> str:
    """Create ``path`` (mode) or accept it when it is ours and nobody else can write to it."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise IsolationError(f"{path} must be a directory owned by uid {os.geteuid()} that "
                             f"nobody else can write to (found uid {st.st_uid}, mode "
                             f"{stat.S_IMODE(st.st_mode):o}): remove it and restart the agent")
    os.chmod(path, mode)
    return path


def _place(candidates: Iterable[str], mode: int, what: str) -> str:
    """The first of ``candidates`` whose parent we can write to, made private (``mode``)."""
    candidates = tuple(candidates)
    for candidate in candidates:
        parent = os.path.dirname(candidate)
        if os.path.isdir(parent) and os.access(parent, os.W_OK):
            return _private_dir(candidate, mode)
    raise IsolationError(f"no place for {what}: make one of {', '.join(candidates)} possible")


def uid_lock_dir() -> str:
    return _place(UID_LOCK_DIRS, 0o700, "the kernel uid locks")


class UidPool:
    """The uids of ``[agent] kernel_uids``, handed out round-robin, one kernel per uid."""

    def __init__(self, first: int, last: int, lock_dir: str | None = None) -> None:
        self.first, self.last = first, last
        self.lock_dir = lock_dir or uid_lock_dir()
        self._held: dict[int, int] = {}  # uid → fd of its flocked lock file
        self._next = first

    def allocate(self) -> int:
        busy = live_processes(range(self.first, self.last + 1))
        size = self.last - self.first + 1
        for i in range(size):
            uid = self.first + (self._next - self.first + i) % size
            if uid in self._held or uid in busy:
                continue
            fd = os.open(os.path.join(self.lock_dir, str(uid)), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # another agent on this host holds it
                raise
            if live_processes([uid]):  # started between the scan and the lock
                os.close(fd)
                continue
            self._held[uid] = fd
            self._next = uid + 1 if uid < self.last else self.first
            return uid
        raise IsolationError(f"every kernel uid in {self.first}-{self.last} is in use: stop a "
                             f"kernel or widen kernel_uids ([agent] or c.Agent)")

    def release(self, uid: int) -> None:
        """Give ``uid`` back, only once it has no process left (else it stays claimed)."""
        if live_processes([uid]):
            log.error("uid %d still has processes: it stays out of the pool", uid)
            return
        fd = self._held.pop(uid, None)
        if fd is not None:
            os.close(fd)

    @property
    def held(self) -> set[int]:
        return set(self._held)


# -- the kernel's directory -------------------------------------------------------------------

def runtime_root(configured: str | None) -> tuple[str, bool]:
    """The agent's runtime directory (0711, ours) and whether we created it (then remove it)."""
    if configured:
        return _private_dir(configured, 0o711), False
    parent = _place(RUNTIME_PARENTS, 0o711, "the agent's runtime directory")
    _remove_stale(parent)
    path = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)
    os.chmod(path, 0o711)
    return path, True


def _remove_stale(parent: str) -> None:
    """Remove the runtime directories of agents that are gone (killed before cleaning up)."""
    for entry in os.scandir(parent):
        pid = entry.name.split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


@dataclass
class KernelDir:
    """``<runtime>/<kernel_id>/``: root's (0711), with the kernel's connection file and home."""

    path: Path
    uid: int | None  # None: isolation off, everything stays the agent's
    gid: int | None

    @property
    def connection_file(self) -> Path:
        return self.path / "connection.json"

    @property
    def home(self) -> Path:
        return self.path / "home"

    def create(self) -> None:
        if os.path.lexists(self.path):  # left by an agent that crashed: nothing to keep
            shutil.rmtree(self.path, ignore_errors=True)
        os.mkdir(self.path, 0o711)
        os.chmod(self.path, 0o711)
        for sub in (self.home, self.home / "tmp", self.home / ".ipython", self.home / "runtime"):
            os.mkdir(sub, 0o700)
            os.chmod(sub, 0o700)
            self._own(sub)

    def env(self) -> dict[str, str]:
        return {"HOME": str(self.home), "IPYTHONDIR": str(self.home / ".ipython"),
                "TMPDIR": str(self.home / "tmp"), "JUPYTER_RUNTIME_DIR": str(self.home / "runtime")}

    def own_connection_file(self) -> None:
        os.chmod(self.connection_file, 0o600, follow_symlinks=False)
        self._own(self.connection_file)

    def _own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class IsolatedProvisioner(LocalProvisioner):
    """``LocalProvisioner`` that starts the kernel as ``kdir.uid`` in ``kdir.home``.

    Set ``kdir`` and ``kill_timeout`` (``Agent.uid_kill_timeout``) before ``start_kernel``. Every
    Popen keyword reaches ``subprocess.Popen`` through ``launcher.launch_kernel(cmd, **kw)``
    (checked in jupyter_client 8.10).
    """

    kdir: KernelDir | None = None
    kill_timeout: float | None = None

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kdir, kill_timeout = self.kdir, self.kill_timeout
        assert kdir is not None and kill_timeout is not None, "IsolatedProvisioner.kdir or kill_timeout is not set"
        if kdir.uid is not None:  # a restart: nothing of the previous run may survive it
            await asyncio.to_thread(kill_uid, kdir.uid, kill_timeout)
        kwargs = await super().pre_launch(**kwargs)
        kdir.own_connection_file()
        kwargs["cwd"] = str(kdir.home)
        if kdir.uid is not None:
            kwargs.update(user=kdir.uid, group=kdir.gid, extra_groups=[], umask=0o077)
        return kwargs


# -- the agent's own secrets ------------------------------------------------------------------

def set_not_dumpable() -> bool:
    """``prctl(PR_SET_DUMPABLE, 0)`` (Linux, best effort): no core dumps, no ptrace by peers."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def scrub_process_memory(secrets: Iterable[str]) -> int:
    """Overwrite each secret in this process's initial argv and environ memory with ``*``.

    ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` read that memory, which neither
    ``os.environ`` nor ``sys.argv`` edits change. Linux only, best effort; returns how many
    occurrences were overwritten.
    """
    wanted = {s.encode() for s in secrets if s and len(s) >= 8}  # short: too many false hits
    if not wanted or not sys.platform.startswith("linux"):
        return 0
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 of proc(5); arg_start..env_end are fields 48..51
        arg_start, arg_end, env_start, env_end = (int(v) for v in fields[45:49])
        count = 0
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            for start, end in ((arg_start, arg_end), (env_start, env_end)):
                mem.seek(start)
                block = mem.read(end - start)
                for secret in wanted:
                    at = block.find(secret)
                    while at >= 0:
                        mem.seek(start + at)
                        mem.write(b"*" * len(secret))
                        count += 1
                        at = block.find(secret, at + len(secret))
        return count
    except (OSError, ValueError, IndexError) as exc:
        log.warning("could not scrub secrets from the process memory: %s", exc)
        return 0


def hide_secrets(secrets: Iterable[str]) -> None:
    """The agent's hardening once it has read its secrets (see the module docstring)."""
    set_not_dumpable()
    scrub_process_memory(secrets)
