"""The fault tests' TCP proxy (tests/tcp_proxy.py): it forwards, cuts and stalls as it says."""

from __future__ import annotations

import socket
import threading

import pytest

from tcp_proxy import TcpProxy


@pytest.fixture
def echo_port():
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except ConnectionResetError:  # the proxy cut it
            pass


def _client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


def test_it_forwards_both_ways(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy, _client(proxy.port) as sock:
        sock.sendall(b"hello")
        assert sock.recv(100) == b"hello"
        assert proxy.connections == 1


def test_a_cut_resets_open_connections_and_refuses_new_ones_until_resumed(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy:
        with _client(proxy.port) as sock:
            sock.sendall(b"a")
            assert sock.recv(10) == b"a"
            proxy.cut()
            assert _dropped(sock)
        assert _refused(proxy.port)
        proxy.resume()
        with _client(proxy.port) as again:
            again.sendall(b"d")
            assert again.recv(10) == b"d"


def _refused(port: int) -> bool:
    """Whether a new connection is reset or closed (at once, or at its first read)."""
    try:
        sock = _client(port)
    except ConnectionResetError:
        return True
    with sock:
        return _dropped(sock)


def _dropped(sock: socket.socket) -> bool:
    """Whether the peer closed or reset ``sock`` (within its timeout)."""
    try:
        return sock.recv(10) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_a_stall_holds_bytes_until_resumed(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy, _client(proxy.port) as sock:
        sock.sendall(b"x")
        assert sock.recv(10) == b"x"
        proxy.stall()
        sock.sendall(b"held")
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.resume()
        sock.settimeout(5)
        assert sock.recv(10) == b"held"
