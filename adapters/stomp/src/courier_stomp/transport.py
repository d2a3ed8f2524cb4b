"""``stomp://`` and ``stomp+ssl://``: courier's verbs over STOMP 1.2.

::

    transport = StompTransport.from_dsn(
        Dsn.parse("stomp://guest:guest@localhost:61613/%2f?queue=email"),
        name="email", serializer=serializer,
    )

Commands go to ``/queue/<name>`` with a receipt each (``send`` returns once
the broker confirmed it); events go once to ``/topic/<topic>``, which the
broker copies to a durable queue per subscription; delays go through
broker-side TTL queues (RabbitMQ) or the broker's scheduler (ActiveMQ,
Artemis). Every stomp.py detail lives in :mod:`courier_stomp.connection`,
every broker difference in :mod:`courier_stomp.flavors`, the options and
their defaults in :mod:`courier_stomp.options`, the prose in
docs/transports/stomp.md.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from courier.envelope import Envelope
from courier.errors import ConnectionLost, MessageDecodingFailed, PublishNotConfirmed
from courier.serializer import Serializer
from courier.transports.base import (
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
)
from courier.transports.dsn import Dsn
from courier_stomp.connection import Session
from courier_stomp.endpoint import endpoint
from courier_stomp.flavors import flavor_for
from courier_stomp.options import StompOptions
from courier_stomp.topology import Topology
from courier_stomp.wire import incoming, outgoing

__all__ = ["StompTransport"]

logger = logging.getLogger("courier.stomp")

#: The header a rejected message carries into its dead-letter queue.
REJECT_REASON = "courier-reject-reason"

#: One outgoing frame: destination, body, headers.
Outgoing = tuple[str, bytes, dict[str, str]]


class StompTransport(Transport):
    """A publishing and a consuming STOMP connection, each opened on first use."""

    capabilities = Capabilities(
        delay=True,
        priority=False,
        lease=False,
        native_dead_letter=True,
        delivery_count=False,
        listable=False,
        durable=True,
        unacked_on_reconnect=Unacked.REQUEUED,
    )

    def __init__(self, dsn: Dsn | str, *, name: str = "stomp", serializer: Serializer) -> None:
        self.dsn = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
        self.options = options = self.dsn.option_model(StompOptions)
        super().__init__(name=name, queue=options.queue, serializer=serializer)
        self.flavor = flavor = flavor_for(options)
        self.capabilities = replace(
            type(self).capabilities,
            delay=options.delays,
            max_delay=flavor.max_delay if options.delays else None,
            max_message_size=options.max_message_size,
            delivery_count=flavor.counts_deliveries,
        )
        self._endpoint = endpoint(self.dsn, options, flavor.connect_headers())
        self._prefetch = options.prefetch
        self._generations = itertools.count(1)
        self._publisher: Session | None = None
        self._consumer: Session | None = None
        self._connect = threading.Lock()
        self._closed = False
        self.topology = Topology(flavor, lambda: self._open("declare"))

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> StompTransport:
        return cls(dsn, name=name, serializer=serializer)

    # -- the connections -------------------------------------------------------

    def _open(self, role: str) -> Session:
        session = Session(
            self._endpoint,
            generation=next(self._generations),
            role=role,
            receipt_window=self.options.receipt_window,
            mask=self.dsn.mask,
            name=self.name,
        )
        session.open()
        return session

    def _live(self, role: str) -> Session:
        """The live session for ``role`` ("publish" or "consume"), or a new one."""
        session = self._publisher if role == "publish" else self._consumer
        if session is not None and session.lost is None:
            return session
        with self._connect:
            session = self._publisher if role == "publish" else self._consumer
            if session is not None and session.lost is None:
                return session
            if self._closed:
                raise ConnectionLost(f"transport {self.name!r} is closed")
            if session is not None:
                logger.warning(
                    "transport %r lost its %s connection (%s); reconnecting",
                    self.name,
                    role,
                    session.lost,
                )
                session.close()
            session = self._open(role)
            if role == "publish":
                self._publisher = session
            else:
                self._consumer = session
                self.generation = session.generation
            return session

    def _holding(self, received: Received) -> Session | None:
        """The consuming session ``received`` came on, if it is still the live one."""
        session = self._consumer
        if session is None or received.generation != session.generation or session.lost:
            logger.debug("%r came on a lost connection: the broker redelivers it", received)
            return None
        return session

    def limit_prefetch(self, most: int) -> None:
        """Let the broker send ahead no more than ``most`` (the worker's --limit)."""
        self._prefetch = max(1, min(self.options.prefetch, most))

    def stop_receiving(self) -> None:
        """Nothing: an UNSUBSCRIBE would leave the messages held unacknowledgeable.

        RabbitMQ forgets a subscription's deliveries on UNSUBSCRIBE, and an
        ACK for one of them is an ERROR; what was sent ahead goes back when
        the connection closes instead.
        """

    # -- sending -----------------------------------------------------------

    def _frame(self, envelope: Envelope, queue: str, delay: float) -> Outgoing:
        """Encode ``envelope`` for ``queue``; raises (too large, too long a delay) before I/O."""
        body, headers = self.encode(envelope)
        topology = self.topology
        destination, extra = (
            topology.send_later(queue, delay) if delay > 0 else topology.send_to(queue)
        )
        stomp_headers = outgoing(headers, self.flavor)
        stomp_headers.update(extra)
        return destination, body, stomp_headers

    def _send(self, ids: Sequence[str], frame: Callable[[int], Outgoing]) -> dict[str, str]:
        """SEND each frame with a receipt on the publishing connection; failures by id."""
        try:
            session = self._live("publish")
        except ConnectionLost as error:
            return {message_id: str(error) for message_id in ids}
        return session.publish(ids, frame, self.options.receipt_timeout)

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        prepared = self._frame(envelope, queue or self.queue, envelope.delay)
        failures = self._send([envelope.id], lambda _: prepared)
        if failures:
            raise PublishNotConfirmed(
                f"message {envelope.id} was not confirmed: {failures[envelope.id]}", [envelope.id]
            )
        return envelope

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        if not envelopes:
            return []
        name = queue or self.queue
        for envelope in envelopes:
            if envelope.delay > 0:
                self.flavor.level(envelope.delay)  # refuses a delay too long, before any I/O
        failures = self._send(
            [envelope.id for envelope in envelopes],
            lambda index: self._frame(envelopes[index], name, envelopes[index].delay),
        )
        if failures:
            first = next(iter(failures.values()))
            raise PublishNotConfirmed(
                f"{len(failures)} of {len(envelopes)} messages were not sent: {first}",
                [envelope.id for envelope in envelopes if envelope.id in failures],
            )
        return list(envelopes)

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        """One SEND to the topic; the broker copies it to every subscription queue.

        The subscriptions named here are declared first (once per
        connection), so an event published before any worker started is kept.
        """
        body, headers = self.encode(envelope)  # too large: refused before any I/O
        destination, extra = self.topology.send_to_topic(topic, envelope.delay)
        stomp_headers = outgoing(headers, self.flavor)
        stomp_headers.update(extra)
        if subscriptions:
            try:
                generation = self._live("publish").generation
                self.topology.declare_topic(generation, topic, subscriptions)
            except ConnectionLost as error:
                raise PublishNotConfirmed(
                    f"event {envelope.id}: could not declare the subscriptions of {topic!r}: "
                    f"{error}",
                    [envelope.id],
                ) from None
        failures = self._send([envelope.id], lambda _: (destination, body, stomp_headers))
        if failures:
            raise PublishNotConfirmed(
                f"event {envelope.id} to topic {topic!r} was not confirmed: "
                f"{failures[envelope.id]}",
                [envelope.id],
            )

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Declare the queues, and each topic's subscription queues bound to it."""
        self.topology.setup(list(dict.fromkeys((self.queue, *queues))), topics or {})

    # -- receiving and settling ----------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        names = queues or (self.queue,)
        session = self._live("consume")
        for name in names:
            if name not in session.subscribed:
                destination, headers = self.topology.consume_from(name, self._prefetch)
                session.subscribe(name, destination, headers)
        taken = session.take(names, max, timeout)
        generation = session.generation
        flavor = self.flavor
        decoded = self.decoded
        result = []
        for queue, ack, frame_headers, body in taken:
            count = flavor.delivery_count(frame_headers)
            headers, problem = incoming(frame_headers, flavor)
            if problem is None:
                result.append(
                    decoded(body, headers, ack, queue, delivery_count=count, generation=generation)
                )
            else:
                received = Received(self, ack, queue, count, generation)
                received.raw, received.raw_headers = body, headers
                received.error = MessageDecodingFailed(problem, body, headers)
                result.append(received)
        return result

    def _settle(self, received: Sequence[Received], command: str, requeue: bool = True) -> None:
        session = self._consumer
        if session is None or session.lost:
            return
        generation = session.generation
        acks = [item.handle for item in received if item.generation == generation]
        if acks:
            with contextlib.suppress(ConnectionLost):  # the broker takes them back anyway
                session.settle(acks, command, requeue)

    def ack(self, received: Received) -> None:
        self._settle([received], "ACK")

    def ack_many(self, received: Sequence[Received]) -> None:
        self._settle(received, "ACK")

    def release(self, received: Received) -> None:
        self._settle([received], "NACK", requeue=True)

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """Send ``envelope`` (after ``delay``), then acknowledge ``received``."""
        if self._holding(received) is None:
            return
        prepared = self._frame(envelope, received.queue, delay)
        failures = self._send([envelope.id], lambda _: prepared)
        if failures:
            raise PublishNotConfirmed(
                f"retry of {envelope.id} was not confirmed: {failures[envelope.id]}", [envelope.id]
            )
        self._settle([received], "ACK")

    def reject(self, received: Received, reason: str) -> None:
        """Move ``received`` to its queue's dead-letter queue, with ``reason``; then ACK it.

        STOMP has no dead-lettering of its own, and RabbitMQ's needs queue
        arguments that every producer would have to repeat: courier sends a
        copy (the raw bytes, for an undecodable message) with a receipt, and
        acknowledges the original only once the copy is kept.
        """
        if self._holding(received) is None:
            return
        dead = received.queue + self.options.dead_letter_suffix
        if received.envelope is not None:
            body, headers = self.serializer.encode(received.envelope)
        else:
            body, headers = received.raw or b"", dict(received.raw_headers or {})
        headers[REJECT_REASON] = reason[:1000]
        destination, extra = self.topology.send_to(dead)
        stomp_headers = outgoing(headers, self.flavor)
        stomp_headers.update(extra)
        logger.warning("rejecting %r to %s: %s", received, dead, reason)
        failures = self._send(["reject"], lambda _: (destination, body, stomp_headers))
        if failures:
            raise PublishNotConfirmed(
                f"the dead letter of {received!r} was not confirmed: {failures['reject']}",
                [] if received.envelope is None else [received.envelope.id],
            )
        self._settle([received], "ACK")

    # -- administration ----------------------------------------------------

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Only ``in_flight`` (what this transport holds): STOMP cannot count a queue."""
        session = self._consumer
        return [
            QueueStats(
                name, in_flight=session.in_flight(name) if session and not session.lost else 0
            )
            for name in queues or [self.queue]
        ]

    def close(self) -> None:
        with self._connect:
            self._closed = True
            sessions = [self._publisher, self._consumer]
            self._publisher = self._consumer = None
        for session in sessions:
            if session is not None:
                session.close()

    # -- for tests and diagnostics -------------------------------------------

    @property
    def consumer(self) -> Session | None:
        """The live consuming connection (None before the first receive or after close)."""
        return self._consumer

    @property
    def publisher(self) -> Session | None:
        """The live publishing connection (None before the first send or after close)."""
        return self._publisher

    def declared(self) -> list[str]:
        """The RabbitMQ queues this transport addressed (declared), for a test's teardown."""
        return self.topology.declared()

    def __repr__(self) -> str:
        return f"<StompTransport {self.name!r} {self.dsn} queue={self.queue!r}>"
