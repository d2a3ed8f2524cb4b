"""``amqp://`` and ``amqps://``: courier's verbs on RabbitMQ.

::

    transport = AmqpTransport.from_dsn(
        Dsn.parse("amqp://guest:guest@localhost:5672/%2f?queue=email"),
        name="email", serializer=serializer,
    )

Queues are quorum queues with a delivery limit and a dead-letter queue
each; commands are published with confirms and ``mandatory``; events go
through a fanout exchange per topic to one queue per subscription; delays
go through a fixed set of TTL queues (levels) that dead-letter back. Every
pika detail lives in :mod:`courier_amqp.connection`; the options and their
defaults in :mod:`courier_amqp.options`; the prose in
docs/transports/amqp.md.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial

from courier.envelope import Envelope
from courier.errors import ConnectionLost, PublishNotConfirmed
from courier.serializer import Serializer
from courier.transports.base import (
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
    subscription_queue,
)
from courier.transports.dsn import Dsn
from courier_amqp.confirms import PublishBatch
from courier_amqp.connection import ACK, REJECT, REQUEUE, Session
from courier_amqp.options import AmqpOptions, default_connection_name
from courier_amqp.topology import Topology
from courier_amqp.wire import Outgoing, incoming_headers, outgoing, parameters

__all__ = ["AmqpTransport"]

logger = logging.getLogger("courier.amqp")


class AmqpTransport(Transport):
    """RabbitMQ through one pika ``SelectConnection`` on an I/O thread of its own."""

    capabilities = Capabilities(
        delay=True,
        priority=False,
        native_dead_letter=True,
        delivery_count=True,
        listable=False,
        durable=True,
        unacked_on_reconnect=Unacked.REQUEUED,
    )

    def __init__(
        self,
        dsn: Dsn | str,
        *,
        name: str = "amqp",
        serializer: Serializer,
    ) -> None:
        self.dsn = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
        self.options = options = self.dsn.option_model(AmqpOptions)
        super().__init__(name=name, queue=options.queue, serializer=serializer)
        self.capabilities = replace(
            type(self).capabilities,
            max_delay=options.delay_levels[-1],
            max_message_size=options.max_message_size,
            delivery_count=options.queue_type == "quorum",
            priority=options.max_priority is not None,
        )
        self._priority = options.max_priority is not None
        self.topology = Topology(options)
        connection_name = options.connection_name or default_connection_name(name)
        self._params = parameters(self.dsn, options, connection_name)
        self._named = options.connection_name is not None
        self._prefetch = options.prefetch
        self._auto = options.auto_setup
        self._timeout = options.connect_timeout
        self._session: Session | None = None
        self._sessions = 0
        self._connect = threading.Lock()
        self._closed = False
        #: confirm=async: sends whose confirms are still out, and the ids and
        #: reasons of those that failed, not yet raised (I/O thread appends).
        self._async = options.confirm == "async"
        self._unconfirmed: set[PublishBatch] = set()
        self._confirmed = threading.Condition()
        self._failed: deque[tuple[str, str]] = deque()

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> AmqpTransport:
        return cls(dsn, name=name, serializer=serializer)

    # -- the connection --------------------------------------------------------

    def stop_receiving(self) -> None:
        """Cancel the consumers before the worker's last acknowledgements.

        Otherwise those acknowledgements free the prefetch window, RabbitMQ
        sends more ahead, and closing the connection hands it all back with
        a raised delivery count.
        """
        session = self._session
        if session is not None and session.lost is None:
            session.stop_consuming(self._timeout)

    def limit_prefetch(self, most: int) -> None:
        """Let RabbitMQ send ahead no more than ``most`` (the worker's --limit)."""
        self._prefetch = max(1, min(self.options.prefetch, most))
        session = self._session
        if session is not None:
            session.limit_prefetch(self._prefetch)

    def identify(self, worker_id: str) -> None:
        """Name the connection after the worker, unless the DSN names it."""
        if not self._named and self._session is None:
            self._params = parameters(self.dsn, self.options, f"courier {self.name} {worker_id}")

    def _live(self) -> Session:
        """The current session, or a new one (a new generation) if it was lost."""
        session = self._session
        if session is not None and session.lost is None:
            return session
        with self._connect:
            session = self._session
            if session is not None and session.lost is None:
                return session
            if self._closed:
                raise ConnectionLost(f"transport {self.name!r} is closed")
            if session is not None:
                logger.warning(
                    "transport %r lost its connection (%s); reconnecting", self.name, session.lost
                )
                session.close(self._timeout)
                self._session = None
            session = self._open_first_reachable()
            self.topology.forget()
            self._session = session
            self.generation = session.generation
            return session

    def _open_first_reachable(self) -> Session:
        """A session on the first broker of the DSN's host list that answers, tried in order."""
        failures: list[str] = []
        for params in self._params:
            self._sessions += 1
            session = Session(
                params,
                generation=self._sessions,
                prefetch=self._prefetch,
                confirm_window=self.options.confirm_window,
                mask=self.dsn.mask,
                name=self.name,
            )
            try:
                session.open(self._timeout + 1.0)
            except ConnectionLost as error:
                failures.append(str(error))
                continue
            if failures:
                logger.warning(
                    "transport %r connected to %s:%s after: %s",
                    self.name,
                    params.host,
                    params.port,
                    "; ".join(failures),
                )
            return session
        raise ConnectionLost("; ".join(failures))

    def _holding(self, received: Received) -> Session | None:
        """The session ``received`` came on, if it is still the live one."""
        session = self._session
        if session is None or received.generation != session.generation or session.lost:
            logger.debug("%r came on a lost connection: the broker redelivers it", received)
            return None
        return session

    def _settle(self, session: Session, tags: Sequence[int], kind: str) -> None:
        try:
            session.settle(tags, kind)
        except ConnectionLost:
            logger.debug("connection lost before settling %d deliveries", len(tags))

    # -- sending -----------------------------------------------------------

    def _outgoing(self, envelope: Envelope, queue: str, delay: float) -> Outgoing:
        body, headers = self.encode(envelope)
        exchange = self.topology.delay_exchange(delay) if delay > 0 else self.options.exchange
        priority = envelope.priority if self._priority else None
        return outgoing(
            exchange, queue, body, headers, envelope.id, mandatory=True, priority=priority
        )

    def _confirm(self, session: Session, batch: PublishBatch) -> dict[str, str]:
        """Publish ``batch`` and wait for its confirms; the failures by envelope id."""
        session.track(batch)
        try:
            # If the connection is gone, the batch fails as a whole when its I/O loop stops.
            with contextlib.suppress(ConnectionLost):
                session.hand_over(batch)
            return batch.wait(self.options.confirm_timeout)
        finally:
            session.forget(batch)

    def _prepare(self, session: Session, queue: str, delayed: bool) -> None:
        if self._auto:
            self.topology.declare_queue(session, queue)
            if delayed:
                self.topology.declare_delays(session)

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        name = queue or self.queue
        message = self._outgoing(envelope, name, envelope.delay)
        self._raise_failed()
        session = self._live()
        self._prepare(session, name, envelope.delay > 0)
        if self._async:
            self._send_async(session, message)
            return envelope
        failures = self._confirm(session, PublishBatch.of([message]))
        if failures:
            raise PublishNotConfirmed(
                f"message {envelope.id} was not confirmed: {failures[envelope.id]}", [envelope.id]
            )
        return envelope

    # -- confirm=async ---------------------------------------------------------

    def _send_async(self, session: Session, message: Outgoing) -> None:
        """Write ``message`` and return; its confirm settles it in the background."""
        batch = PublishBatch.of([message], waited=False)
        batch.on_done = partial(self._settled, session)
        window = self.options.confirm_window
        unconfirmed = self._unconfirmed
        with self._confirmed:
            if len(unconfirmed) >= window:
                # The broker is behind: wait for room, as the raw client's window does.
                deadline = time.monotonic() + self.options.confirm_timeout
                while len(unconfirmed) >= window:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PublishNotConfirmed(
                            f"message {message.message_id} was not sent: the broker confirmed "
                            f"nothing of the {window} in flight within "
                            f"{self.options.confirm_timeout:g}s",
                            [message.message_id],
                        )
                    self._confirmed.wait(remaining)
            unconfirmed.add(batch)
        try:
            # If the connection goes before the confirm, the batch fails when
            # its I/O loop stops; the next send, flush or close raises that.
            session.hand_over_soon(batch)
        except ConnectionLost:
            with self._confirmed:
                unconfirmed.discard(batch)
            raise

    def _settled(self, session: Session, batch: PublishBatch) -> None:
        """A send's confirm (or its failure) came; on the I/O thread."""
        session.forget(batch)
        failures = batch.failures()
        if failures:
            self._failed.extend(failures.items())
        with self._confirmed:
            self._unconfirmed.discard(batch)
            self._confirmed.notify_all()

    def _raise_failed(self) -> None:
        """Raise what earlier sends' confirms reported, once each."""
        if not self._failed:
            return
        failed: list[tuple[str, str]] = []
        with contextlib.suppress(IndexError):
            while True:
                failed.append(self._failed.popleft())
        raise PublishNotConfirmed(
            f"{len(failed)} earlier message(s) were not confirmed: {failed[0][1]} "
            f"(this call sent nothing)",
            [message_id for message_id, _ in failed],
        )

    def flush(self) -> None:
        """Wait for the confirms of every send so far; raise any that failed.

        A no-op with ``confirm=each`` (every send waited already).
        """
        if not self._async:
            return
        deadline = time.monotonic() + self.options.confirm_timeout
        with self._confirmed:
            while self._unconfirmed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    late = [batch.ids[0] for batch in self._unconfirmed]
                    self._unconfirmed.clear()
                    raise PublishNotConfirmed(
                        f"{len(late)} message(s) had no confirm from the broker within "
                        f"{self.options.confirm_timeout:g}s",
                        late,
                    )
                self._confirmed.wait(remaining)
        self._raise_failed()

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        if not envelopes:
            return []
        self._raise_failed()
        name = queue or self.queue
        delayed = False
        for envelope in envelopes:
            if envelope.delay > 0:
                self.topology.level(envelope.delay)  # refuses a delay too long, before any I/O
                delayed = True
        try:
            session = self._live()
            self._prepare(session, name, delayed)
            # The I/O thread encodes each message when the confirm window has room.
            batch = PublishBatch(
                [envelope.id for envelope in envelopes],
                lambda index: self._outgoing(envelopes[index], name, envelopes[index].delay),
            )
            failures = self._confirm(session, batch)
        except ConnectionLost as error:
            failures = {envelope.id: str(error) for envelope in envelopes}
        if failures:
            first = next(iter(failures.values()))
            raise PublishNotConfirmed(
                f"{len(failures)} of {len(envelopes)} messages were not sent: {first}",
                [envelope.id for envelope in envelopes if envelope.id in failures],
            )
        return list(envelopes)

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        body, headers = self.encode(envelope)  # too large: refused before any I/O
        self._raise_failed()
        delayed = envelope.delay > 0
        exchange = (
            self.topology.delay_exchange(envelope.delay)
            if delayed
            else self.topology.topic_exchange(topic)
        )
        session = self._live()
        if self._auto:
            self.topology.declare_topic(session, topic, subscriptions)
            if delayed:
                self.topology.declare_delays(session)
        if delayed:
            # A delay queue dead-letters by routing key: one copy per subscription queue.
            messages = [
                outgoing(
                    exchange,
                    subscription_queue(topic, name),
                    body,
                    dict(headers),
                    envelope.id,
                    mandatory=True,
                )
                for name in subscriptions
            ]
        else:
            messages = [outgoing(exchange, topic, body, headers, envelope.id, mandatory=False)]
        failures = self._confirm(session, PublishBatch.of(messages))
        if failures:
            raise PublishNotConfirmed(
                f"event {envelope.id} to topic {topic!r} was not confirmed: "
                f"{next(iter(failures.values()))}",
                [envelope.id],
            )

    # -- receiving and settling ----------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        names = queues or (self.queue,)
        session = self._live()
        if self._auto:
            for name in names:
                self.topology.declare_queue(session, name)
        session.consume(names, self._timeout)
        taken = session.take(names, max, timeout)
        generation = session.generation
        decoded = self.decoded
        result = []
        for queue, tag, properties, body in taken:
            headers, count = incoming_headers(properties)
            result.append(
                decoded(body, headers, tag, queue, delivery_count=count, generation=generation)
            )
        return result

    def ack(self, received: Received) -> None:
        session = self._holding(received)
        if session is not None:
            self._settle(session, [received.handle], ACK)

    def ack_many(self, received: Sequence[Received]) -> None:
        session = self._session
        if session is None or session.lost:
            return
        generation = session.generation
        tags = [item.handle for item in received if item.generation == generation]
        if tags:
            self._settle(session, tags, ACK)

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        session = self._holding(received)
        if session is None:
            return
        message = self._outgoing(envelope, received.queue, delay)
        if delay > 0 and self._auto:
            self.topology.declare_delays(session)
        failures = self._confirm(session, PublishBatch.of([message]))
        if failures:
            raise PublishNotConfirmed(
                f"retry of {envelope.id} was not confirmed: {failures[envelope.id]}", [envelope.id]
            )
        self._settle(session, [received.handle], ACK)

    def reject(self, received: Received, reason: str) -> None:
        session = self._holding(received)
        if session is None:
            return
        # RabbitMQ keeps no reason of ours: x-death says "rejected". The log does.
        logger.warning(
            "rejecting %r to %s: %s",
            received,
            self.topology.dead_letter_queue(received.queue),
            reason,
        )
        self._settle(session, [received.handle], REJECT)

    def release(self, received: Received) -> None:
        session = self._holding(received)
        if session is not None:
            self._settle(session, [received.handle], REQUEUE)

    # -- administration ----------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        session = self._live()
        self.topology.declare_delays(session, force=True)
        for name in dict.fromkeys((self.queue, *queues)):
            self.topology.declare_queue(session, name, force=True)
        for topic, subscriptions in (topics or {}).items():
            self.topology.declare_topic(session, topic, subscriptions, force=True)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Ready and dead from passive declares; in flight: what this transport holds.

        ``delayed`` counts every delay queue of this transport's levels: they are
        shared by all queues, so it is the same number for each.
        """
        session = self._live()
        count = self.topology.count
        levels = [count(session, name) for name in self.topology.delay_queues()]
        delayed = None if None in levels else sum(level or 0 for level in levels)
        result = []
        for name in queues or [self.queue]:
            in_flight: int = session.run(partial(session.in_flight, name), self._timeout)
            result.append(
                QueueStats(
                    name,
                    ready=count(session, name),
                    in_flight=in_flight,
                    delayed=delayed,
                    dead=count(session, self.topology.dead_letter_queue(name)),
                )
            )
        return result

    def close(self) -> None:
        """Close the connection; with ``confirm=async``, first wait for the confirms.

        A send whose confirm failed is raised here, after the connection is
        closed, if no earlier call raised it.
        """
        unconfirmed: PublishNotConfirmed | None = None
        if self._async and not self._closed:
            try:
                self.flush()
            except PublishNotConfirmed as error:
                unconfirmed = error
        with self._connect:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            session.close(self._timeout)
        if unconfirmed is not None:
            raise unconfirmed

    # -- for tests and diagnostics -------------------------------------------

    @property
    def session(self) -> Session | None:
        """The live connection (None before the first call or after close)."""
        return self._session

    def declared(self) -> dict[str, list[str]]:
        """Every queue and exchange this transport declared, for a test's teardown."""
        return self.topology.declared()

    def __repr__(self) -> str:
        return f"<AmqpTransport {self.name!r} {self.dsn} queue={self.queue!r}>"
