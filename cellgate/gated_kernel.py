"""A kernel on the cellgate gateway, for nbclient and papermill: every cell goes through the gate.

``GatedKernelManager`` is a jupyter_client kernel manager whose kernel is a cellgate target's, started
through the gateway's Kernel Gateway API (``POST /api/kernels``, as JupyterLab's server does) with
the user's token, and ``GatedKernelClient`` speaks to it over the kernel's WebSocket
(``/api/kernels/{id}/channels``, with the token in the ``Authorization`` header). A cell that needs
review waits there as it does in JupyterLab; a rejection comes back as the cell's error, with the
reviewer's reason. The gateway and token are found as the ``cellgate`` command finds them
(``--gateway``/``CELLGATE_URL``, ``CELLGATE_TOKEN``, the file ``cellgate login`` writes), or set on the
manager (``GatedKernelManager.gateway_url`` / ``token``). Kernel names are target names.

    jupyter execute --NbClientApp.kernel_name=payments \\
        --NotebookClient.kernel_manager_class=cellgate.gated_kernel.GatedKernelManager report.ipynb
    papermill report.ipynb out.ipynb --engine cellgate -k payments -p day 2024-05-01
"""

from __future__ import annotations

import asyncio
import json
import queue
from typing import Any
from urllib.parse import quote

import httpx
from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.channelsabc import ChannelABC, HBChannelABC
from jupyter_client.jsonutil import json_default
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect
from traitlets import Unicode

from .cli.credentials import resolve

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


class GatedKernelError(RuntimeError):
    """The gateway refused or lost the kernel; the message says what it said."""


class Channel:
    """One of a kernel's channels, multiplexed over the kernel's one WebSocket."""

    def __init__(self, name: str, client: GatedKernelClient) -> None:
        self.name = name
        self.client = client
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass

    def is_alive(self) -> bool:
        return self.client.connected

    def is_beating(self) -> bool:  # the hb channel: the gateway watches the kernel itself
        return self.client.connected

    def pause(self) -> None:
        pass

    def unpause(self) -> None:
        pass

    def is_paused(self) -> bool:
        return False

    def send(self, msg: dict[str, Any]) -> None:
        self.client.send(self.name, msg)

    def msg_ready(self) -> bool:
        return not self.messages.empty()

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; ``queue.Empty`` after ``timeout`` seconds, as jupyter_client's channels."""
        if not self.messages.empty():
            return self.messages.get_nowait()
        if not self.client.connected:
            raise GatedKernelError(f"the connection to the kernel was closed: {self.client.closed_why}")
        try:
            return await asyncio.wait_for(self.messages.get(), timeout)
        except TimeoutError:
            raise queue.Empty from None

    async def get_msgs(self) -> list[dict[str, Any]]:
        found = []
        while not self.messages.empty():
            found.append(self.messages.get_nowait())
        return found


ChannelABC.register(Channel)
HBChannelABC.register(Channel)


