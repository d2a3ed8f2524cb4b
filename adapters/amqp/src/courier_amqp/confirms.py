"""Publishing with publisher confirms, many in flight: the publisher channel's bookkeeping.

Part of the connection (:mod:`courier_amqp.connection`): a :class:`Publisher`
lives on the I/O thread and is touched by nothing else. The worker thread
hands it a :class:`PublishBatch` and waits on the batch.

RabbitMQ numbers the publishes of a confirm-mode channel 1, 2, 3, ... and
answers each with ``basic.ack`` or ``basic.nack``, possibly for many at
once (``multiple``). An unroutable ``mandatory`` message is first returned
(``basic.return``), then acked: the return is matched to its publish by
message id, so a returned message fails even though it is acked.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from pika import spec  # type: ignore[import-untyped]

from courier_amqp.wire import Outgoing

__all__ = ["PublishBatch", "Publisher"]


class PublishBatch:
    """Messages published together, settled one by one as confirms arrive.

    ``build(index)`` makes message ``index``; the I/O thread calls it only
    when the confirm window has room, so encoding, publishing and the
    broker's own work overlap as they do for a single-threaded raw client,
    and the worker thread just waits. A message that cannot be built (too
    large) fails alone. Only the I/O thread settles.
    """

    __slots__ = ("build", "cursor", "event", "ids", "on_done", "remaining", "status")

    def __init__(
        self, ids: Sequence[str], build: Callable[[int], Outgoing], *, waited: bool = True
    ) -> None:
        self.ids = ids
        self.build = build
        #: The next message to publish.
        self.cursor = 0
        #: Per message: None pending, "" confirmed, else why it was not.
        self.status: list[str | None] = [None] * len(ids)
        self.remaining = len(ids)
        #: None for a batch nobody waits on (``confirm=async``: ``on_done`` reports it).
        self.event: threading.Event | None = threading.Event() if waited else None
        #: Called once, on the thread that settles the last message.
        self.on_done: Callable[[PublishBatch], None] | None = None
        if not ids and self.event is not None:
            self.event.set()

    @classmethod
    def of(cls, messages: Sequence[Outgoing], *, waited: bool = True) -> PublishBatch:
        """A batch of messages already built."""
        return cls(
            [message.message_id for message in messages], messages.__getitem__, waited=waited
        )

    def done(self, index: int, error: str) -> None:
        """Settle one message ("" for confirmed); I/O thread only."""
        if self.status[index] is None:
            self.status[index] = error
            self.remaining -= 1
            if not self.remaining:
                if self.event is not None:
                    self.event.set()
                if self.on_done is not None:
                    self.on_done(self)

    def fail(self, error: str) -> None:
        for index, status in enumerate(self.status):
            if status is None:
                self.done(index, error)

    def failures(self) -> dict[str, str]:
        """What failed so far, by message id."""
        ids = self.ids
        return {ids[i]: s for i, s in enumerate(self.status) if s}

    def wait(self, timeout: float) -> dict[str, str]:
        """Wait for every confirm; return the failures by message id."""
        if self.event is None:
            raise RuntimeError("nobody waits on this batch: its on_done reports it")
        finished = self.event.wait(timeout)
        late = "" if finished else f"no confirm from the broker within {timeout:g}s"
        ids = self.ids
        return {ids[i]: s or late for i, s in enumerate(self.status) if s or s is None}


class Publisher:
    """The confirm-mode channel: a window of unconfirmed publishes. I/O thread only."""

    def __init__(
        self, window: int, on_ready: Callable[[], None], mask: Callable[[str], str]
    ) -> None:
        self.window = window
        self._on_ready = on_ready
        self._mask = mask
        self.conn: Any = None
        self._channel: Any = None
        self._opening = False
        #: Batches with messages not yet published, oldest first.
        self._outbound: deque[PublishBatch] = deque()
        #: The latest ``len(_unconfirmed)`` publishes of the channel, in order.
        self._unconfirmed: deque[tuple[PublishBatch, int]] = deque()
        self._published = 0
        self._returned: dict[str, list[str]] = {}

    def open(self) -> None:
        if not self._opening and self._channel is None:
            self._opening = True
            self.conn.channel(on_open_callback=self._on_open)

    def enqueue(self, batch: PublishBatch) -> None:
        if batch.ids:
            self._outbound.append(batch)
        if self._channel is None:
            self.open()
        else:
            self._pump()

    def fail(self, reason: str) -> None:
        """Everything not yet confirmed fails with ``reason``."""
        for batch, index in self._unconfirmed:
            batch.done(index, reason)
        for batch in self._outbound:
            batch.fail(reason)
        self._unconfirmed.clear()
        self._outbound.clear()
        self._returned.clear()

    def _on_open(self, channel: Any) -> None:
        channel.add_on_close_callback(self._on_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=lambda _: self._ready(channel))

    def _ready(self, channel: Any) -> None:
        self._channel = channel
        self._opening = False
        self._published = 0
        self._on_ready()
        self._pump()

    def _on_closed(self, channel: Any, reason: BaseException) -> None:
        self._channel = None
        self._opening = False
        conn = self.conn
        if conn.is_closing or conn.is_closed:
            return  # the session fails what is pending with the connection's reason
        # A missing exchange (404) or an oversized frame: what was in flight on
        # this channel is lost; the next publish opens a new channel.
        self.fail(f"the broker closed the publishing channel: {self._mask(str(reason))}")

    def _pump(self) -> None:
        channel = self._channel
        if channel is None:
            return
        outbound, unconfirmed, window = self._outbound, self._unconfirmed, self.window
        publish = channel.basic_publish
        while outbound and len(unconfirmed) < window:
            batch = outbound[0]
            index = batch.cursor
            batch.cursor = index + 1
            if batch.cursor == len(batch.ids):
                outbound.popleft()
            try:
                exchange, routing_key, body, properties, mandatory, _ = batch.build(index)
            except Exception as error:  # too large, a delay too long: this one fails alone
                batch.done(index, str(error))
                continue
            publish(exchange, routing_key, body, properties, mandatory)
            unconfirmed.append((batch, index))
            self._published += 1

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        reason = (
            f"unroutable: no queue for routing key {method.routing_key!r} on exchange "
            f"{method.exchange or '(default)'!r} ({method.reply_text})"
        )
        self._returned.setdefault(properties.message_id or "", []).append(reason)

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        ok = isinstance(method, spec.Basic.Ack)
        unconfirmed = self._unconfirmed
        base = self._published - len(unconfirmed) + 1
        tag = method.delivery_tag
        if method.multiple:
            for _ in range(min(tag - base + 1, len(unconfirmed))):
                self._finish(*unconfirmed.popleft(), ok)
        else:
            index = tag - base
            if 0 <= index < len(unconfirmed):
                self._finish(*unconfirmed[index], ok)
            while unconfirmed and unconfirmed[0][0].status[unconfirmed[0][1]] is not None:
                unconfirmed.popleft()
        self._pump()

    def _finish(self, batch: PublishBatch, index: int, ok: bool) -> None:
        if batch.status[index] is not None:
            return
        error = "" if ok else "nacked by the broker"
        if ok and self._returned:
            message_id = batch.ids[index]
            reasons = self._returned.get(message_id)
            if reasons:
                error = reasons.pop(0)
                if not reasons:
                    del self._returned[message_id]
        batch.done(index, error)
