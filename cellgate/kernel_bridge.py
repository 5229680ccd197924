"""A local kernel that is a cellgate target's: any Jupyter tool, unmodified, runs cells through the gate.

``cellgate kernelspecs install`` writes a kernel spec ``cellgate-<target>`` for each target you may
use; its command is this bridge, which Jupyter starts as it starts any kernel (``jupyter execute
--kernel_name=cellgate-payments nb.ipynb``, ``papermill in.ipynb out.ipynb -k cellgate-payments``,
``jupyter console --kernel cellgate-payments``, nbclient). The bridge binds the five ZeroMQ sockets
of its connection file, starts a kernel on the target through the gateway (``POST /api/kernels``,
with your token) and relays every message both ways over that kernel's WebSocket, re-signed with
the connection file's key on the local side. Nothing runs here: the gateway gates every cell as it
does for JupyterLab (a write waits for review, a rejection is the cell's error with the reason).
SIGINT interrupts the remote kernel; a shutdown request, SIGTERM or the end of the gateway's
connection stops it and ends the bridge. The gateway and token are found as the ``cellgate``
command finds them (``CELLGATE_URL``/``CELLGATE_TOKEN`` or the file ``cellgate login`` writes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

import httpx
import zmq
import zmq.asyncio
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, websocket_connect

from .cli.credentials import CredentialsError, resolve

log = logging.getLogger("cellgate.kernel_bridge")

#: channel → ZeroMQ socket type on the kernel's side of a connection file
SOCKETS = {"shell": zmq.ROUTER, "control": zmq.ROUTER, "stdin": zmq.ROUTER, "iopub": zmq.PUB, "hb": zmq.REP}


class BridgeError(RuntimeError):
    """The gateway refused the kernel; the message says what it said."""


class Bridge:
    def __init__(self, connection: dict[str, Any], target: str, url: str, token: str) -> None:
        self.connection, self.target, self.url, self.token = connection, target, url, token
        key = str(connection.get("key", "")).encode()
        self.session = Session(key=key, signature_scheme=connection.get("signature_scheme", "hmac-sha256"))
        self.context = zmq.asyncio.Context()
        self.sockets: dict[str, zmq.asyncio.Socket] = {}
        self.idents: dict[str, list[bytes]] = {}  # a request's msg_id → the identities its replies go to
        self.kernel_id = ""
        self.socket: WebSocketClientConnection | None = None
        self.done = asyncio.Event()

    def _address(self, channel: str) -> str:
        port = self.connection[f"{channel}_port"]
        if self.connection.get("transport", "tcp") == "ipc":
            return f"ipc://{self.connection['ip']}-{port}"
        return f"tcp://{self.connection['ip']}:{port}"

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"token {self.token}"}, timeout=180)

    async def start(self) -> None:
        for channel, kind in SOCKETS.items():
            sock = self.context.socket(kind)
            sock.linger = 1000
            sock.bind(self._address(channel))
            self.sockets[channel] = sock
        async with self._http() as http:
            r = await http.post("/api/kernels", json={"name": self.target})
        if r.status_code not in (200, 201):
            raise BridgeError(f"the gateway at {self.url} did not start a kernel on {self.target}: {_message(r)}")
        self.kernel_id = r.json()["id"]
        ws = self.url.replace("http", "ws", 1) + f"/api/kernels/{self.kernel_id}/channels"
        self.socket = await websocket_connect(HTTPRequest(ws, headers={"Authorization": f"token {self.token}"}),
                                              max_message_size=64 * 1024 * 1024)
        log.info("kernel %s on %s at %s", self.kernel_id, self.target, self.url)

    async def run(self) -> None:
        jobs = [asyncio.ensure_future(self._from_gateway()), asyncio.ensure_future(self._heartbeat()),
                *(asyncio.ensure_future(self._from_local(ch)) for ch in ("shell", "control", "stdin"))]
        await self.done.wait()
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    async def _from_local(self, channel: str) -> None:
        sock = self.sockets[channel]
        while True:
            frames = await sock.recv_multipart(copy=True)
            idents, rest = self.session.feed_identities(frames, copy=True)
            try:
                msg = self.session.deserialize(rest, content=True, copy=True)
            except ValueError as exc:  # a bad signature: not from a client holding the key
                log.warning("dropped a %s message that is not signed with this kernel's key: %s", channel, exc)
                continue
            self.idents[msg["header"]["msg_id"]] = list(idents)
            if channel == "shell" and len(self.idents) > 10000:  # bounded: the oldest requests are long answered
                for old in list(self.idents)[:5000]:
                    del self.idents[old]
            wire = {"header": msg["header"], "parent_header": msg["parent_header"], "metadata": msg["metadata"],
                    "content": msg["content"], "channel": channel, "buffers": []}
            assert self.socket is not None
            await self.socket.write_message(json.dumps(wire, default=json_default))
            if msg["header"].get("msg_type") == "shutdown_request" and not msg["content"].get("restart"):
                asyncio.get_running_loop().call_later(2.0, self.done.set)  # after its reply, or without one

    async def _from_gateway(self) -> None:
        assert self.socket is not None
        while True:
            raw = await self.socket.read_message()
            if raw is None:
                log.warning("the gateway closed the kernel's connection (%s: %s)", self.socket.close_code,
                            self.socket.close_reason)
                self.done.set()
                return
            if not isinstance(raw, str):
                continue
            msg = json.loads(raw)
            channel = msg.pop("channel", "")
            msg.pop("buffers", None)
            if channel == "iopub":
                self.session.send(self.sockets["iopub"], msg)
            elif channel in ("shell", "control", "stdin"):
                parent = (msg.get("parent_header") or {}).get("msg_id", "")
                idents = self.idents.get(parent)
                if idents is None:
                    log.debug("a %s reply to no request of ours (%s): dropped", channel, parent)
                    continue
                self.session.send(self.sockets[channel], msg, ident=idents)
                if msg.get("msg_type") == "shutdown_reply":
                    self.done.set()

    async def _heartbeat(self) -> None:
        sock = self.sockets["hb"]
        while True:
            await sock.send(await sock.recv())

    async def interrupt(self) -> None:
        async with self._http() as http:
            await http.post(f"/api/kernels/{self.kernel_id}/interrupt")

    async def stop(self) -> None:
        if self.socket is not None:
            self.socket.close()
        if self.kernel_id:
            async with self._http() as http:
                await http.delete(f"/api/kernels/{self.kernel_id}")
        for sock in self.sockets.values():
            sock.close(linger=0)
        self.context.term()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or response.text)
    except ValueError:
        return f"HTTP {response.status_code}"


async def _main(connection_file: str, target: str) -> int:
    try:
        creds = resolve()
        with open(connection_file, encoding="utf-8") as f:
            connection = json.load(f)
    except (CredentialsError, OSError, ValueError) as exc:
        print(f"cellgate kernel bridge: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    bridge = Bridge(connection, target, creds.url, creds.token)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, bridge.done.set)
    loop.add_signal_handler(signal.SIGINT, lambda: asyncio.ensure_future(bridge.interrupt()))
    try:
        await bridge.start()
        await bridge.run()
    except (BridgeError, OSError, httpx.HTTPError) as exc:
        print(f"cellgate kernel bridge: {exc}", file=sys.stderr)
        return 1
    finally:
        await bridge.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cellgate.kernel_bridge",
                                     description="A Jupyter kernel that is a cellgate target's (see cellgate kernelspecs)")
    parser.add_argument("--target", required=True)
    parser.add_argument("-f", "--connection-file", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(_main(args.connection_file, args.target))


if __name__ == "__main__":
    sys.exit(main())
