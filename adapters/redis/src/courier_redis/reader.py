"""The receiving side: XREADGROUP, read-ahead, reclaims and due delays.

``receive`` hands out, in this order:

1. what an earlier XREADGROUP read ahead (``prefetch`` per stream; the
   worker asks for fewer, and COUNT applies to each stream read);
2. one idle entry of a dead or stuck consumer (XAUTOCLAIM COUNT 1 from the
   oldest idle one), when a reclaim is due: every ``reclaim_interval``, and
   at once again while more are waiting;
3. new entries, from one XREADGROUP with COUNT and BLOCK over every queue
   asked for (in a cluster, one per slot).

Before reading it moves due delayed messages to their streams (every
``delay_check``, sooner when one falls due sooner), and it never blocks past
the next of those moments, so nothing waits on a timer that is not running.

Read-ahead entries are pending to this consumer while they wait here. The
worker's keepalive does not know them, so one that waited longer than a
third of the lease is checked when it is handed out: if another consumer
reclaimed it meanwhile it is dropped here (the other one has it); if not,
its idle time is reset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot
from redis.exceptions import ResponseError

from courier.errors import MessageDecodingFailed
from courier.transports.base import Received
from courier_redis import scripts
from courier_redis.wire import BODY, split_fields

if TYPE_CHECKING:
    from courier_redis.transport import RedisTransport

__all__ = ["Reader", "milliseconds"]

logger = logging.getLogger("courier.redis")

#: Most delayed messages one promote script moves to a stream.
_PROMOTE_BATCH = 200
#: With queues in several cluster slots, each blocking look lasts at most this.
_SLOT_SLICE = 0.05


def milliseconds(seconds: float) -> int:
    """Whole milliseconds for Redis, never rounding a positive time down to 0."""
    return max(1, round(seconds * 1000)) if seconds > 0 else 0


class Reader:
    """The receive state of one :class:`RedisTransport` (used by its worker thread)."""

    def __init__(self, transport: RedisTransport) -> None:
        self.transport = transport
        options = transport.options
        self.prefetch = options.prefetch
        self.delay_check = options.delay_check
        self.reclaim_every = options.reclaim_every()
        self.block_cap = options.socket_timeout / 2
        self.lease_ms = milliseconds(options.lease)
        #: Entries read beyond what the worker asked for, per queue, oldest first;
        #: and since when the oldest of them waits.
        self.ahead: dict[str, list[Received]] = {}
        self.ahead_since = 0.0
        #: The worker's --limit: never read more than this at once.
        self.most: int | None = None
        #: Queues this consumer read from (``close`` forgets it there).
        self.read_from: set[str] = set()
        self._grouped: set[str] = set()
        self._next_promote = 0.0
        self._next_reclaim = 0.0
        self._next_sweep = 0.0
        self._reclaim_more = False
        self._slots: dict[tuple[str, ...], list[tuple[str, ...]]] = {}

    def receive(self, names: tuple[str, ...], max: int, timeout: float) -> list[Received]:
        if self.ahead:
            got = self._from_ahead(names, max)
            if got:
                return got
        link = self.transport.link
        deadline = time.monotonic() + timeout
        with link.errors("receive"):
            self.ensure_groups(names)
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
                    self.block_cap,
                )
                got = self._read(names, max, wait)
                if got or time.monotonic() >= deadline:
                    return got

    def reclaim_soon(self) -> None:
        """Look for idle entries on the next receive (something was just released)."""
        self._next_reclaim = 0.0

    def take_ahead(self) -> list[Received]:
        """Everything read ahead, now no longer here (to be released)."""
        ahead, self.ahead = self.ahead, {}
        return [received for waiting in ahead.values() for received in waiting]

    def ensure_groups(self, names: Sequence[str], *, again: bool = False) -> None:
        """XGROUP CREATE ... MKSTREAM once per stream; reading starts at the oldest entry."""
        transport = self.transport
        for name in names:
            stream = transport.keys(name).stream
            if stream in self._grouped and not again:
                continue
            try:
                transport.link.call("XGROUP", "CREATE", stream, transport.group, "0", "MKSTREAM")
            except ResponseError as error:
                if not str(error).startswith("BUSYGROUP"):
                    raise
            self._grouped.add(stream)

    # -- delays and reclaims -----------------------------------------------------

    def _promote(self, names: Sequence[str], now: float) -> None:
        soonest = self.delay_check
        transport = self.transport
        for name in names:
            keys = transport.keys(name)
            moved, wait = transport.link.run(
                scripts.PROMOTE, [keys.delayed, keys.stream], [_PROMOTE_BATCH]
            )
            if moved >= _PROMOTE_BATCH:
                wait = 0
            if wait >= 0:
                soonest = min(soonest, wait / 1000)
        self._next_promote = now + soonest

    def _reclaim(self, names: Sequence[str], now: float) -> list[Received]:
        """One idle entry, the oldest, per call while more are waiting.

        One at a time, and handed out alone: a message that kills its worker
        then raises only its own delivery count, not its batch-mates'.
        """
        self._reclaim_more = False
        self._next_reclaim = now + self.reclaim_every
        if now >= self._next_sweep:
            self._sweep(names, now)
        transport = self.transport
        for name in names:
            claimed, more = transport.link.run(
                scripts.RECLAIM,
                [transport.keys(name).stream],
                [transport.group, transport.consumer, self.lease_ms, 1],
            )
            if more:
                self._reclaim_more = True  # the next receive claims the next one
            if claimed:
                self.read_from.add(name)
                got = [
                    self._entry(name, entry_id, fields, int(count))
                    for entry_id, count, fields in claimed
                ]
                waiting = self.ahead.get(name)
                if waiting:  # read ahead and reclaimed by ourselves: hand out once
                    handles = {received.handle for received in got}
                    waiting[:] = [r for r in waiting if r.handle not in handles]
                return got
        return []

    def _sweep(self, names: Sequence[str], now: float) -> None:
        """Forget the consumer names of dead workers once they hold nothing."""
        transport = self.transport
        self._next_sweep = now + max(60.0, transport.lease)
        for name in names:
            gone = transport.link.run(
                scripts.SWEEP,
                [transport.keys(name).stream],
                [transport.group, max(60_000, self.lease_ms), transport.consumer],
            )
            if gone:
                logger.debug("forgot %d idle consumers of %r", gone, name)

    # -- reading -------------------------------------------------------------

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
        if not self.transport.link.cluster:
            return [names]
        groups: dict[int, list[str]] = {}
        for name in names:
            stream = self.transport.keys(name).stream
            groups.setdefault(key_slot(stream.encode()), []).append(name)
        return [tuple(group) for group in groups.values()]

    def _read_group(self, names: Sequence[str], max: int, wait: float) -> list[Received]:
        transport = self.transport
        streams = [transport.keys(name).stream for name in names]
        count = max if max > self.prefetch else self.prefetch
        if self.most is not None and count > self.most:
            count = self.most
        args: list[Any] = [
            "XREADGROUP",
            "GROUP",
            transport.group,
            transport.consumer,
            "COUNT",
            count,
        ]
        if wait >= 0.001:
            args += ["BLOCK", milliseconds(wait)]
        args += ["STREAMS", *streams, *(">",) * len(streams)]
        self.read_from.update(names)
        try:
            reply = transport.link.read(streams[0], *args)
        except ResponseError as error:
            if not str(error).startswith("NOGROUP"):
                raise
            # The stream was deleted under us: make it and its group again.
            self.ensure_groups(names, again=True)
            return []
        if not reply:
            return []
        by_stream: dict[bytes, Any] = dict(reply.items() if isinstance(reply, Mapping) else reply)
        got: list[Received] = []
        entry = self._entry
        for name, stream in zip(names, streams, strict=True):
            entries = by_stream.get(stream.encode())
            if entries:
                got += [entry(name, entry_id, fields, 1) for entry_id, fields in entries]
        if len(got) > max:
            if not any(self.ahead.values()):
                self.ahead_since = time.monotonic()
            for received in got[max:]:
                self.ahead.setdefault(received.queue, []).append(received)
            del got[max:]
        return got

    def _entry(self, queue: str, entry_id: bytes, fields: Any, count: int) -> Received:
        body, headers = split_fields(fields)
        transport = self.transport
        handle = entry_id.decode()
        if body is None:
            received = Received(transport, handle, queue, count, transport.generation)
            received.raw = b""
            received.raw_headers = headers
            received.error = MessageDecodingFailed(
                f"the stream entry has no {BODY!r} field", b"", headers
            )
            return received
        return transport.decoded(body, headers, handle, queue, delivery_count=count)

    def _from_ahead(self, names: Sequence[str], max: int) -> list[Received]:
        got: list[Received] = []
        for name in names:
            waiting = self.ahead.get(name)
            if waiting:
                wanted = max - len(got)
                got += waiting[:wanted]
                del waiting[:wanted]
                if len(got) >= max:
                    break
        if got and time.monotonic() - self.ahead_since > self.transport.lease / 3:
            # Waited a while: keep only what no other consumer reclaimed meanwhile.
            kept = self.transport.set_idle(got, 0)[0]
            got = [received for received in got if (received.queue, received.handle) in kept]
            self.ahead_since = time.monotonic()
        return got
