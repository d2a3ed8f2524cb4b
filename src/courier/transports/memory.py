"""``memory://``: an in-process broker for tests and development.

It keeps the same promises as a real broker within one process: delays,
priorities, in-flight messages until acknowledged, delivery counts, dead
letters. ``sent``, ``acked`` and ``rejected`` record what happened, for
assertions. By default messages stay Python objects; ``?serialize=true``
sends every one through the serializer, so tests see what a real broker's
consumer would decode (and the size limit applies).

``memory://`` opens a private broker; ``memory://name`` joins the broker of
that name in this process, so a producer and a consumer (or a test's two
transports) can share queues.

Options: ``queue`` (default ``default``), ``serialize`` (false),
``max_message_size`` (bytes, none), ``history`` (how many of the latest
sent, acknowledged and rejected messages are kept for assertions, default
1,000; 0 keeps none, so a long-running process does not grow).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import cast

from courier.envelope import Envelope
from courier.errors import MessageDecodingFailed, ValidationFailed
from courier.serializer import Headers, Serializer
from courier.transports.base import (
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
    kept_count,
    subscription_queue,
)
from courier.transports.dsn import Dsn, TransportOptions

_new_tuple = tuple.__new__

__all__ = ["MemoryOptions", "MemoryTransport"]


class MemoryOptions(TransportOptions):
    queue: str = "default"
    serialize: bool = False
    max_message_size: int | None = None
    history: int = 1_000


#: Bytes as a broker would hold them (serialize mode, or injected by a test).
_Raw = tuple[bytes, Mapping[str, str]]


class _Entry:
    __slots__ = ("deliveries", "holder", "message_id", "payload", "priority", "queue", "seq")

    def __init__(
        self, payload: Envelope | _Raw, queue: str, priority: int, message_id: str, seq: int
    ) -> None:
        self.payload = payload
        self.queue = queue
        self.priority = priority
        self.message_id = message_id
        self.seq = seq
        self.deliveries = 0
        #: The transport that received it last (given back when that one closes).
        self.holder: object = None


class _Queue:
    __slots__ = ("dead", "delayed", "ready", "size")

    def __init__(self) -> None:
        # One deque per priority level: popping the most urgent is a scan of
        # ten deques at worst, and all-zero priorities cost one.
        self.ready: list[deque[_Entry]] = [deque() for _ in range(10)]
        self.delayed: list[tuple[float, int, _Entry]] = []
        self.size = 0
        self.dead = 0


class _Broker:
    """The shared state: queues, in-flight messages, remembered subscriptions."""

    def __init__(self) -> None:
        # ``lock`` guards everything; ``cond`` (on the same lock) is only for
        # waiting, since entering a Condition costs a Python-level call.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.waiting = 0
        self.queues: dict[str, _Queue] = {}
        self.in_flight: dict[int, _Entry] = {}
        self.subscriptions: dict[str, set[str]] = {}
        self.seq = itertools.count()
        self.handles = itertools.count(1)


_named_brokers: weakref.WeakValueDictionary[str, _Broker] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()


def _broker(name: str | None) -> _Broker:
    if not name:
        return _Broker()
    with _named_lock:
        broker = _named_brokers.get(name)
        if broker is None:
            broker = _named_brokers[name] = _Broker()
        return broker


class MemoryTransport(Transport):
    """An in-process broker; thread-safe, not durable."""

    capabilities = Capabilities(
        delay=True,
        priority=True,
        native_dead_letter=True,
        delivery_count=True,
        listable=True,
        durable=False,
        unacked_on_reconnect=Unacked.KEPT,
    )

    def __init__(
        self,
        *,
        name: str = "memory",
        queue: str = "default",
        serializer: Serializer,
        serialize: bool = False,
        max_message_size: int | None = None,
        history: int = 1_000,
        broker: str | None = None,
    ) -> None:
        super().__init__(name=name, queue=queue, serializer=serializer)
        self.serialize = serialize
        if max_message_size is not None:
            self.capabilities = replace(self.capabilities, max_message_size=max_message_size)
        self._encode_on_send = serialize or max_message_size is not None
        self._broker = shared = _broker(broker)
        # Aliases of the shared state, to keep the hot paths to one lookup.
        self._lock = shared.lock
        self._cond = shared.cond
        self._queues = shared.queues
        self._in_flight = shared.in_flight
        self._subscriptions = shared.subscriptions
        self._seq = shared.seq
        self._handles = shared.handles
        #: The latest envelopes sent, in order (for tests).
        self.sent: deque[Envelope] = deque(maxlen=history)
        #: The latest envelopes acknowledged, in order (for tests).
        self.acked: deque[Envelope] = deque(maxlen=history)
        #: The latest rejected messages with their reasons (for tests).
        self.rejected: deque[tuple[Envelope | None, str]] = deque(maxlen=history)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> MemoryTransport:
        options = dsn.option_model(MemoryOptions)
        return cls(
            name=name,
            queue=options.queue,
            serializer=serializer,
            serialize=options.serialize,
            max_message_size=options.max_message_size,
            history=options.history,
            broker=dsn.host,
        )

    # -- sending -----------------------------------------------------------

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        payload: Envelope | _Raw = envelope
        if self._encode_on_send:
            body, headers = self.encode(envelope)
            if self.serialize:
                payload = (body, headers)
        priority = envelope.priority
        name = queue or self.queue
        with self._lock:
            state = self._queues.get(name)
            if state is None:
                state = self._queues[name] = _Queue()
            entry = _Entry(payload, name, priority, envelope.id, next(self._seq))
            if envelope.delay > 0:
                heapq.heappush(state.delayed, (time.monotonic() + envelope.delay, entry.seq, entry))
            else:
                state.ready[priority].append(entry)
            state.size += 1
            if self._broker.waiting:
                self._cond.notify_all()
        self.sent.append(envelope)
        return envelope

    def send_raw(
        self, body: bytes, headers: Mapping[str, str] | None = None, queue: str | None = None
    ) -> None:
        """Put bytes on a queue as a foreign producer would (for tests of bad input)."""
        self._put((body, dict(headers or {})), queue or self.queue, 0, "", 0.0)

    def _put(
        self, payload: Envelope | _Raw, queue: str, priority: int, message_id: str, delay: float
    ) -> None:
        with self._lock:
            entry = _Entry(payload, queue, priority, message_id, next(self._seq))
            self._enqueue(entry, delay)

    def _enqueue(self, entry: _Entry, delay: float) -> None:
        """Add ``entry`` to its queue; the caller holds the lock."""
        state = self._queues.get(entry.queue)
        if state is None:
            state = self._queues[entry.queue] = _Queue()
        if delay > 0:
            heapq.heappush(state.delayed, (time.monotonic() + delay, entry.seq, entry))
        else:
            state.ready[entry.priority].append(entry)
        state.size += 1
        if self._broker.waiting:
            self._cond.notify_all()

    def subscriptions(self, topic: str) -> list[str]:
        return sorted(self._subscriptions.get(topic, ()))

    # -- receiving -----------------------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        names = queues or (self.queue,)
        taken: list[_Entry] = []
        with self._lock:
            deadline = None
            while True:
                next_due = self._take(names, max, taken)
                if taken:
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + timeout
                remaining = deadline - now
                if remaining <= 0:
                    return []
                self._broker.waiting += 1
                try:
                    self._cond.wait(min(remaining, next_due - now) if next_due else remaining)
                finally:
                    self._broker.waiting -= 1
            handles = self._handles
            in_flight = self._in_flight
            handled = []
            for entry in taken:
                entry.deliveries += 1
                entry.holder = self
                handle = next(handles)
                in_flight[handle] = entry
                handled.append(handle)
        generation = self.generation
        result = []
        for handle, entry in zip(handled, taken, strict=True):
            payload = entry.payload
            if type(payload) is Envelope:
                received = Received(self, handle, entry.queue, entry.deliveries, generation)
                received.envelope = _new_tuple(Envelope, (*payload[:-1], received))
            else:
                body, headers = cast("_Raw", payload)
                received = self.decoded(
                    body, headers, handle, entry.queue, delivery_count=entry.deliveries
                )
            result.append(received)
        return result

    def _take(self, names: Sequence[str], max: int, taken: list[_Entry]) -> float | None:
        """Move up to ``max`` ready entries into ``taken``; returns the next due time."""
        now = time.monotonic()
        next_due: float | None = None
        for name in names:
            state = self._queues.get(name)
            if state is None or not state.size:
                continue
            delayed = state.delayed
            while delayed and delayed[0][0] <= now:
                entry = heapq.heappop(delayed)[2]
                state.ready[entry.priority].append(entry)
            if delayed and (next_due is None or delayed[0][0] < next_due):
                next_due = delayed[0][0]
            for level in range(9, -1, -1):
                ready = state.ready[level]
                while ready and len(taken) < max:
                    taken.append(ready.popleft())
                    state.size -= 1
                if len(taken) >= max:
                    return next_due
        return next_due

    # -- settling ------------------------------------------------------------

    def _settle(self, received: Received) -> _Entry | None:
        with self._lock:
            return self._in_flight.pop(received.handle, None)

    def ack(self, received: Received) -> None:
        if self._settle(received) is not None and received.envelope is not None:
            self.acked.append(received.envelope)

    def ack_many(self, received: Sequence[Received]) -> None:
        with self._lock:
            pop = self._in_flight.pop
            done = [item for item in received if pop(item.handle, None) is not None]
        self.acked.extend(item.envelope for item in done if item.envelope is not None)

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        payload: Envelope | _Raw = envelope
        if self.serialize:
            payload = self.encode(envelope)
        with self._lock:
            if self._in_flight.pop(received.handle, None) is None:
                return
            entry = _Entry(payload, received.queue, envelope.priority, envelope.id, next(self._seq))
            self._enqueue(entry, delay)
        self.sent.append(envelope)

    def reject(self, received: Received, reason: str) -> None:
        entry = self._settle(received)
        if entry is None:
            return
        with self._lock:
            self._queues.setdefault(entry.queue, _Queue()).dead += 1
        self.rejected.append((received.envelope, reason))

    def release(self, received: Received) -> None:
        with self._lock:
            entry = self._in_flight.pop(received.handle, None)
            if entry is not None:
                self._give_back(entry)

    def message_key(self, received: Received) -> str | None:
        """The entry's sequence number, for as long as it is held."""
        with self._lock:
            entry = self._in_flight.get(received.handle)
        return None if entry is None else f"entry-{entry.seq}"

    def close(self) -> None:
        """Give back what this transport still holds, as a broker does when a consumer leaves."""
        with self._lock:
            mine = [h for h, entry in self._in_flight.items() if entry.holder is self]
            for handle in mine:
                self._give_back(self._in_flight.pop(handle))

    def _give_back(self, entry: _Entry) -> None:
        """``entry`` back to the head of its queue; the caller holds the lock."""
        state = self._queues[entry.queue]
        # Back where it was: ahead of everything sent after it, so a batch
        # released in order keeps its order.
        ready = state.ready[entry.priority]
        index = next((i for i, other in enumerate(ready) if other.seq > entry.seq), len(ready))
        ready.insert(index, entry)
        state.size += 1
        if self._broker.waiting:
            self._cond.notify_all()

    # -- administration --------------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        with self._lock:
            for name in (self.queue, *queues):
                self._queues.setdefault(name, _Queue())
            for topic, subscriptions in (topics or {}).items():
                self._subscriptions.setdefault(topic, set()).update(subscriptions)
                for subscription in subscriptions:
                    self._queues.setdefault(subscription_queue(topic, subscription), _Queue())

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._lock:
            result = []
            for name in queues or [self.queue]:
                state = self._queues.get(name) or _Queue()
                in_flight = sum(1 for entry in self._in_flight.values() if entry.queue == name)
                delayed = len(state.delayed)
                result.append(
                    QueueStats(name, state.size - delayed, in_flight, delayed, state.dead)
                )
            return result

    def queues(self) -> list[str]:
        """Every queue this transport has seen."""
        with self._lock:
            return sorted(self._queues)

    # -- Listable ----------------------------------------------------------

    def _entries(self, queue: str | None) -> list[_Entry]:
        state = self._queues.get(queue or self.queue)
        if state is None:
            return []
        entries = [entry for level in state.ready for entry in level]
        entries += [item[2] for item in state.delayed]
        return sorted(entries, key=lambda entry: entry.seq)

    def _envelope(self, entry: _Entry) -> Envelope | None:
        payload = entry.payload
        if isinstance(payload, Envelope):
            return payload
        try:
            return self.serializer.decode(*payload)
        except (MessageDecodingFailed, ValidationFailed):
            return None

    def list(self, queue: str | None = None, *, limit: int | None = None) -> list[Envelope]:
        with self._lock:
            entries = self._entries(queue)
        found = [envelope for entry in entries if (envelope := self._envelope(entry)) is not None]
        return found if limit is None else found[:limit]

    def find(self, message_id: str, queue: str | None = None) -> Envelope | None:
        return next((e for e in self.list(queue) if e.id == message_id), None)

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        """Replace the waiting record of ``envelope.id`` (or add one); see Listable.keep."""
        name = queue or self.queue
        with self._lock:
            entry = self._waiting_entry(name, envelope.id)
            previous = self._envelope(entry) if entry is not None else None
            count = kept_count(previous) + 1
            stored = envelope.with_headers(**{Headers.KEPT: str(count)})
            payload: Envelope | _Raw = stored
            if self._encode_on_send:
                body, headers = self.encode(stored)
                if self.serialize:
                    payload = (body, headers)
            if entry is not None:
                entry.payload = payload
            else:
                entry = _Entry(payload, name, stored.priority, stored.id, next(self._seq))
                self._enqueue(entry, 0.0)
        self.sent.append(stored)
        return count

    def _waiting_entry(self, queue: str, message_id: str) -> _Entry | None:
        """The oldest waiting entry with this envelope id; the caller holds the lock."""
        return next((e for e in self._entries(queue) if e.message_id == message_id), None)

    def remove(self, message_id: str, queue: str | None = None) -> bool:
        with self._lock:
            state = self._queues.get(queue or self.queue)
            if state is None:
                return False
            for level in state.ready:
                for entry in level:
                    if entry.message_id == message_id:
                        level.remove(entry)
                        state.size -= 1
                        return True
            for index, item in enumerate(state.delayed):
                if item[2].message_id == message_id:
                    state.delayed.pop(index)
                    heapq.heapify(state.delayed)
                    state.size -= 1
                    return True
        return False
