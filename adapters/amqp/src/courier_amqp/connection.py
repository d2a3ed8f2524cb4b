"""Everything pika: one ``SelectConnection`` on its own I/O thread.

pika's connections are not thread-safe, a blocking connection services
heartbeats only while it does I/O, and only ``SelectConnection`` keeps many
publisher confirms in flight. So a :class:`Session` runs one
``SelectConnection`` on a thread of its own and the worker thread hands it
work with ``add_callback_threadsafe``: a handler that runs for minutes never
costs the connection its heartbeats.

A session has three channels:

- the *consumer* channel: ``basic_consume`` with a prefetch; deliveries go
  into one thread-safe buffer per queue that ``take`` reads; acks, rejects
  and requeues go back on it. If it closes, the whole session is lost
  (its delivery tags mean nothing elsewhere).
- the *publisher* channel, in confirm mode, kept by a
  :class:`~courier_amqp.confirms.Publisher`: ``hand_over`` gives it a
  :class:`~courier_amqp.confirms.PublishBatch`; it keeps up to
  ``confirm_window`` publishes unconfirmed and settles each on ack, nack or
  return (``mandatory``). If the broker closes the channel (a missing
  exchange), what was in flight fails and the next publish opens a new one.
- the *admin* channel for declarations and passive declares (a 404 closes
  it, so it is kept apart); reopened on demand.

What goes on the wire (parameters, properties, headers) is in
:mod:`courier_amqp.wire`. A session is used once: when its connection is lost everything pending
fails with :class:`~courier.errors.ConnectionLost`, buffered deliveries are
dropped (the broker requeues them) and the transport opens a new session,
with a new generation, on its next call.
"""

from __future__ import annotations

import bisect
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]

from courier.errors import ConnectionLost, TransportError
from courier_amqp.confirms import PublishBatch, Publisher

__all__ = ["ACK", "REJECT", "REQUEUE", "ChannelClosed", "Session"]

logger = logging.getLogger("courier.amqp")

ACK, REJECT, REQUEUE = "ack", "reject", "requeue"


class ChannelClosed(TransportError):
    """The broker closed a channel on an operation: ``code`` 404 not found, 406 mismatch."""

    def __init__(self, code: int, text: str) -> None:
        self.code = code
        self.text = text
        super().__init__(f"{code} {text}")


