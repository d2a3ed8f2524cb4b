"""A loopback TCP proxy a test can tell to cut every connection.

Put it between a transport and its broker to show that the transport
survives a dropped connection::

    with TcpProxy("127.0.0.1", 5672) as proxy:
        transport = open_transport(f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2f", ...)
        ...
        proxy.cut()      # every open connection is closed, on both sides
        ...              # new connections are still accepted and forwarded

``pause()`` stops forwarding without closing anything (the broker and the
client both see silence, as on a dead network path, so heartbeats time
out); ``resume()`` carries on where it stopped.

One thread forwards every connection with non-blocking sockets and a
selector; it needs nothing beyond the standard library and listens on the
loopback interface only.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType

__all__ = ["TcpProxy"]

#: Bytes one side may have queued for the other before the proxy stops reading it.
_HIGH_WATER = 1 << 20
_CHUNK = 1 << 16


class _Side:
    """One socket of a proxied connection and what waits to be written to it."""

    __slots__ = ("out", "peer", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()
        self.peer: _Side | None = None


class TcpProxy:
    """Forwards ``host:port`` (loopback, ephemeral port) to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.connect_timeout = connect_timeout
        self._listener = socket.create_server((host, port))
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._commands: list[tuple[Callable[[], object], threading.Event]] = []
        self._lock = threading.Lock()
        self._sides: set[_Side] = set()
        self._paused = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: How many connections were accepted, and how many were cut, so far.
        self.accepted = 0
        self.cuts = 0

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> TcpProxy:
        if self._thread is None:
            self._selector.register(self._listener, selectors.EVENT_READ, None)
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
            self._thread = threading.Thread(target=self._run, name="courier-tcp-proxy", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Cut everything, stop the thread and release every socket."""
        if self._thread is not None and self._thread.is_alive():
            self._call(self._stop)
            self._thread.join(timeout=5)
        self._thread = None
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- what a test does ------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def connections(self) -> int:
        """How many proxied connections are open now."""
        return self._call(lambda: len(self._sides) // 2)

    def cut(self) -> int:
        """Close every current connection, both sides; return how many were cut.

        The proxy keeps listening: a client that reconnects gets through.
        """
        return self._call(self._cut_all)

    def pause(self) -> None:
        """Stop forwarding bytes (connections stay open, and silent)."""
        self._call(lambda: self._set_paused(True))

    def resume(self) -> None:
        """Forward again whatever was held back, and everything after it."""
        self._call(lambda: self._set_paused(False))

    # -- the forwarding thread -------------------------------------------------

    def _call(self, command: Callable[[], object]) -> int:
        """Run ``command`` on the forwarding thread and wait for it."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the proxy is not running (use it as a context manager)")
        done = threading.Event()
        result: list[object] = []
        with self._lock:
            self._commands.append((lambda: result.append(command()), done))
        self._wake_w.send(b"\0")
        if not done.wait(timeout=5):
            raise RuntimeError("the proxy thread did not answer")
        value = result[0] if result else 0
        return value if isinstance(value, int) else 0

    def _run(self) -> None:
        while not self._stopping:
            for key, events in self._selector.select(timeout=1.0):
                sock = key.fileobj
                if sock is self._wake_r:
                    self._run_commands()
                elif sock is self._listener:
                    self._accept()
                elif isinstance(key.data, _Side):
                    self._service(key.data, events)
        self._cut_all()

    def _run_commands(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        with self._lock:
            commands, self._commands = self._commands, []
        for command, done in commands:
            try:
                command()
            finally:
                done.set()

    def _stop(self) -> None:
        self._stopping = True

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError:
            client.close()
            return
        self.accepted += 1
        sides = _Side(client), _Side(upstream)
        sides[0].peer, sides[1].peer = sides[1], sides[0]
        for side in sides:
            side.sock.setblocking(False)
            side.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sides.add(side)
            # Registered only with something to wait for: while paused that is
            # nothing, and a selector refuses an empty interest.
            self._update(side)

    def _interest(self, side: _Side) -> int:
        events = 0
        peer = side.peer
        if not self._paused:
            if peer is not None and len(peer.out) < _HIGH_WATER:
                events |= selectors.EVENT_READ
            if side.out:
                events |= selectors.EVENT_WRITE
        return events

    def _update(self, side: _Side) -> None:
        if side not in self._sides:
            return
        events = self._interest(side)
        if events:
            try:
                self._selector.modify(side.sock, events, side)
            except KeyError:
                self._selector.register(side.sock, events, side)
        else:
            with contextlib.suppress(KeyError):
                self._selector.unregister(side.sock)

    def _service(self, side: _Side, events: int) -> None:
        peer = side.peer
        if events & selectors.EVENT_READ and peer is not None:
            try:
                data = side.sock.recv(_CHUNK)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._close_pair(side)
                return
            if data:
                peer.out += data
                self._flush(peer)
        if events & selectors.EVENT_WRITE and side in self._sides:
            self._flush(side)
        if side in self._sides:
            self._update(side)
            if peer is not None:
                self._update(peer)

    def _flush(self, side: _Side) -> None:
        if not side.out or self._paused:
            return
        try:
            sent = side.sock.send(side.out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close_pair(side)
            return
        del side.out[:sent]
        self._update(side)

    def _close_pair(self, side: _Side) -> None:
        for one in (side, side.peer):
            if one is None or one not in self._sides:
                continue
            self._sides.discard(one)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(one.sock)
            with contextlib.suppress(OSError):
                one.sock.shutdown(socket.SHUT_RDWR)
            one.sock.close()

    def _cut_all(self) -> int:
        clients = [side for side in self._sides if side.peer is not None]
        pairs = len(clients) // 2
        for side in clients:
            self._close_pair(side)
        self.cuts += pairs
        return pairs

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        for side in list(self._sides):
            if not paused:
                self._flush(side)
            self._update(side)
