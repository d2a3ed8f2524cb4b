"""``redis://`` and its kin (rediss, redis+unix, redis+cluster): courier on Redis Streams.

::

    transport = RedisTransport.from_dsn(
        Dsn.parse("redis://127.0.0.1:6379/0?queue=email&lease=120"),
        name="email", serializer=serializer,
    )

A queue is a stream with one consumer group; each transport instance is a
consumer of its own name. ``receive`` is one XREADGROUP with COUNT and
BLOCK over every queue asked for; ``ack_many`` acknowledges and deletes in
one script; a dead worker's pending entries are reclaimed after ``lease``;
delays wait in a sorted set per queue until a script moves them to the
stream. The scripts are in :mod:`courier_redis.scripts`, the key layout in
:mod:`courier_redis.keys`, redis-py's quirks in
:mod:`courier_redis.connection`, ``courier failed``'s verbs in
:mod:`courier_redis.listing`; the prose in docs/transports/redis.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from courier.envelope import Envelope
from courier.errors import PublishNotConfirmed, TransportError
from courier.serializer import Serializer
from courier.transports.base import (
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
)
from courier.transports.dsn import Dsn
from courier_redis import scripts
from courier_redis.connection import Link, default_consumer
from courier_redis.keys import QueueKeys, queue_keys, topic_keys
from courier_redis.listing import Listing
from courier_redis.options import RedisOptions
from courier_redis.reader import Reader, milliseconds
from courier_redis.wire import BODY, entry_fields, member

__all__ = ["RedisTransport"]

logger = logging.getLogger("courier.redis")

#: The idle time a released entry gets: far past any lease, so the next reclaim takes it.
_RELEASED_IDLE_MS = 10**12
#: Header of a rejected entry on the dead stream: why it was rejected.
REJECTED_HEADER = "courier-rejected"


class RedisTransport(Transport):
    """Redis Streams through one thread-safe redis-py client (a pool, or a cluster)."""

    capabilities = Capabilities(
        delay=True,
        max_delay=None,
        priority=False,
        lease=True,
        ttr=False,
        native_dead_letter=True,
        delivery_count=True,
        listable=True,
        durable=True,
        unacked_on_reconnect=Unacked.KEPT,
    )

    def __init__(self, dsn: Dsn | str, *, name: str = "redis", serializer: Serializer) -> None:
        self.dsn = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
        self.options = options = self.dsn.option_model(RedisOptions)
        super().__init__(name=name, queue=options.queue, serializer=serializer)
        self.capabilities = replace(
            type(self).capabilities, max_message_size=options.max_message_size
        )
        self.prefix = options.prefix
        self.group = options.group
        self.lease = options.lease
        self._link = Link(self.dsn, options, name=name, on_lost=self._lost)
        self._named = options.consumer is not None
        self.consumer = f"{options.consumer or default_consumer()}.{os.urandom(4).hex()}"
        self._link.name_clients(f"courier:{name}:{self.consumer}")
        self.reader = Reader(self)
        self.listing = Listing(self)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> RedisTransport:
        return cls(dsn, name=name, serializer=serializer)

    # -- identity and the connection ------------------------------------------

    def identify(self, worker_id: str) -> None:
        """Name the consumer (and the connections) after the worker, before it reads."""
        if not self._named and not self.reader.read_from:
            self.consumer = f"{worker_id}.{os.urandom(4).hex()}"
            self._link.name_clients(f"courier:{self.name}:{self.consumer}")

    def limit_prefetch(self, most: int) -> None:
        """Read at most ``most`` entries per stream at once (the worker's --limit)."""
        self.reader.most = max(1, most)

    def stop_receiving(self) -> None:
        """Give back what was read ahead before the worker stops: others take it at once."""
        ahead = self.reader.take_ahead()
        if ahead:
            self.set_idle(ahead, _RELEASED_IDLE_MS)
            self.reader.reclaim_soon()

    def message_key(self, received: Received) -> str | None:
        """The stream entry id: it stays with the entry through reclaims."""
        return f"entry-{received.handle}" if isinstance(received.handle, str) else None

    def keepalive_interval(self) -> float:
        """Renew three times per lease, so one late renewal never loses a message."""
        return self.lease / 3

    def _lost(self) -> None:
        self.generation += 1

    def keys(self, queue: str | None = None) -> QueueKeys:
        """The Redis keys of ``queue`` (default: this transport's)."""
        return queue_keys(self.prefix, queue or self.queue)

    @property
    def link(self) -> Link:
        return self._link

    # -- sending -----------------------------------------------------------

    def fields(self, envelope: Envelope) -> list[bytes | str]:
        """The entry's fields; refuses what cannot be sent before any I/O."""
        body, headers = self.encode(envelope)
        if BODY in headers:
            raise PublishNotConfirmed(
                f"message {envelope.id}: a header named {BODY!r} cannot travel on Redis "
                "(the field holds the body)",
                [envelope.id],
            )
        return entry_fields(body, headers)

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        keys = self.keys(queue)
        fields = self.fields(envelope)
        link = self._link
        with link.errors("send", [envelope.id]):
            if envelope.delay > 0:
                link.run(
                    scripts.DELAY, [keys.delayed], [milliseconds(envelope.delay), member(fields)]
                )
            else:
                link.call("XADD", keys.stream, "*", *fields)
        return envelope

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        """XADDs in one script per 500 (delayed ones in another); names exactly what failed."""
        keys = self.keys(queue)
        now: list[tuple[Envelope, list[bytes | str]]] = []
        later: list[tuple[Envelope, list[bytes | str]]] = []
        failed: dict[str, str] = {}
        for envelope in envelopes:
            try:
                fields = self.fields(envelope)
            except (PublishNotConfirmed, ValueError) as error:
                failed[envelope.id] = str(error)
                continue
            (later if envelope.delay > 0 else now).append((envelope, fields))
        link = self._link
        for start in range(0, len(now), 500):
            chunk = now[start : start + 500]
            arguments: list[Any] = []
            for _, fields in chunk:
                arguments.append(len(fields))
                arguments += fields
            try:
                with link.errors("send_many", [e.id for e, _ in chunk]):
                    results = link.run(scripts.SEND, [keys.stream], arguments)
            except TransportError as error:  # none of the chunk is known to be sent
                failed.update((e.id, str(error)) for e, _ in chunk)
                continue
            for (envelope, _), result in zip(chunk, results, strict=True):
                if result:
                    failed[envelope.id] = link.dsn.mask(result.decode("utf-8", "replace"))
        if later:
            pairs: list[Any] = []
            for envelope, fields in later:
                pairs += [milliseconds(envelope.delay), member(fields)]
            try:
                with link.errors("send_many", [e.id for e, _ in later]):
                    link.run(scripts.DELAY, [keys.delayed], pairs)
            except TransportError as error:
                failed.update((e.id, str(error)) for e, _ in later)
        if failed:
            first = next(iter(failed.values()))
            raise PublishNotConfirmed(
                f"{len(failed)} of {len(envelopes)} messages were not sent: {first}",
                [e.id for e in envelopes if e.id in failed],
            )
        return list(envelopes)

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        """One script: a copy on each subscription's stream, named or recorded by ``setup``."""
        fields = self.fields(envelope)
        topic_key = topic_keys(self.prefix, topic)
        for subscription in subscriptions:
            self.keys(f"{topic}.{subscription}")  # refuses names that cannot be keys
        with self._link.errors(f"publish to {topic!r}", [envelope.id]):
            self._link.run(
                scripts.PUBLISH,
                [topic_key.subscriptions],
                [
                    topic_key.stream_prefix,
                    topic_key.delayed_prefix,
                    milliseconds(envelope.delay),
                    member(fields),
                    *subscriptions,
                ],
            )

    def subscriptions(self, topic: str) -> list[str]:
        with self._link.errors("subscriptions"):
            found = self._link.call("SMEMBERS", topic_keys(self.prefix, topic).subscriptions)
        return sorted(name.decode() for name in found)

    # -- receiving -----------------------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        """Up to ``max``: read ahead first, then a due reclaim, then one XREADGROUP.

        See :mod:`courier_redis.reader`.
        """
        if max < 1:
            return []
        return self.reader.receive(tuple(queues) if queues else (self.queue,), max, timeout)

    # -- settling ------------------------------------------------------------

    def ack(self, received: Received) -> None:
        self.ack_many((received,))

    def ack_many(self, received: Sequence[Received]) -> None:
        """XACK + XDEL of every id of a queue, in one script per queue.

        On a single server the script is sent on the transport's own
        connection without waiting for its reply (see lane.py), which the
        next read collects: as with AMQP's acknowledgements, no round trip.
        """
        if not received:
            return
        by_queue: dict[str, list[str]] = {}
        for item in received:
            by_queue.setdefault(item.queue, []).append(item.handle)
        with self._link.errors("ack"):
            for queue, ids in by_queue.items():
                stream = self.keys(queue).stream
                for start in range(0, len(ids), 1000):
                    self._link.fire(scripts.ACK, [stream], [self.group, *ids[start : start + 1000]])

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """The new attempt stored (delayed or on the stream) and the old entry gone, atomically."""
        keys = self.keys(received.queue)
        fields = self.fields(envelope)
        with self._link.errors("retry", [envelope.id]):
            self._link.run(
                scripts.RETRY,
                [keys.stream, keys.delayed],
                [self.group, received.handle, milliseconds(delay), member(fields)],
            )

    def reject(self, received: Received, reason: str) -> None:
        """Move the entry, as it was, to the queue's dead stream with ``reason``."""
        keys = self.keys(received.queue)
        with self._link.errors("reject"):
            self._link.run(
                scripts.REJECT,
                [keys.stream, keys.dead],
                [self.group, received.handle, REJECTED_HEADER, reason[:4000]],
            )
        logger.warning("rejected %r to %s: %s", received, keys.dead, reason)

    def release(self, received: Received) -> None:
        """Mark it idle past the lease: the next reclaim (here, at once) hands it out again."""
        self.set_idle([received], _RELEASED_IDLE_MS)
        self.reader.reclaim_soon()

    def renew(self, received: Received) -> None:
        """Reset its idle time, so no one reclaims it; thread-safe (a connection pool)."""
        _, taken = self.set_idle([received], 0)
        if taken:
            logger.warning("the lease on %r was lost: another worker reclaimed it", received)

    def set_idle(
        self, received: Sequence[Received], idle_ms: int
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Set the idle time of those this consumer still holds (one script per queue).

        Returns ``(queue, id)`` of those still held, and of those another
        consumer holds now; the others were acknowledged already.
        """
        by_queue: dict[str, list[str]] = {}
        for item in received:
            by_queue.setdefault(item.queue, []).append(item.handle)
        kept: set[tuple[str, str]] = set()
        taken: set[tuple[str, str]] = set()
        with self._link.errors("renew"):
            for queue, ids in by_queue.items():
                mine, others = self._link.run(
                    scripts.RENEW,
                    [self.keys(queue).stream],
                    [self.group, self.consumer, idle_ms, *ids],
                )
                kept.update((queue, entry_id.decode()) for entry_id in mine)
                taken.update((queue, entry_id.decode()) for entry_id in others)
        return kept, taken

    # -- administration --------------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Streams and groups for the queues; each topic's subscriptions recorded in a set."""
        names = list(dict.fromkeys((self.queue, *queues)))
        with self._link.errors("setup"):
            for topic, subscriptions in (topics or {}).items():
                names += [f"{topic}.{name}" for name in subscriptions]
                if subscriptions:
                    key = topic_keys(self.prefix, topic).subscriptions
                    self._link.call("SADD", key, *subscriptions)
            self.reader.ensure_groups(names, again=True)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """XLEN, XPENDING, ZCARD of the delay set, XLEN of the dead stream, in one pipeline."""
        names = list(queues or [self.queue])
        with self._link.errors("stats"):
            self._link.settle(wait=False)  # acknowledgements in flight count as done
            pipe = self._link.pipeline()
            for name in names:
                keys = self.keys(name)
                pipe.execute_command("XLEN", keys.stream)
                pipe.execute_command("XPENDING", keys.stream, self.group)
                pipe.execute_command("ZCARD", keys.delayed)
                pipe.execute_command("XLEN", keys.dead)
            results = pipe.execute(raise_on_error=False)
        found = []
        for index, name in enumerate(names):
            length, pending, delayed, dead = results[4 * index : 4 * index + 4]
            held = 0
            if isinstance(pending, Mapping):
                held = int(pending.get("pending", 0))
            elif isinstance(pending, list | tuple) and pending:
                held = int(pending[0])
            length = length if isinstance(length, int) else 0
            found.append(
                QueueStats(
                    name,
                    ready=max(0, length - held),
                    in_flight=held,
                    delayed=delayed if isinstance(delayed, int) else None,
                    dead=dead if isinstance(dead, int) else None,
                )
            )
        return found

    def queues(self) -> list[str]:
        """Every queue that has a stream, and every subscription queue ``setup`` recorded."""
        return self.listing.queues()

    def close(self) -> None:
        """Give back what was read ahead, forget this consumer where it holds nothing."""
        if self._link.connected:
            try:
                self.stop_receiving()
                with self._link.errors("close"):
                    self._link.settle()  # every acknowledgement in, before looking at what is held
                    for name in self.reader.read_from:
                        self._link.run(
                            scripts.FORGET, [self.keys(name).stream], [self.group, self.consumer]
                        )
            except TransportError as error:  # closing must not fail
                logger.debug("closing %r: %s", self.name, error)
        self._link.close()

    # -- Listable ----------------------------------------------------------

    def list(self, queue: str | None = None, *, limit: int | None = None) -> list[Envelope]:
        """Messages on the stream, oldest first, then delayed ones; undecodable ones skipped."""
        return self.listing.list(queue, limit=limit)

    def find(self, message_id: str, queue: str | None = None) -> Envelope | None:
        return self.listing.find(message_id, queue)

    def remove(self, message_id: str, queue: str | None = None) -> bool:
        return self.listing.remove(message_id, queue)

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        return self.listing.keep(envelope, queue)

    def __repr__(self) -> str:
        return f"<RedisTransport {self.name!r} {self.dsn} queue={self.queue!r}>"
