"""A TCP proxy on loopback that a fault test can cut or stall (between the gateway and its store, or
an agent and the gateway).

``TcpProxy(upstream_port)`` listens on ``127.0.0.1:<proxy.port>`` and forwards every connection to
``127.0.0.1:<upstream_port>``, in threads of its own (it works the same from sync and async tests):

- :meth:`cut`: every open connection is reset at once and new ones are refused (accepted, then
  reset) until :meth:`resume`, as when a link or a server goes away;
- :meth:`stall`: connections stay open but no byte moves either way, and new ones are accepted
  but not forwarded, until :meth:`resume`, as when a server or a network hangs (what was held
  back is then delivered, in order);
- :meth:`close`: stop and reset everything.

``proxy.connections`` counts the connections accepted so far (a test can check that a client
reconnected).
"""

from __future__ import annotations

import socket
import struct
import threading
from types import TracebackType

CHUNK = 65536


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a dropped link looks to the peer. ``SHUT_RD`` first wakes
    a thread blocked reading it (a plain close would not, and nothing would be sent)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._cut = False
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True).start()

    # -- faults --------------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until :meth:`resume`."""
        with self._lock:
            self._cut = True
            doomed = list(self._open)
            self._open.clear()
        for sock in doomed:
            _reset(sock)

    def stall(self) -> None:
        """Hold every byte, both ways, until :meth:`resume`."""
        self._flowing.clear()

    def resume(self) -> None:
        with self._lock:
            self._cut = False
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._flowing.set()
        try:
            self._listener.close()
        except OSError:
            pass

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    # -- forwarding ----------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                _reset(client)
                continue
            self.connections += 1
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self._flowing.wait()  # a stalled proxy does not even reach the server
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self._cut or self._closed:
                _reset(client)
                _reset(server)
                return
            self._open.update((client, server))
        for src, dst in ((client, server), (server, client)):
            threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                gone = src in self._open or dst in self._open
                self._open.discard(src)
                self._open.discard(dst)
            if gone:
                for sock in (src, dst):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    sock.close()