def _describe(reason: BaseException | str) -> str:
    """Why a connection failed, in a few words a person can act on.

    pika nests the cause of a failed connect several exceptions deep
    (``AMQPConnectionError(AMQPConnectionWorkflowFailed(...
    AMQPConnectorSocketConnectError(ConnectionRefusedError(111, ...))))``);
    the innermost OS error says it best ("connection refused"). The whole
    chain is logged at DEBUG for ``-v``.
    """
    if isinstance(reason, str):
        return reason
    root = _root_cause(reason)
    if root is not reason:
        logger.debug("connection failure in full: %r", reason)
    if isinstance(root, OSError) and root.strerror:
        return root.strerror.lower()
    if isinstance(root, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(root, pika.exceptions.ProbableAuthenticationError):
        return "login refused (check the user name and password)"
    if isinstance(root, pika.exceptions.ProbableAccessDeniedError):
        return "access to the virtual host refused"
    text = str(root)
    # pika's connection errors often say nothing in str(): their repr names the cause.
    return text if text and text != type(root).__name__ else repr(root)


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception pika wrapped, following its own nesting conventions."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner: object = getattr(error, "exception", None)
        if inner is None and getattr(error, "exceptions", None):
            inner = error.exceptions[-1]  # type: ignore[attr-defined]
        if inner is None and error.args and isinstance(error.args[0], BaseException):
            inner = error.args[0]
        if not isinstance(inner, BaseException):
            return error
        error = inner
    return error


class Session:
    """One connection, its I/O thread and its three channels; see the module docstring."""

    def __init__(
        self,
        params: Any,
        *,
        generation: int,
        prefetch: int,
        confirm_window: int,
        mask: Callable[[str], str] = str,
        name: str = "amqp",
    ) -> None:
        self.generation = generation
        self._params = params
        self._prefetch = prefetch
        self._mask = mask
        self._name = name
        #: Why the connection was lost (None while it is alive).
        self.lost: str | None = None
        #: Frames sent, for tests and diagnostics (I/O thread writes them).
        self.ack_frames = 0
        self._lock = threading.Lock()
        self._running = False
        self._thread: threading.Thread | None = None
        self._ready: Future[None] = Future()
        self._futures: set[Future[Any]] = set()
        self._batches: set[PublishBatch] = set()
        #: Batches handed over with ``hand_over_soon``, not yet on the I/O thread.
        self._handoff: list[PublishBatch] = []
        self._handoff_scheduled = False
        self._conn: Any = None
        self._ioloop: Any = None
        # Consuming: the buffers are shared with the worker thread under ``_cond``.
        self._cond = threading.Condition()
        self._waiters = 0
        self._buffers: dict[str, deque[tuple[int, Any, bytes]]] = {}
        self._consumed: set[str] = set()
        #: Consumer tag per consumed queue (I/O thread only).
        self._consumer_tags: dict[str, str] = {}
        # The rest is touched by the I/O thread only.
        self._consumer: Any = None
        self._unsettled: dict[int, str] = {}
        self._publisher = Publisher(confirm_window, self._on_publisher_ready, mask)
        self._admin: Any = None
        self._admin_queue: list[tuple[Callable[[Any], None], Future[Any]]] = []
        self._admin_pending: list[Future[Any]] = []

    # -- lifecycle (worker thread) -------------------------------------------

    @property
    def alive(self) -> bool:
        return self.lost is None

    def lost_error(self) -> ConnectionLost:
        return ConnectionLost(f"the connection to RabbitMQ was lost: {self.lost or 'closed'}")

    def open(self, timeout: float) -> None:
        """Connect and open the channels, or raise ConnectionLost."""
        self._thread = threading.Thread(
            target=self._run, name=f"courier-amqp-{self._name}-{self.generation}", daemon=True
        )
        self._thread.start()
        try:
            self._ready.result(timeout)
        except FutureTimeout:
            self.close(timeout=5.0)
            where = f"{self._params.host}:{self._params.port}"
            raise ConnectionLost(
                f"cannot connect to RabbitMQ at {where}: no answer within {timeout:g}s"
            ) from None
        except ConnectionLost:
            self.close(timeout=5.0)
            where = f"{self._params.host}:{self._params.port}"
            raise ConnectionLost(f"cannot connect to RabbitMQ at {where}: {self.lost}") from None

    def close(self, timeout: float = 10.0) -> None:
        """Close the connection (the broker requeues what was not settled); join the thread."""
        self._submit_quietly(self._close_connection)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():  # pragma: no cover - pika did not stop
                logger.warning("the AMQP I/O thread of %r did not stop", self._name)

    # -- handing work over (worker thread) -------------------------------------

    def _submit(self, callback: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if not self._running or self.lost is not None:
                raise self.lost_error()
            self._ioloop.add_callback_threadsafe(partial(self._safely, callback, *args))

    def _submit_quietly(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if self._running:
                self._ioloop.add_callback_threadsafe(partial(self._safely, callback))

    def _call(self, callback: Callable[[Future[Any]], None], timeout: float) -> Any:
        """Run ``callback(future)`` on the I/O thread and wait for the future."""
        future: Future[Any] = Future()
        with self._lock:
            self._futures.add(future)
        try:
            self._submit(callback, future)
            return future.result(timeout)
        except FutureTimeout:
            raise ConnectionLost(f"RabbitMQ did not answer within {timeout:g}s") from None
        finally:
            with self._lock:
                self._futures.discard(future)

    def run(self, function: Callable[[], Any], timeout: float) -> Any:
        """The result of ``function()`` run on the I/O thread."""
        return self._call(lambda future: future.set_result(function()), timeout)

    def track(self, batch: PublishBatch) -> None:
        """Watch ``batch``: if the connection is lost, whatever is pending in it fails."""
        with self._lock:
            if not self._running or self.lost is not None:
                raise self.lost_error()
            self._batches.add(batch)

    def forget(self, batch: PublishBatch) -> None:
        with self._lock:
            self._batches.discard(batch)

    def hand_over(self, batch: PublishBatch) -> None:
        """Publish a tracked batch; its confirms settle it."""
        self._submit(self._publisher.enqueue, batch)

    def hand_over_soon(self, batch: PublishBatch) -> None:
        """Track and publish ``batch``; one wake of the I/O thread for many calls.

        For ``confirm=async`` sends, one message each: waking the I/O loop
        costs a write to its socket, so a wake already pending carries every
        batch handed over until the I/O thread takes them.
        """
        with self._lock:
            if not self._running or self.lost is not None:
                raise self.lost_error()
            self._batches.add(batch)
            self._handoff.append(batch)
            if self._handoff_scheduled:
                return
            self._handoff_scheduled = True
            self._ioloop.add_callback_threadsafe(partial(self._safely, self._take_handoff))

    def _take_handoff(self) -> None:
        with self._lock:
            batches, self._handoff = self._handoff, []
            self._handoff_scheduled = False
        enqueue = self._publisher.enqueue
        for batch in batches:
            enqueue(batch)

    def limit_prefetch(self, prefetch: int) -> None:
        """Deliveries the broker may send ahead, for consumers started from now on."""
        self._prefetch = prefetch

    def stop_consuming(self, timeout: float) -> None:
        """Cancel every consumer: RabbitMQ sends nothing more ahead.

        What was already delivered stays buffered and unacknowledged until it
        is settled or the connection closes; the next ``consume`` starts the
        consumers again.
        """
        if self._consumed:
            self._call(self._cancel_consumers, timeout)
            self._consumed.clear()

    def consume(self, queues: Sequence[str], timeout: float) -> None:
        """Make sure each queue has a consumer on this session."""
        missing = [queue for queue in queues if queue not in self._consumed]
        if missing:
            self._call(partial(self._start_consumers, missing), timeout)
            self._consumed.update(missing)

    def take(
        self, queues: Sequence[str], limit: int, timeout: float
    ) -> list[tuple[str, int, Any, bytes]]:
        """Up to ``limit`` buffered deliveries, the first queues first; waits for the first."""
        got: list[tuple[str, int, Any, bytes]] = []
        deadline = time.monotonic() + timeout
        with self._cond:
            # Counted before looking: the I/O thread appends without the lock
            # and notifies only when someone waits (see _on_message).
            self._waiters += 1
            try:
                while True:
                    for queue in queues:
                        buffer = self._buffers.get(queue)
                        while buffer and len(got) < limit:
                            tag, properties, body = buffer.popleft()
                            got.append((queue, tag, properties, body))
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

    def settle(self, tags: Sequence[int], kind: str) -> None:
        """Ack, reject or requeue deliveries of this session (sent asynchronously)."""
        self._submit(self._settle, tags, kind)

    def rpc(self, method: str, timeout: float, **arguments: Any) -> Any:
        """A synchronous channel method (``queue_declare``...) on the admin channel."""

        def call(channel: Any, future: Future[Any]) -> None:
            getattr(channel, method)(callback=future.set_result, **arguments)

        return self._call(partial(self._with_admin, call), timeout)

    # -- the I/O thread --------------------------------------------------------

    def _run(self) -> None:
        try:
            self._conn = pika.SelectConnection(
                self._params,
                on_open_callback=self._on_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_closed,
            )
        except Exception as error:
            self._lose(error)
            return
        ioloop = self._ioloop = self._conn.ioloop
        with self._lock:
            self._running = True
        try:
            ioloop.start()
        finally:
            with self._lock:
                self._running = False
                futures, batches = list(self._futures), list(self._batches)
            self._lose("the I/O loop stopped")
            lost = self.lost_error()
            for future in futures:
                if not future.done():
                    future.set_exception(lost)
            for batch in batches:
                batch.fail(self.lost or "closed")
            ioloop.close()

    def _safely(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception as error:
            logger.exception("AMQP I/O callback failed; dropping the connection")
            self._abort(error)

    def _abort(self, error: BaseException | str) -> None:
        self._lose(error)
        conn = self._conn
        if conn is not None and not (conn.is_closed or conn.is_closing):
            conn.close()
        elif self._ioloop is not None:
            self._ioloop.stop()

    def _lose(self, reason: BaseException | str) -> None:
        """The session is over: fail everything pending, drop the buffers. I/O thread."""
        if self.lost is None:
            self.lost = self._mask(_describe(reason))
            logger.debug("AMQP session %d lost: %s", self.generation, self.lost)
        error = self.lost_error()
        if not self._ready.done():
            self._ready.set_exception(error)
        self._publisher.fail(self.lost)
        self._fail_admin(error)
        with self._cond:
            for buffer in self._buffers.values():
                buffer.clear()
            self._cond.notify_all()

    def _on_open(self, conn: Any) -> None:
        self._publisher.conn = conn
        conn.channel(on_open_callback=self._on_consumer_open)

    def _on_publisher_ready(self) -> None:
        if not self._ready.done():
            self._ready.set_result(None)

    def _on_open_error(self, conn: Any, error: BaseException) -> None:
        self._lose(error)
        self._ioloop.stop()

    def _on_closed(self, conn: Any, reason: BaseException) -> None:
        self._lose(reason)
        self._ioloop.stop()

    def _close_connection(self) -> None:
        conn = self._conn
        if conn is None or conn.is_closed:
            self._ioloop.stop()
        elif not conn.is_closing:
            conn.close()

    # consuming

    def _on_consumer_open(self, channel: Any) -> None:
        self._consumer = channel
        channel.add_on_close_callback(self._on_consumer_closed)
        channel.add_on_cancel_callback(self._on_cancelled)
        channel.basic_qos(prefetch_count=self._prefetch, callback=self._on_qos)

    def _on_qos(self, frame: Any) -> None:
        self._publisher.open()

    def _on_consumer_closed(self, channel: Any, reason: BaseException) -> None:
        if self._conn is not None and not self._conn.is_closing and self.lost is None:
            self._abort(f"the broker closed the consuming channel: {reason}")

    def _on_cancelled(self, frame: Any) -> None:
        self._abort("the broker cancelled a consumer (was its queue deleted?)")

    def _start_consumers(self, queues: list[str], future: Future[None]) -> None:
        waiting = set(queues)

        def started(queue: str, frame: Any) -> None:
            waiting.discard(queue)
            if not waiting and not future.done():
                future.set_result(None)

        # The prefetch may have shrunk since the channel opened (a worker's
        # --limit): a per-consumer basic.qos applies to consumers started after it.
        self._consumer.basic_qos(prefetch_count=self._prefetch)
        for queue in queues:
            with self._cond:
                self._buffers.setdefault(queue, deque())
            self._consumer_tags[queue] = self._consumer.basic_consume(
                queue, partial(self._on_message, queue), callback=partial(started, queue)
            )

    def _cancel_consumers(self, future: Future[None]) -> None:
        tags = list(self._consumer_tags.values())
        self._consumer_tags.clear()
        waiting = set(tags)
        if not waiting:
            future.set_result(None)
            return

        def cancelled(tag: str, frame: Any) -> None:
            waiting.discard(tag)
            if not waiting and not future.done():
                future.set_result(None)

        for tag in tags:
            self._consumer.basic_cancel(tag, callback=partial(cancelled, tag))

    def _on_message(
        self, queue: str, channel: Any, method: Any, properties: Any, body: bytes
    ) -> None:
        tag = method.delivery_tag
        self._unsettled[tag] = queue
        self._buffers[queue].append((tag, properties, body))
        if self._waiters:
            with self._cond:
                self._cond.notify()

    def _settle(self, tags: Sequence[int], kind: str) -> None:
        channel = self._consumer
        unsettled = self._unsettled
        if channel is None or not channel.is_open:
            return
        # Tags this channel never gave out, or already settled, are skipped:
        # a second ack for one would close the channel.
        live = sorted(tag for tag in tags if unsettled.pop(tag, None) is not None)
        if kind == ACK:
            # Everything below the oldest unsettled delivery is settled, so one
            # ``multiple`` ack covers the part of the batch below it.
            first = next(iter(unsettled), None)
            cut = len(live) if first is None else bisect.bisect_left(live, first)
            if cut:
                channel.basic_ack(live[cut - 1], multiple=cut > 1)
                self.ack_frames += 1
            for tag in live[cut:]:
                channel.basic_ack(tag)
                self.ack_frames += 1
        else:
            for tag in live:
                channel.basic_reject(tag, requeue=kind == REQUEUE)

    def in_flight(self, queue: str) -> int:
        """Deliveries of ``queue`` this session holds unsettled; I/O thread."""
        return sum(1 for name in self._unsettled.values() if name == queue)

    # administration

    def _with_admin(
        self, operation: Callable[[Any, Future[Any]], None], future: Future[Any]
    ) -> None:
        channel = self._admin
        if channel is not None and channel.is_open:
            self._admin_pending = [done for done in self._admin_pending if not done.done()]
            self._admin_pending.append(future)
            operation(channel, future)
            return
        self._admin_queue.append((lambda channel: operation(channel, future), future))
        if channel is None:
            self._admin = self._conn.channel(on_open_callback=self._on_admin_open)
            self._admin.add_on_close_callback(self._on_admin_closed)

    def _on_admin_open(self, channel: Any) -> None:
        queued, self._admin_queue = self._admin_queue, []
        for operation, future in queued:
            self._admin_pending.append(future)
            operation(channel)

    def _on_admin_closed(self, channel: Any, reason: BaseException) -> None:
        self._admin = None
        code = getattr(reason, "reply_code", 0)
        text = self._mask(getattr(reason, "reply_text", "") or str(reason))
        self._fail_admin(ChannelClosed(code, text))

    def _fail_admin(self, error: Exception) -> None:
        pending = self._admin_pending + [future for _, future in self._admin_queue]
        self._admin_pending, self._admin_queue = [], []
        for future in pending:
            if not future.done():
                future.set_exception(error)
