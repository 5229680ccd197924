"""The kernel host: Jupyter kernels the agent runs for its targets, and the relay of their messages.

One ``AsyncKernelManager`` and one ``AsyncKernelClient`` per kernel id (the id is chosen by the
gateway). Per kernel, one relay task per channel (iopub, shell, control, stdin) forwards each
message the kernel sends to ``emit`` as a ``kernel_msg`` frame, and a watcher task reports a kernel
that died by itself (``kernel_status`` ``dead``). Messages from the gateway go to the kernel
unchanged (signed with the kernel's key), so their ``msg_id`` is kept and replies are parented
to it.

Isolation (``[agent] kernel_isolation = "uid"``, the default): every kernel runs as its own uid
from the pool ``[agent] kernel_uids``, in its own directory ``<runtime>/<kernel_id>/``, with an
environment built from scratch (``kernel_env``): nothing of the agent's own environment reaches
it except the harmless ``PASSED_ENV``. When a kernel stops or dies, every process of its uid is
killed before the uid goes back to the pool (see ``isolation``).

A kernel is *ready* once a ``kernel_info_request`` of our own has been answered on iopub: that
proves the kernel runs and that our iopub subscription is live, so no early output is lost. Those
probe requests and everything parented to them stay on the agent.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager

from cellgate import protocol

from . import isolation
from .config import DEFAULT_KERNEL_UIDS, Target
from .isolation import IsolatedProvisioner, IsolationError, KernelDir, UidPool
from .timeouts import Timeouts

log = logging.getLogger(__name__)

CHANNELS_OUT = ("iopub", "shell", "control", "stdin")
CHANNELS_IN = ("shell", "control", "stdin")
#: the only variables of the agent's own environment a kernel gets (plus ``LC_*``)
PASSED_ENV = ("PATH", "LANG", "LANGUAGE", "TZ")
#: ipykernel: no history file (it would be shared, and it would keep what cells ran)
PYTHON_KERNEL_ARGS = ["--HistoryManager.hist_file=:memory:"]
#: a kernel id names the kernel's directory (the gateway's are UUIDs)
KERNEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

Emit = Callable[[protocol.Frame], object]


class KernelError(Exception):
    """A kernel request cannot be done; the message goes back to the gateway in ``reply.error``."""


def default_spec_manager() -> KernelSpecManager:
    """cellgate's kernel specs (``cellgate-sql`` and the installed ones) when available."""
    try:
        from cellgate.kernels.specs import CellgateKernelSpecManager
    except ModuleNotFoundError as exc:
        if exc.name not in ("cellgate.kernels.specs", "cellgate.kernels"):
            raise
        return KernelSpecManager()
    return CellgateKernelSpecManager()