class GatedKernelClient(AsyncKernelClient):
    """A client of a kernel on the cellgate gateway: its five channels over one WebSocket."""

    def __init__(self, gateway_url: str, token: str, kernel_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gateway_url, self.token, self.kernel_id = gateway_url, token, kernel_id
        self._socket: WebSocketClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._channels = {name: Channel(name, self) for name in CHANNELS}
        self.closed_why = ""

    @property
    def connected(self) -> bool:
        return self._socket is not None and not self.closed_why

    shell_channel = property(lambda self: self._channels["shell"])  # type: ignore[assignment]
    iopub_channel = property(lambda self: self._channels["iopub"])  # type: ignore[assignment]
    stdin_channel = property(lambda self: self._channels["stdin"])  # type: ignore[assignment]
    control_channel = property(lambda self: self._channels["control"])  # type: ignore[assignment]
    hb_channel = property(lambda self: self._channels["hb"])  # type: ignore[assignment]

    async def start_channels(self, shell: bool = True, iopub: bool = True, stdin: bool = True,  # type: ignore[override]
                             hb: bool = True, control: bool = True) -> None:
        url = self.gateway_url.replace("http", "ws", 1) + f"/api/kernels/{quote(self.kernel_id)}/channels"
        request = HTTPRequest(url, headers={"Authorization": f"token {self.token}"}, connect_timeout=30)
        try:
            self._socket = await websocket_connect(request, max_message_size=64 * 1024 * 1024)
        except Exception as exc:  # noqa: BLE001 - tornado raises HTTPClientError, OSError, ...
            raise GatedKernelError(f"cannot open kernel {self.kernel_id} at {self.gateway_url}: {exc}") from None
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._socket is not None
        while True:
            raw = await self._socket.read_message()
            if raw is None:
                code = self._socket.close_code
                self.closed_why = f"closed by the gateway ({code}: {self._socket.close_reason or 'no reason'})"
                return
            msg = json.loads(raw)
            channel = self._channels.get(msg.get("channel", ""))
            if channel is not None:
                channel.messages.put_nowait(msg)

    def send(self, channel: str, msg: dict[str, Any]) -> None:
        if not self.connected or self._socket is None:
            raise GatedKernelError(f"the connection to the kernel was closed: {self.closed_why or 'not open'}")
        wire = {**msg, "channel": channel, "buffers": []}
        self._socket.write_message(json.dumps(wire, default=json_default))

    def stop_channels(self) -> None:
        if self._socket is not None:
            self._socket.close()
        if self._reader is not None:
            self._reader.cancel()
        self.closed_why = self.closed_why or "stopped"

    @property
    def channels_running(self) -> bool:
        return self.connected

    async def _async_is_alive(self) -> bool:
        return self.connected

    is_alive = _async_is_alive  # type: ignore[assignment]


class GatedKernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager for a kernel on the gateway: what nbclient and papermill call
    (start, client, is_alive, interrupt, shutdown) goes to the gateway; nothing is started here."""

    gateway_url = Unicode("", config=True, help="the gateway (default: as the cellgate command finds it)")
    token = Unicode("", config=True, help="your cellgate token (default: as the cellgate command finds it)")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kernel_id = None
        self._client: GatedKernelClient | None = None

    @property
    def has_kernel(self) -> bool:
        return self.kernel_id is not None

    @property
    def ipykernel(self) -> bool:  # no local ipykernel options (history file) apply
        return False

    def _credentials(self) -> tuple[str, str]:
        found = resolve(self.gateway_url or None, self.token or None)
        return found.url, found.token

    def _http(self) -> httpx.AsyncClient:
        url, token = self._credentials()
        return httpx.AsyncClient(base_url=url, headers={"Authorization": f"token {token}"}, timeout=180)

    async def start_kernel(self, **_kwargs: Any) -> None:  # type: ignore[override]
        """Start a kernel on the target ``kernel_name`` (the gateway checks you may)."""
        if not self.kernel_name:
            raise GatedKernelError("no kernel name: name the target to run on (papermill -k TARGET, "
                                   "jupyter execute --NbClientApp.kernel_name=TARGET)")
        async with self._http() as http:
            r = await http.post("/api/kernels", json={"name": self.kernel_name})
        if r.status_code != 201 and r.status_code != 200:
            raise GatedKernelError(f"the gateway did not start a kernel on {self.kernel_name}: {_message(r)}")
        self.kernel_id = r.json()["id"]

    def client(self, **kwargs: Any) -> GatedKernelClient:  # type: ignore[override]
        if self.kernel_id is None:
            raise GatedKernelError("the kernel is not started")
        url, token = self._credentials()
        self._client = GatedKernelClient(url, token, self.kernel_id, parent=self, **kwargs)
        return self._client

    async def is_alive(self) -> bool:  # type: ignore[override]
        if self.kernel_id is None:
            return False
        async with self._http() as http:
            r = await http.get(f"/api/kernels/{quote(self.kernel_id)}")
        return r.status_code == 200 and r.json().get("execution_state") != "dead"

    async def interrupt_kernel(self) -> None:  # type: ignore[override]
        if self.kernel_id is not None:
            async with self._http() as http:
                await http.post(f"/api/kernels/{quote(self.kernel_id)}/interrupt")

    async def shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:  # type: ignore[override]
        if self.kernel_id is None:
            return
        async with self._http() as http:
            await http.delete(f"/api/kernels/{quote(self.kernel_id)}")
        self.kernel_id = None

    async def cleanup_resources(self, restart: bool = False) -> None:  # type: ignore[override]
        """Nothing local to clean: no connection file, no process."""


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return f"HTTP {response.status_code}"
