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
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from courier.envelope import Envelope
from courier.errors import MessageDecodingFailed, PublishNotConfirmed, TransportError
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
from courier_redis.wire import BODY, entry_fields, member, split_fields

__all__ = ["RedisTransport"]

logger = logging.getLogger("courier.redis")

#: The idle time a released entry gets: far past any lease, so the next reclaim takes it.
_RELEASED_IDLE_MS = 10**12
#: Most delayed messages one promote script moves to a stream.
_PROMOTE_BATCH = 200
#: With queues in several cluster slots, each blocking look lasts at most this.
_SLOT_SLICE = 0.05
#: Header of a rejected entry on the dead stream: why it was rejected.
REJECTED_HEADER = "courier-rejected"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


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
        self._lease_ms = _ms(options.lease)
        self._reclaim_every = options.reclaim_every()
        self._link = Link(self.dsn, options, name=name, on_lost=self._lost)
        self._named = options.consumer is not None
        self.consumer = f"{options.consumer or default_consumer()}.{os.urandom(4).hex()}"
        self._link.name_clients(f"courier:{name}:{self.consumer}")
        self._read_from: set[str] = set()
        self._grouped: set[str] = set()
        #: Entries read beyond ``max`` (several streams, COUNT each), served next.
        self._ahead: list[Received] = []
        self._ahead_since = 0.0
        self._next_promote = 0.0
        self._next_reclaim = 0.0
        self._next_sweep = 0.0
        self._reclaim_more = False
        self._most: int | None = None
        self._slots: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        self.listing = Listing(self)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> RedisTransport:
        return cls(dsn, name=name, serializer=serializer)

    # -- identity and the connection ------------------------------------------

    def identify(self, worker_id: str) -> None:
        """Name the consumer (and the connections) after the worker, before it reads."""
        if not self._named and not self._read_from:
            self.consumer = f"{worker_id}.{os.urandom(4).hex()}"
            self._link.name_clients(f"courier:{self.name}:{self.consumer}")

    def limit_prefetch(self, most: int) -> None:
        """Read at most ``most`` entries per stream at once (the worker's --limit)."""
        self._most = max(1, most)

    def stop_receiving(self) -> None:
        """Give back what was read ahead (several streams) before the worker stops."""
        ahead, self._ahead = self._ahead, []
        for received in ahead:
            self.release(received)

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
                link.run(scripts.DELAY, [keys.delayed], [_ms(envelope.delay), member(fields)])
            else:
                link.call("XADD", keys.stream, "*", *fields)
        return envelope

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        """Pipelined XADDs (delayed ones in one script); names exactly what failed."""
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
        for start in range(0, len(now), 1000):
            chunk = now[start : start + 1000]
            try:
                with link.errors("send_many", [e.id for e, _ in chunk]):
                    pipe = link.pipeline()
                    for _, fields in chunk:
                        pipe.execute_command("XADD", keys.stream, "*", *fields)
                    results = pipe.execute(raise_on_error=False)
            except PublishNotConfirmed as error:
                failed.update((e.id, str(error)) for e, _ in chunk)
                continue
            for (envelope, _), result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):
                    failed[envelope.id] = link.dsn.mask(str(result))
        if later:
            pairs: list[Any] = []
            for envelope, fields in later:
                pairs += [_ms(envelope.delay), member(fields)]
            try:
                with link.errors("send_many", [e.id for e, _ in later]):
                    link.run(scripts.DELAY, [keys.delayed], pairs)
            except PublishNotConfirmed as error:
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
                    _ms(envelope.delay),
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
        """Up to ``max``: read ahead first, then due reclaims, then one XREADGROUP.

        Due delayed messages are moved to their streams every ``delay_check``
        (sooner when one is due sooner), and idle pending entries are
        reclaimed every ``reclaim_interval``, not on every call.
        """
        if max < 1:
            return []
        names = tuple(queues) if queues else (self.queue,)
        if self._ahead:
            got = self._from_ahead(names, max)
            if got:
                return got
        deadline = time.monotonic() + timeout
        with self._link.errors("receive"):
            self._ensure_groups(names)
            while True:
                now = time.monotonic()
                if now >= self._next_promote:
                    self._promote(names, now)
                if self._reclaim_more or now >= self._next_reclaim:
                    got = self._reclaim(names, now)
                    if got:
                        return got
                wait = min(
                    deadline - now,
                    self._next_promote - now,
                    self._next_reclaim - now,
                    self.options.socket_timeout / 2,
                )
                got = self._read(names, max, wait)
                if got or time.monotonic() >= deadline:
                    return got

    def _ensure_groups(self, names: Sequence[str], *, again: bool = False) -> None:
        """XGROUP CREATE ... MKSTREAM once per stream; reading starts at the oldest entry."""
        for name in names:
            stream = self.keys(name).stream
            if stream in self._grouped and not again:
                continue
            try:
                self._link.call("XGROUP", "CREATE", stream, self.group, "0", "MKSTREAM")
            except ResponseError as error:
                if not str(error).startswith("BUSYGROUP"):
                    raise
            self._grouped.add(stream)

    def _promote(self, names: Sequence[str], now: float) -> None:
        soonest = self.options.delay_check
        for name in names:
            keys = self.keys(name)
            moved, wait = self._link.run(
                scripts.PROMOTE, [keys.delayed, keys.stream], [_PROMOTE_BATCH]
            )
            if moved >= _PROMOTE_BATCH:
                wait = 0
            if wait >= 0:
                soonest = min(soonest, wait / 1000)
        self._next_promote = now + soonest

    def _reclaim(self, names: Sequence[str], now: float) -> list[Received]:
        """One idle entry, the oldest, per call while there are more.

        One at a time, and handed out alone: a message that kills its worker
        then raises only its own delivery count, not its batch-mates'.
        """
        self._reclaim_more = False
        self._next_reclaim = now + self._reclaim_every
        if now >= self._next_sweep:
            self._sweep(names, now)
        for name in names:
            keys = self.keys(name)
            claimed, more = self._link.run(
                scripts.RECLAIM, [keys.stream], [self.group, self.consumer, self._lease_ms, 1]
            )
            if claimed:
                self._read_from.add(name)
                self._reclaim_more = bool(more)
                return [
                    self._entry(name, entry_id, fields, int(count))
                    for entry_id, count, fields in claimed
                ]
        return []

    def _sweep(self, names: Sequence[str], now: float) -> None:
        """Forget the consumer names of dead workers once they hold nothing."""
        self._next_sweep = now + max(60.0, self.lease)
        for name in names:
            gone = self._link.run(
                scripts.SWEEP,
                [self.keys(name).stream],
                [self.group, max(60_000, self._lease_ms), self.consumer],
            )
            if gone:
                logger.debug("forgot %d idle consumers of %r", gone, name)

    def _read(self, names: tuple[str, ...], max: int, wait: float) -> list[Received]:
        groups = self._slots.get(names)
        if groups is None:
            groups = self._slots[names] = self._by_slot(names)
        if len(groups) == 1:
            return self._read_group(groups[0], max, wait)
        # Several cluster slots cannot share one XREADGROUP: a quick look at
        # each, in order, then short blocking looks in turn.
        for group in groups:
            got = self._read_group(group, max, 0.0)
            if got:
                return got
        deadline = time.monotonic() + wait
        while True:
            for group in groups:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                got = self._read_group(group, max, min(remaining, _SLOT_SLICE))
                if got:
                    return got

    def _by_slot(self, names: tuple[str, ...]) -> list[tuple[str, ...]]:
        if not isinstance(self._link.client, RedisCluster):
            return [names]
        groups: dict[int, list[str]] = {}
        for name in names:
            groups.setdefault(key_slot(self.keys(name).stream.encode()), []).append(name)
        return [tuple(group) for group in groups.values()]

    def _read_group(self, names: Sequence[str], max: int, wait: float) -> list[Received]:
        streams = [self.keys(name).stream for name in names]
        count = max if self._most is None else min(max, self._most)
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if wait >= 0.001:
            args += ["BLOCK", _ms(wait)]
        args += ["STREAMS", *streams, *(">",) * len(streams)]
        self._read_from.update(names)
        try:
            reply = self._link.on_node_of(streams[0], *args)
        except ResponseError as error:
            if not str(error).startswith("NOGROUP"):
                raise
            # The stream was deleted under us: make it and its group again.
            self._ensure_groups(names, again=True)
            return []
        if not reply:
            return []
        by_stream = dict(reply.items() if isinstance(reply, Mapping) else reply)
        got: list[Received] = []
        entry = self._entry
        for name, stream in zip(names, streams, strict=True):
            entries = by_stream.get(stream.encode())
            if entries:
                got += [entry(name, entry_id, fields, 1) for entry_id, fields in entries]
        if len(got) > max:
            self._ahead += got[max:]
            self._ahead_since = time.monotonic()
            del got[max:]
        return got

    def _entry(self, queue: str, entry_id: bytes, fields: Any, count: int) -> Received:
        body, headers = split_fields(fields)
        handle = entry_id.decode()
        if body is None:
            received = Received(self, handle, queue, count, self.generation)
            received.raw = b""
            received.raw_headers = headers
            received.error = MessageDecodingFailed(
                f"the stream entry has no {BODY!r} field", b"", headers
            )
            return received
        return self.decoded(body, headers, handle, queue, delivery_count=count)

    def _from_ahead(self, names: Sequence[str], max: int) -> list[Received]:
        wanted = set(names)
        got = [received for received in self._ahead if received.queue in wanted][:max]
        if not got:
            return []
        taken = {id(received) for received in got}
        self._ahead = [received for received in self._ahead if id(received) not in taken]
        if time.monotonic() - self._ahead_since > self.lease / 3:
            # Held a while: keep only what no other worker reclaimed meanwhile.
            got = [received for received in got if self._set_idle([received], 0)[0]]
        return got

    # -- settling ------------------------------------------------------------

    def ack(self, received: Received) -> None:
        self.ack_many((received,))

    def ack_many(self, received: Sequence[Received]) -> None:
        """XACK + XDEL of every id of a queue, in one script per queue."""
        if not received:
            return
        by_queue: dict[str, list[str]] = {}
        for item in received:
            by_queue.setdefault(item.queue, []).append(item.handle)
        with self._link.errors("ack"):
            for queue, ids in by_queue.items():
                stream = self.keys(queue).stream
                for start in range(0, len(ids), 1000):
                    self._link.run(scripts.ACK, [stream], [self.group, *ids[start : start + 1000]])

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """The new attempt stored (delayed or on the stream) and the old entry gone, atomically."""
        keys = self.keys(received.queue)
        fields = self.fields(envelope)
        with self._link.errors("retry", [envelope.id]):
            self._link.run(
                scripts.RETRY,
                [keys.stream, keys.delayed],
                [self.group, received.handle, _ms(delay), member(fields)],
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
        self._set_idle([received], _RELEASED_IDLE_MS)
        self._next_reclaim = 0.0

    def renew(self, received: Received) -> None:
        """Reset its idle time, so no one reclaims it; thread-safe (a connection pool)."""
        _, taken = self._set_idle([received], 0)
        if taken:
            logger.warning("the lease on %r was lost: another worker reclaimed it", received)

    def _set_idle(self, received: Sequence[Received], idle_ms: int) -> tuple[bool, bool]:
        """(still ours, taken by another consumer) for the first of ``received``."""
        first = received[0]
        with self._link.errors("renew"):
            kept, taken = self._link.run(
                scripts.RENEW,
                [self.keys(first.queue).stream],
                [self.group, self.consumer, idle_ms, *(item.handle for item in received)],
            )
        return bool(kept), bool(taken)

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
            self._ensure_groups(names, again=True)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """XLEN, XPENDING, ZCARD of the delay set, XLEN of the dead stream, in one pipeline."""
        names = list(queues or [self.queue])
        with self._link.errors("stats"):
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
                    for name in self._read_from:
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
