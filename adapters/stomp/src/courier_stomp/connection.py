"""Everything stomp.py: one connection, its listener thread, receipts and deliveries.

A :class:`Session` wraps one ``stomp.Connection12``. stomp.py reads the
socket on a thread of its own and calls the session's listener there:
RECEIPT frames settle the :class:`~courier_stomp.receipts.ReceiptBook`,
MESSAGE frames go into one buffer per subscribed queue that :meth:`take`
reads, ERROR frames and a closed socket end the session. The worker thread
only writes frames (stomp.py serialises them on the socket) and waits.
Heart-beats run on stomp.py's own heart-beat thread, so a handler that runs
for minutes never costs the connection.

A transport uses two sessions: one publishes (every SEND waits for its
receipt) and one consumes (SUBSCRIBE with ``ack:client-individual``, ACK and
NACK): RabbitMQ closes a connection after an ERROR frame, and a refused
SEND must not take the consumer's unacknowledged messages down with it. A
third, short-lived session declares subscription queues, see
:meth:`Session.declare`.

A session is used once: when its connection ends, everything outstanding
fails with :class:`~courier.errors.ConnectionLost`, the buffered deliveries
are dropped (the broker takes unacknowledged messages back when a
connection closes) and the transport opens a new session, with a new
generation, on its next call. Broker differences live in
:mod:`courier_stomp.flavors`, header mapping in :mod:`courier_stomp.wire`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import stomp  # type: ignore[import-untyped]
import stomp.utils as stomp_utils  # type: ignore[import-untyped]
from stomp.exception import StompException  # type: ignore[import-untyped]

from courier.errors import ConnectionLost, TransportError
from courier_stomp.endpoint import Endpoint
from courier_stomp.receipts import Batch, ReceiptBook

__all__ = ["BrokerError", "Delivery", "Session"]

logger = logging.getLogger("courier.stomp")


class BrokerError(TransportError):
    """The broker answered a frame with an ERROR."""


#: What stomp.py raises when a frame cannot be written: its own errors, the
#: socket's, and an AttributeError when its receiver thread dropped the
#: socket between stomp.py's check and its write.
_SEND_ERRORS = (StompException, OSError, AttributeError, ValueError)

#: A delivery: the queue it came from, its ack id, STOMP headers and body.
Delivery = tuple[str, str, dict[str, str], bytes]


class _Listener(stomp.ConnectionListener):  # type: ignore[misc]
    """stomp.py's callbacks, run on its receiver thread; each hands over to the session."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def on_connected(self, frame: Any) -> None:
        self.session._connected.set()

    def on_receipt(self, frame: Any) -> None:
        self.session._on_receipt(frame.headers.get("receipt-id", ""))

    def on_message(self, frame: Any) -> None:
        self.session._on_message(frame.headers, frame.body)

    def on_error(self, frame: Any) -> None:
        self.session._on_error(frame.headers, frame.body)

    def on_disconnected(self) -> None:
        self.session._lose("the connection was closed")

    def on_heartbeat_timeout(self) -> None:
        self.session._lose("no heart-beat from the broker in time")


