"""courier.testing.proxy: forwards bytes, cuts connections, pauses and resumes."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING

import pytest

from courier.testing.proxy import TcpProxy

if TYPE_CHECKING:
    from collections.abc import Iterator


class EchoServer:
    """A loopback server that echoes every byte back, one thread per client."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.clients: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.accepter = threading.Thread(target=self._accept, daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.clients.append(client)
            thread = threading.Thread(target=self._echo, args=(client,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _echo(self, client: socket.socket) -> None:
        with client:
            while True:
                try:
                    data = client.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                client.sendall(data)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.accepter.join(timeout=5)
        with self.lock:
            for client in self.clients:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
        for thread in self.threads:
            thread.join(timeout=5)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def connect(proxy: TcpProxy) -> socket.socket:
    client = socket.create_connection(proxy.address, timeout=5)
    return client


def read_exactly(client: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = client.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_forwards_both_ways(echo: EchoServer) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy, connect(proxy) as client:
        assert proxy.port != echo.port
        client.sendall(b"hello")
        assert read_exactly(client, 5) == b"hello"
        big = bytes(range(256)) * 20_000  # 5 MB: more than any socket buffer
        sender = threading.Thread(target=client.sendall, args=(big,))
        sender.start()
        assert read_exactly(client, len(big)) == big
        sender.join()
        assert proxy.connections == 1


def test_cut_closes_every_connection_and_keeps_accepting(echo: EchoServer) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy:
        first, second = connect(proxy), connect(proxy)
        with first, second:
            for client in (first, second):
                client.sendall(b"x")
                assert read_exactly(client, 1) == b"x"
            assert proxy.cut() == 2
            for client in (first, second):
                with contextlib.suppress(ConnectionResetError):
                    assert client.recv(1) == b""
            assert proxy.connections == 0
            assert proxy.cuts == 2
        with connect(proxy) as again:
            again.sendall(b"after")
            assert read_exactly(again, 5) == b"after"
        assert proxy.accepted == 3


def test_pause_holds_bytes_until_resume(echo: EchoServer) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy, connect(proxy) as client:
        proxy.pause()
        client.sendall(b"held")
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(4)
        proxy.resume()
        client.settimeout(5)
        assert read_exactly(client, 4) == b"held"


def test_closing_the_upstream_closes_the_client(echo: EchoServer) -> None:
    with TcpProxy("127.0.0.1", echo.port) as proxy, connect(proxy) as client:
        client.sendall(b"x")
        assert read_exactly(client, 1) == b"x"
        with echo.lock:
            upstream = echo.clients[-1]
        upstream.shutdown(socket.SHUT_RDWR)
        client.settimeout(5)
        assert client.recv(1) == b""


def test_an_unreachable_target_drops_the_client() -> None:
    spare = socket.create_server(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()
    with TcpProxy("127.0.0.1", port) as proxy, connect(proxy) as client:
        client.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            assert client.recv(1) == b""
        assert proxy.accepted == 0


def test_used_without_start_it_says_so() -> None:
    proxy = TcpProxy("127.0.0.1", 1)
    try:
        with pytest.raises(RuntimeError, match="not running"):
            proxy.cut()
    finally:
        proxy.close()


def test_a_connection_accepted_while_paused_waits_for_resume() -> None:
    """Clients that reconnect at once (HTTP, redis-py) connect while the path is silent."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with TcpProxy("127.0.0.1", port) as proxy:
            proxy.pause()
            client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            upstream, _ = server.accept()
            client.sendall(b"during the pause")
            upstream.settimeout(0.3)
            with pytest.raises(TimeoutError):
                upstream.recv(100)
            proxy.resume()
            upstream.settimeout(5)
            assert upstream.recv(100) == b"during the pause"
            client.close()
            upstream.close()