def kernel_env(target: Target, gateway_env: Mapping[str, Any], base_env: Mapping[str, str],
               private: Mapping[str, str] | None = None,
               limits: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment of a kernel for ``target``, built from scratch.

    From the agent's environment ``base_env`` only ``PASSED_ENV`` and ``LC_*``; then what Python
    needs (``PYTHONNOUSERSITE``, and ``private``: HOME, IPYTHONDIR, TMPDIR, JUPYTER_RUNTIME_DIR
    in the kernel's own directory), the target's ``env``, the ``KERNEL_*`` variables from the
    gateway, and last the target's own connection settings, which nothing else can override.
    The gateway's policy ``limits`` (``max_rows``, ``timeout``) can only tighten the agent's
    own row cap and statement timeout.
    """
    env = {k: v for k, v in base_env.items() if k in PASSED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1")
    env.update(private or {})
    env.update(target.env)
    env.update({k: v for k, v in gateway_env.items()
                if k.startswith("KERNEL_") and isinstance(v, str)})
    env["CELLGATE_TARGET_NAME"] = target.name
    if target.url is not None:
        env["CELLGATE_TARGET_URL"] = target.url
    if target.kind == "sql":
        readonly_url = getattr(target, "readonly_url", None)
        if readonly_url:
            env["CELLGATE_TARGET_READONLY_URL"] = readonly_url
        else:
            env.pop("CELLGATE_TARGET_READONLY_URL", None)
        env["CELLGATE_ROW_LIMIT"] = str(_tighter(target.row_limit, (limits or {}).get("max_rows")))
        env["CELLGATE_STATEMENT_TIMEOUT"] = str(_tighter(target.statement_timeout, (limits or {}).get("timeout")))
        env["CELLGATE_GATED"] = "1"
    elif target.url is not None:
        env["DATABASE_URL"] = target.url
    return env


def _tighter(own: int, policy: Any) -> int:
    return min(own, policy) if isinstance(policy, int) and not isinstance(policy, bool) and policy > 0 else own


#: the longest Unix socket path (sockaddr_un.sun_path is 108 bytes on Linux, with its NUL)
MAX_SOCKET_PATH = 107


def ipc_prefix(path: Path) -> str:
    """Where a kernel's five ZeroMQ sockets go: Unix sockets ``<prefix>-1`` … ``-5`` in its home.

    Not TCP: a TCP port is picked by binding port 0 and closing it before the kernel binds it
    again, so another process on the host can take it meanwhile and the kernel dies at start; and
    a TCP port is reachable by every local user, a socket in the kernel's 0700 home only by its
    uid and the agent.
    """
    prefix = str(path / "home" / "k")
    if len(prefix) + 3 > MAX_SOCKET_PATH:
        raise KernelError(f"the runtime directory {path.parent} is too long for the kernels' Unix sockets "
                          f"({len(prefix) + 3} bytes, at most {MAX_SOCKET_PATH}): set a shorter Agent.runtime_dir")
    return prefix


@dataclass
class HostedKernel:
    kernel_id: str
    target: Target
    manager: AsyncKernelManager
    kdir: KernelDir
    client: AsyncKernelClient | None = None
    state: str = "starting"  # starting | running | restarting | dead | stopping
    probes: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class KernelHost:
    """Starts, relays, interrupts, restarts and stops the kernels of one agent.

    ``kernel_isolation`` "uid" (default) needs root or the capabilities of
    ``isolation.NEEDED_CAPS`` (else ``IsolationError``); "off" runs kernels as the agent's own
    user and logs a warning at start and at every kernel start. ``timeouts``: how long a kernel
    has to start and to exit, how often it is probed and watched, how long its uid is reclaimed.
    """

    def __init__(self, targets: Mapping[str, Target], emit: Emit, *,
                 spec_manager: KernelSpecManager | None = None,
                 base_env: Mapping[str, str] | None = None,
                 kernel_isolation: str = "uid",
                 kernel_uids: tuple[int, int] = DEFAULT_KERNEL_UIDS,
                 runtime_dir: str | None = None,
                 timeouts: Timeouts | None = None) -> None:
        if kernel_isolation not in ("uid", "off"):
            raise IsolationError(f"kernel_isolation must be 'uid' or 'off', got {kernel_isolation!r}")
        self.isolated = kernel_isolation == "uid"
        if self.isolated:
            isolation.require_privileges()
            self.uids: UidPool | None = UidPool(*kernel_uids)
        else:
            self.uids = None
            log.warning("%s", isolation.OFF_WARNING)
        self.runtime_dir, self._own_runtime_dir = isolation.runtime_root(runtime_dir)
        if self._own_runtime_dir:  # also when the agent fails before ``close``
            atexit.register(shutil.rmtree, self.runtime_dir, True)
        self.targets = dict(targets)
        self.emit = emit
        self.spec_manager = spec_manager or default_spec_manager()
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.timeouts = timeouts or Timeouts()
        self.kernels: dict[str, HostedKernel] = {}
        # CurveZMQ on the kernel's sockets when the kernelspec supports it: target data crosses them
        self.transport_encryption = "auto" if zmq.has("curve") else "disabled"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, kernel_id: str, target_name: str, env: Mapping[str, Any],
                    limits: Mapping[str, Any] | None = None) -> None:
        """Start a kernel for the target and return once it is ready."""
        if kernel_id in self.kernels:
            raise KernelError(f"kernel {kernel_id} exists already")
        target = self.targets.get(target_name)
        if target is None:
            raise KernelError(f"unknown target {target_name!r}")
        if not isinstance(kernel_id, str) or not KERNEL_ID.match(kernel_id):
            raise KernelError(f"invalid kernel id {kernel_id!r}")
        path = Path(self.runtime_dir) / kernel_id
        sockets = ipc_prefix(path)
        manager = AsyncKernelManager(kernel_name=target.kernel_name,
                                     kernel_spec_manager=self.spec_manager,
                                     transport_encryption=self.transport_encryption,
                                     shutdown_wait_time=self.timeouts.kernel_shutdown,
                                     connection_file=str(path / "connection.json"),
                                     transport="ipc", ip=sockets)
        kdir = self._kernel_dir(path, target)
        assert str(kdir.connection_file) == manager.connection_file
        kernel = HostedKernel(kernel_id, target, manager, kdir)
        self.kernels[kernel_id] = kernel
        if self.isolated:
            log.info("kernel %s: starting for target %s (%s, %s) as uid %s gid %s", kernel_id,
                     target.name, target.kind, target.dialect or "no dialect", kdir.uid, kdir.gid)
        else:
            log.warning("kernel %s: starting for target %s WITHOUT ISOLATION, as the agent's "
                        "own user (kernel_isolation = \"off\")", kernel_id, target.name)
        try:
            async with kernel.lock:
                provisioner = IsolatedProvisioner(kernel_id=kernel_id, kernel_spec=manager.kernel_spec,
                                                  parent=manager)
                provisioner.kdir = kdir
                provisioner.kill_timeout = self.timeouts.uid_kill
                manager.provisioner = provisioner
                kdir.create()
                await manager.start_kernel(
                    kernel_id=kernel_id,
                    extra_arguments=PYTHON_KERNEL_ARGS if target.kind == "python" else [],
                    env=kernel_env(target, env, self.base_env, kdir.env(), limits))
                kernel.client = manager.client()
                kernel.client.start_channels()
                kernel.tasks = [asyncio.create_task(self._relay(kernel, ch)) for ch in CHANNELS_OUT]
                await self._wait_ready(kernel)
                kernel.state = "running"
                kernel.tasks.append(asyncio.create_task(self._watch(kernel)))
        except BaseException as exc:
            self.kernels.pop(kernel_id, None)
            await self._dispose(kernel)
            if isinstance(exc, IsolationError):
                raise KernelError(str(exc)) from exc
            if isinstance(exc, Exception) and not isinstance(exc, KernelError):
                hint = ""
                if isinstance(exc, PermissionError) and kdir.uid is not None:
                    hint = (f" (the kernel runs as uid {kdir.uid}: the Python of the agent's "
                            "venv, its base installation and the directories above them must be "
                            "readable and searchable by others; see docs/agent.md)")
                log.error("kernel %s: failed to start: %s%s", kernel_id, exc, hint)
                raise KernelError(f"kernel failed to start: {exc}{hint}") from exc
            raise
        log.info("kernel %s: ready", kernel_id)

    async def interrupt(self, kernel_id: str) -> None:
        kernel = self._get(kernel_id)
        await kernel.manager.interrupt_kernel()
        log.info("kernel %s: interrupted", kernel_id)

    async def restart(self, kernel_id: str) -> None:
        """Restart (state is lost); return once ready again. Also revives a dead kernel."""
        kernel = self._get(kernel_id)
        async with kernel.lock:
            kernel.state = "restarting"
            try:
                await kernel.manager.restart_kernel(now=False)
                await self._wait_ready(kernel)
            except Exception as exc:
                kernel.state = "dead"
                raise KernelError(f"restart failed: {exc}") from exc
            kernel.state = "running"
        log.info("kernel %s: restarted", kernel_id)

    async def stop(self, kernel_id: str) -> None:
        kernel = self._get(kernel_id)
        async with kernel.lock:
            kernel.state = "stopping"
            self.kernels.pop(kernel_id, None)
            await self._dispose(kernel)
        log.info("kernel %s: stopped", kernel_id)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(k) for k in list(self.kernels)), return_exceptions=True)

    def close(self) -> None:
        """Remove the runtime directory when the host made it (call after ``stop_all``)."""
        if self._own_runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _kernel_dir(self, path: Path, target: Target) -> KernelDir:
        if self.uids is None:
            return KernelDir(path, None, None)
        try:
            uid = self.uids.allocate()
        except IsolationError as exc:
            raise KernelError(str(exc)) from None
        return KernelDir(path, uid, target.kernel_gid if target.kernel_gid is not None else uid)

    async def _dispose(self, kernel: HostedKernel) -> None:
        try:
            if kernel.manager.has_kernel:
                await kernel.manager.shutdown_kernel(now=False)
        except Exception as exc:
            log.warning("kernel %s: graceful shutdown failed (%s), killing it", kernel.kernel_id, exc)
            await kernel.manager.shutdown_kernel(now=True)
        finally:
            for task in kernel.tasks:
                task.cancel()
            await asyncio.gather(*kernel.tasks, return_exceptions=True)
            if kernel.client is not None:
                kernel.client.stop_channels()
            await self._reclaim(kernel)

    async def _reclaim(self, kernel: HostedKernel) -> None:
        """Kill what the kernel's uid left running, remove its files, give the uid back."""
        uid = kernel.kdir.uid
        if uid is not None:
            await asyncio.to_thread(isolation.kill_uid, uid, self.timeouts.uid_kill)
            await asyncio.to_thread(isolation.remove_uid_files, uid)
        await asyncio.to_thread(kernel.kdir.remove)
        if uid is not None and self.uids is not None:
            self.uids.release(uid)

    # -- messages ----------------------------------------------------------------------------

    def deliver(self, kernel_id: str, channel: str, msg: Any) -> None:
        """Send a Jupyter message from the gateway to the kernel, unchanged."""
        kernel = self._get(kernel_id)
        if channel not in CHANNELS_IN:
            raise KernelError(f"cannot send on channel {channel!r}")
        if not isinstance(msg, dict) or not isinstance(msg.get("header"), dict) \
                or "msg_id" not in msg["header"] or "msg_type" not in msg["header"]:
            raise KernelError("msg must be a Jupyter message with header.msg_id and msg_type")
        if kernel.client is None:
            raise KernelError(f"kernel {kernel_id} is not ready")
        msg = dict(msg)
        for key in ("parent_header", "metadata", "content"):
            if not isinstance(msg.get(key), dict):
                msg[key] = {}
        msg.pop("buffers", None)
        self._send(kernel, channel, msg)

    def _send(self, kernel: HostedKernel, channel: str, msg: dict[str, Any]) -> None:
        """Sign and send ``msg`` as is (its header, hence its ``msg_id``, is kept).

        Not ``Session.send``: it writes through a blocking shadow of the asyncio socket, which
        swallows ZMQ's edge-triggered wake-up, and the relay task reading that socket then
        missed the reply (seen: an ``execute_reply`` lost about one run in ten). Sending on the
        asyncio socket itself wakes the waiting ``recv_multipart``.
        """
        assert kernel.client is not None
        socket = getattr(kernel.client, f"{channel}_channel").socket
        parts = kernel.client.session.serialize(msg)
        future = socket.send_multipart(parts)

        def report(f: Any) -> None:
            if not (f.cancelled() or f.exception() is None):
                log.warning("kernel %s: sending on %s failed: %s", kernel.kernel_id, channel, f.exception())

        future.add_done_callback(report)

    async def _relay(self, kernel: HostedKernel, channel_name: str) -> None:
        assert kernel.client is not None
        channel = getattr(kernel.client, f"{channel_name}_channel")
        session = kernel.client.session
        while True:
            try:
                # recv_multipart, not get_msg: a poll() misses wake-ups when we also send
                _, parts = session.feed_identities(await channel.socket.recv_multipart())
                msg = session.deserialize(parts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a malformed or unsigned message: skip it
                log.warning("kernel %s: unreadable %s message: %s", kernel.kernel_id,
                            channel_name, exc)
                continue
            parent_id = (msg.get("parent_header") or {}).get("msg_id")
            if parent_id in kernel.probes:
                if channel_name == "iopub" and not kernel.probes[parent_id].done():
                    kernel.probes[parent_id].set_result(None)
                continue
            msg.pop("buffers", None)
            self.emit(protocol.KernelMsg(kernel_id=kernel.kernel_id, channel=channel_name, msg=msg))

    async def _wait_ready(self, kernel: HostedKernel) -> None:
        assert kernel.client is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.kernel_start
        while True:
            probe = kernel.client.session.msg("kernel_info_request")
            future: asyncio.Future[None] = loop.create_future()
            kernel.probes[probe["header"]["msg_id"]] = future
            self._send(kernel, "shell", probe)
            try:
                await asyncio.wait_for(future, self.timeouts.kernel_probe)
                return
            except TimeoutError:
                pass
            if not await kernel.manager.is_alive():
                raise KernelError("the kernel died before it was ready")
            if loop.time() > deadline:
                raise KernelError(f"the kernel was not ready within {self.timeouts.kernel_start:g} s "
                                  "(Agent.kernel_start_timeout)")

    async def _watch(self, kernel: HostedKernel) -> None:
        while True:
            await asyncio.sleep(self.timeouts.kernel_watch)
            if kernel.state != "running" or kernel.lock.locked():
                continue
            if await kernel.manager.is_alive():
                continue
            provisioner = kernel.manager.provisioner
            code = await provisioner.poll() if provisioner is not None else None
            kernel.state = "dead"
            reason = f"the kernel process exited (code {code})"
            log.warning("kernel %s: %s", kernel.kernel_id, reason)
            if kernel.kdir.uid is not None:  # what it left behind must not outlive it
                await asyncio.to_thread(isolation.kill_uid, kernel.kdir.uid, self.timeouts.uid_kill)
            self.emit(protocol.KernelStatus(kernel_id=kernel.kernel_id, state="dead", reason=reason))

    def _get(self, kernel_id: str) -> HostedKernel:
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            raise KernelError(f"unknown kernel {kernel_id}")
        return kernel