class Session:
    """One STOMP connection; see the module docstring."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        generation: int,
        role: str,
        receipt_window: int = 1000,
        mask: Callable[[str], str] = str,
        name: str = "stomp",
    ) -> None:
        self.endpoint = endpoint
        self.generation = generation
        self.role = role
        self._mask = mask
        self._name = name
        #: Why the connection ended (None while it is alive).
        self.lost: str | None = None
        self._closing = False
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._refused: str | None = None
        self._ids = itertools.count(1)
        self._prefix = f"g{generation}-"
        self.receipts = ReceiptBook(receipt_window)
        # Consuming: buffers shared with the receiver thread under ``_cond``.
        self._cond = threading.Condition()
        self._waiters = 0
        self._buffers: dict[str, deque[Delivery]] = {}
        #: Subscription id -> queue, and queue -> subscription id.
        self._subscriptions: dict[str, str] = {}
        self.subscribed: dict[str, str] = {}
        #: Ack id -> queue, for what this session holds unsettled.
        self._unsettled: dict[str, str] = {}
        #: ACK and NACK frames sent, for tests and diagnostics.
        self.settled = 0
        self._conn = self._connection()

    def _connection(self) -> Any:
        endpoint = self.endpoint
        conn = stomp.Connection12(
            [(endpoint.host, endpoint.port)],
            prefer_localhost=False,
            try_loopback_connect=False,
            reconnect_attempts_max=1,
            timeout=endpoint.connect_timeout,
            heartbeats=(endpoint.heartbeat_ms, endpoint.heartbeat_ms),
            vhost=endpoint.vhost,
            auto_decode=False,
            heart_beat_receive_scale=2.0,
        )
        if endpoint.tls is not None:
            conn.set_ssl(for_hosts=[(endpoint.host, endpoint.port)], **endpoint.tls)
        conn.set_listener("courier", _Listener(self))
        return conn

    # -- lifecycle (caller's thread) -------------------------------------------

    def lost_error(self) -> ConnectionLost:
        return ConnectionLost(
            f"the STOMP connection to the broker was lost: {self.lost or 'closed'}"
        )

    def open(self) -> None:
        """Connect and log in, or raise ConnectionLost (never showing the password)."""
        endpoint = self.endpoint
        timeout = endpoint.connect_timeout
        try:
            # connect() starts stomp.py's transport (socket and receiver thread) itself.
            self._conn.connect(
                endpoint.username,
                endpoint.password,
                wait=False,
                headers=dict(endpoint.connect_headers),
            )
        except _SEND_ERRORS as error:
            self._abandon()
            reason = self._mask(str(error) or type(error).__name__)
            raise ConnectionLost(
                f"could not connect to the STOMP broker at {endpoint.address}: {reason}"
            ) from None
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.05):
            if self._refused is not None or self.lost is not None or time.monotonic() > deadline:
                self._abandon()
                reason = self._refused or self.lost or f"no CONNECTED frame within {timeout:g}s"
                raise ConnectionLost(
                    f"could not connect to the STOMP broker at {endpoint.address}: {reason}"
                )

    def close(self, timeout: float | None = None) -> None:
        """DISCONNECT (waiting a bounded time for its receipt), then drop the socket.

        The broker takes back whatever this session held unacknowledged.
        """
        self._closing = True
        said_goodbye = False
        if self.lost is None:
            receipt = self._receipt_id()
            batch = Batch(["disconnect"])
            if self.receipts.expect(receipt, batch, 0, 1.0):
                try:
                    self._conn.send_frame("DISCONNECT", {"receipt": receipt})
                except _SEND_ERRORS:
                    self.receipts.forget(receipt, "not sent")
                limit = timeout if timeout is not None else self.endpoint.connect_timeout
                said_goodbye = not batch.wait(limit)
        self._lose("closed")
        self._abandon(said_goodbye)

    def _abandon(self, said_goodbye: bool = False) -> None:
        """Stop stomp.py's threads; after a DISCONNECT receipt the broker closes the socket."""
        transport = self._conn.transport
        thread = getattr(transport, "io_thread", None)
        if thread is threading.current_thread():
            thread = None
        if said_goodbye and thread is not None:
            thread.join(1.0)
        if thread is None or thread.is_alive():
            try:
                transport.disconnect_socket()
            except Exception as error:  # pragma: no cover - stomp.py's own cleanup failed
                logger.debug("closing the STOMP socket failed: %s", error)
            if thread is not None:
                thread.join(2.0)

    # -- the receiver thread -------------------------------------------------

    def _receipt_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    def _on_receipt(self, receipt: str) -> None:
        self.receipts.settle(receipt)

    def _on_message(self, headers: dict[str, str], body: bytes | None) -> None:
        queue = self._subscriptions.get(headers.get("subscription", ""))
        ack = headers.get("ack")
        if queue is None or ack is None or self.lost is not None:
            return  # a declaration's subscription: the broker takes it back at close
        self._unsettled[ack] = queue
        self._buffers[queue].append((queue, ack, headers, body or b""))
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def _on_error(self, headers: Mapping[str, str], body: bytes | None) -> None:
        text = headers.get("message", "error")
        if body:
            detail = body.decode("utf-8", "replace").strip()
            if detail and detail != text:
                text = f"{text}: {detail}"
        text = self._mask(text[:500])
        if not self._connected.is_set():
            self._refused = text
        self._lose(f"the broker sent an ERROR frame: {text}")

    def _lose(self, reason: str) -> None:
        """The session is over: fail what is outstanding, wake the waiters. Any thread."""
        with self._lock:
            if self.lost is not None:
                return
            self.lost = self._mask(reason)
        if not self._closing:
            logger.debug("STOMP %s session %d lost: %s", self.role, self.generation, self.lost)
        self.receipts.fail(self.lost)
        with self._cond:
            for buffer in self._buffers.values():
                buffer.clear()
            self._unsettled.clear()
            self._cond.notify_all()

    # -- writing -------------------------------------------------------------

    def _write(self, frames: Sequence[tuple[str, dict[str, str], bytes]]) -> None:
        """Send ``frames`` (command, headers, body) in one socket write.

        stomp.py writes each frame with a ``sendall`` of its own; a batch of
        ACKs or SENDs written one by one costs a system call and a hand-over
        of the GIL to the receiver thread per frame. Here stomp.py still
        escapes and encodes every frame (as its ``send_frame`` would); only
        the write is shared. A TLS connection, whose writes stomp.py's own
        thread performs, sends frame by frame.
        """
        conn = self._conn
        transport = conn.transport
        if len(frames) == 1 or not transport.blocking:
            for command, headers, body in frames:
                conn.send_frame(command, headers, body)
            return
        chunks: list[bytes] = []
        for command, headers, body in frames:
            conn._escape_headers(headers)
            chunks += stomp_utils.convert_frame(stomp_utils.Frame(command, headers, body))
        transport.send(stomp_utils.pack(chunks))

    # -- publishing ----------------------------------------------------------

    def publish(
        self,
        ids: Sequence[str],
        frame: Callable[[int], tuple[str, bytes, dict[str, str]]],
        timeout: float,
    ) -> dict[str, str]:
        """SEND ``frame(i)`` for each id with a receipt; wait; the failures by id.

        ``frame`` may raise for one message (too large, a delay too long):
        that message fails alone, before anything of it is sent. Frames
        leave in groups that fit in the receipt window, each in one write.
        """
        batch = Batch(ids)
        group = self.receipts.slack
        for start in range(0, len(ids), group):
            frames: list[tuple[str, dict[str, str], bytes]] = []
            receipts: list[str] = []
            for index in range(start, min(start + group, len(ids))):
                try:
                    destination, body, headers = frame(index)
                except Exception as error:
                    batch.done(index, str(error))
                    continue
                receipt = self._receipt_id()
                if not self.receipts.expect(receipt, batch, index, timeout):
                    continue
                headers["receipt"] = receipt
                headers["destination"] = destination
                if body:
                    headers["content-length"] = str(len(body))
                frames.append(("SEND", headers, body))
                receipts.append(receipt)
            if not frames:
                continue
            try:
                self._write(frames)
            except _SEND_ERRORS as error:
                for receipt in receipts:
                    self.receipts.forget(receipt, f"not sent: {type(error).__name__}")
                self._lose(f"sending failed: {type(error).__name__}")
        failures = batch.wait(timeout)
        if failures and self.lost is None and not batch.event.is_set():
            # A receipt overdue on a live connection: it will not be trusted again.
            self._lose(f"no receipt from the broker within {timeout:g}s")
        return failures

    # -- consuming -----------------------------------------------------------

    def subscribe(self, queue: str, destination: str, headers: Mapping[str, str]) -> None:
        """SUBSCRIBE ``destination`` for ``queue`` and wait for the receipt."""
        # Not the queue's name: RabbitMQ splits ack ids on "@@", which a name may hold.
        subscription = f"sub-{self._receipt_id()}"
        with self._cond:
            self._buffers.setdefault(queue, deque())
        self._subscriptions[subscription] = queue
        self._request(
            "SUBSCRIBE",
            {**headers, "destination": destination, "id": subscription, "ack": "client-individual"},
        )
        self.subscribed[queue] = subscription

    def declare(self, destination: str, headers: Mapping[str, str]) -> None:
        """SUBSCRIBE only to make the broker declare and bind what ``headers`` say.

        Used on a short-lived session that is closed right after: whatever
        the broker hands out meanwhile (at most the ``prefetch-count`` of 1
        in ``headers``) is never acknowledged, and goes back when it closes.
        """
        subscription = f"declare-{self._receipt_id()}"
        self._request(
            "SUBSCRIBE",
            {**headers, "destination": destination, "id": subscription, "ack": "client"},
        )

    def _request(self, command: str, headers: dict[str, str]) -> None:
        """A frame with a receipt; raise if the broker refused it or did not answer."""
        receipt = self._receipt_id()
        batch = Batch([command])
        timeout = self.endpoint.connect_timeout
        if self.receipts.expect(receipt, batch, 0, timeout):
            try:
                self._conn.send_frame(command, {**headers, "receipt": receipt})
            except _SEND_ERRORS as error:
                self.receipts.forget(receipt, f"not sent: {type(error).__name__}")
                self._lose(f"sending failed: {type(error).__name__}")
        failures = batch.wait(timeout)
        if failures:
            if self.lost is None:
                self._lose(f"no receipt for {command} within {timeout:g}s")
            raise BrokerError(f"{command} {headers.get('destination', '')}: {failures[command]}")

    def take(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Up to ``limit`` buffered deliveries, the first queues first; waits for the first."""
        got: list[Delivery] = []
        deadline = time.monotonic() + timeout
        with self._cond:
            # Counted before looking: the receiver thread appends without the
            # lock and notifies only when someone waits (see _on_message).
            self._waiters += 1
            try:
                while True:
                    for queue in queues:
                        buffer = self._buffers.get(queue)
                        while buffer and len(got) < limit:
                            got.append(buffer.popleft())
                    if got:
                        return got
                    if self.lost is not None:
                        raise self.lost_error()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return got
                    self._cond.wait(remaining)
            finally:
                self._waiters -= 1

    def settle(self, acks: Sequence[str], command: str, requeue: bool = True) -> None:
        """ACK or NACK deliveries of this session; unknown or settled ids are skipped.

        A second ACK of one delivery would close the connection on RabbitMQ
        (an unknown delivery tag), so each id is settled once.
        """
        unsettled = self._unsettled
        frames: list[tuple[str, dict[str, str], bytes]] = []
        for ack in acks:
            if unsettled.pop(ack, None) is None:
                continue
            if command == "ACK":
                frames.append(("ACK", {"id": ack}, b""))
            else:
                frames.append(("NACK", {"id": ack, "requeue": "true" if requeue else "false"}, b""))
        if not frames:
            return
        try:
            self._write(frames)
        except _SEND_ERRORS as error:
            self._lose(f"sending {command} failed: {type(error).__name__}")
            raise self.lost_error() from None
        self.settled += len(frames)

    def holds(self, ack: str) -> bool:
        return ack in self._unsettled

    def in_flight(self, queue: str) -> int:
        """Deliveries of ``queue`` this session holds unsettled."""
        return sum(1 for name in list(self._unsettled.values()) if name == queue)
