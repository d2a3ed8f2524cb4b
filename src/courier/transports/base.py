"""The Transport protocol: one small verb per thing a broker does.

A transport is a connection to one broker with a default queue. The core
talks to every broker through the verbs below and nothing else; what a
broker cannot do natively it says in :class:`Capabilities`, and the core
emulates it or refuses the configuration at startup.

Usage, as the bus and the worker use it::

    transport.setup()
    transport.send(envelope)                      # returns once the broker has it
    for received in transport.receive(max=10, timeout=1.0):
        ...handle received.envelope...
        transport.ack(received)                   # or retry / reject / release
    transport.close()

The contract every verb must keep is written in its docstring, and
:mod:`courier.testing.contract` checks it against the real broker.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from courier.envelope import Envelope
from courier.errors import (
    MessageDecodingFailed,
    MessageTooLarge,
    PublishNotConfirmed,
    TransportError,
    ValidationFailed,
)
from courier.serializer import Headers, Serializer

ErrorT = TypeVar("ErrorT", bound=BaseException)

#: The header in which :meth:`Listable.keep` counts the writes of one id.
KEPT_HEADER = Headers.KEPT

__all__ = [
    "KEPT_HEADER",
    "NEEDS_ACK",
    "Capabilities",
    "Listable",
    "Outcome",
    "QueueStats",
    "Received",
    "Transport",
    "Unacked",
    "body_limit",
    "detached",
    "kept_count",
    "subscription_queue",
]


class Unacked(enum.Enum):
    """What a broker does with unacknowledged messages when a connection dies.

    It decides what courier does with a :class:`Received` from before a
    reconnect.
    """

    #: AMQP, STOMP: the broker takes them back at once; an acknowledgement
    #: on the new connection would name an unknown delivery, so courier
    #: sends none and the message comes again.
    REQUEUED = "requeued"
    #: Redis, SQS, SQLite: the handle outlives the connection; the
    #: acknowledgement goes through on the new one.
    KEPT = "kept"
    #: beanstalkd: the jobs are returned; a stale delete answers NOT_FOUND,
    #: which means just that.
    RETURNED = "returned"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport does natively; the core emulates or refuses the rest."""

    #: Delayed delivery on the broker side, and its longest delay in seconds.
    delay: bool = False
    max_delay: float | None = None
    #: Higher-priority messages are delivered first.
    priority: bool = False
    #: Received messages are leased: they come back if not settled in time,
    #: and ``renew`` extends the lease.
    lease: bool = False
    #: The broker has its own dead-letter place that ``reject`` uses.
    native_dead_letter: bool = False
    #: ``Received.delivery_count`` comes from the broker, not a guess.
    delivery_count: bool = False
    #: Bodies larger than this are refused by ``send`` (None: no limit).
    max_message_size: int | None = None
    #: Each message's own ``ttr`` (``bus.dispatch(msg, ttr=...)``) is its
    #: lease: how long a worker may hold it before another may take it. A
    #: transport without it refuses a ``ttr`` at dispatch.
    ttr: bool = False
    #: Implements :class:`Listable`, so it can be a failure transport.
    listable: bool = False
    #: Messages survive the process (memory and sync do not).
    durable: bool = True
    #: Handles messages in the dispatching process (``sync://``).
    in_process: bool = False
    #: What happens to unacknowledged messages on a reconnect.
    unacked_on_reconnect: Unacked = Unacked.KEPT


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many messages a queue holds, by state; None where the broker cannot tell."""

    queue: str
    ready: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    dead: int | None = None


class Outcome(enum.Enum):
    """How the consume stack settled a received message."""

    #: Handled: acknowledge (the worker batches these).
    ACK = "ack"
    #: Copied to the failure transport: acknowledge the original.
    DEAD_LETTERED = "dead_lettered"
    #: Handed back to the transport with a delay: settled.
    RETRIED = "retried"
    #: Rejected to the broker's own dead letters: settled.
    REJECTED = "rejected"
    #: Given back to the broker for redelivery: settled.
    RELEASED = "released"

    @property
    def needs_ack(self) -> bool:
        return self in NEEDS_ACK


#: The outcomes that still need an acknowledgement (the worker batches them).
NEEDS_ACK = frozenset({Outcome.ACK, Outcome.DEAD_LETTERED})


class Received:
    """One delivery of a message from a transport.

    ``envelope`` is None when the bytes could not be decoded; then
    ``error`` says why and ``raw`` / ``raw_headers`` keep the evidence for
    the invalid-message transport. ``handle`` is the broker's own token
    (delivery tag, receipt handle, row id); ``generation`` the connection it
    came on; ``delivery_count`` how often the broker handed it out, 1 on the
    first delivery.
    """

    __slots__ = (
        "delivery_count",
        "envelope",
        "error",
        "failure",
        "generation",
        "handle",
        "outcome",
        "queue",
        "raw",
        "raw_headers",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        handle: Any,
        queue: str,
        delivery_count: int = 1,
        generation: int = 0,
    ) -> None:
        self.transport = transport
        self.handle = handle
        self.queue = queue
        self.delivery_count = delivery_count
        self.generation = generation
        #: The decoded envelope (None when undecodable), as delivered.
        self.envelope: Envelope | None = None
        #: For undecodable messages: the bytes, headers and reason.
        self.raw: bytes | None = None
        self.raw_headers: Mapping[str, str] | None = None
        self.error: MessageDecodingFailed | ValidationFailed | None = None
        #: Set by the consume stack: how this delivery was settled.
        self.outcome: Outcome | None = None
        #: Set by the consume stack: what the handler raised, if anything.
        self.failure: BaseException | None = None

    def __repr__(self) -> str:
        what = self.envelope if self.envelope is not None else f"undecodable: {self.error}"
        return (
            f"Received({what}, transport={self.transport.name!r}, queue={self.queue!r}, "
            f"delivery_count={self.delivery_count})"
        )


@runtime_checkable
class Listable(Protocol):
    """A transport whose stored messages can be browsed: a failure store."""

    def list(self, queue: str | None = None, *, limit: int | None = None) -> list[Envelope]:
        """Messages waiting in ``queue`` (default queue), oldest first."""
        ...

    def find(self, message_id: str, queue: str | None = None) -> Envelope | None:
        """The message with this envelope id, or None."""
        ...

    def remove(self, message_id: str, queue: str | None = None) -> bool:
        """Delete the message with this envelope id; False if it was not there."""
        ...

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        """Store ``envelope`` as the one record of its id; return how often it was kept.

        Idempotent on the envelope id, atomically: a waiting record with the
        same id is replaced, not joined by a second one, so a worker that
        dies between writing a dead letter and acknowledging the original
        never leaves two. The count (1 the first time) travels in the
        stored envelope's ``courier-kept`` header.
        """
        ...


def subscription_queue(topic: str, subscription: str) -> str:
    """The queue that holds one subscription's copy of a topic's events."""
    return f"{topic}.{subscription}"


class Transport(ABC):
    """Base class for transports: the verbs, their contracts, shared helpers.

    Subclasses set ``capabilities`` and implement the abstract verbs; the
    batch verbs fall back to loops over the single ones.
    """

    #: What this transport does natively (an instance may refine its class's).
    capabilities: Capabilities = Capabilities()

    def __init__(self, *, name: str, queue: str, serializer: Serializer) -> None:
        self.name = name
        self.queue = queue
        self.serializer = serializer
        #: Bumped on every reconnect; a Received carries the one it came on.
        self.generation = 0

    # -- sending -----------------------------------------------------------

    @abstractmethod
    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        """Put ``envelope`` on ``queue``; return once the broker has it.

        Honours ``envelope.delay`` and ``envelope.priority`` where the
        capabilities say so. Raises :class:`MessageTooLarge` before any
        network call and :class:`PublishNotConfirmed` if the broker refuses.
        Returns the envelope, with ``transport_message_id`` set where the
        broker assigns one.
        """

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        """Send a batch, keeping many confirmations in flight where possible.

        On partial failure raises :class:`PublishNotConfirmed` naming the
        envelope ids that failed; the others are sent.
        """
        sent: list[Envelope] = []
        failed: list[str] = []
        last: Exception | None = None
        for envelope in envelopes:
            try:
                sent.append(self.send(envelope, queue))
            except (TransportError, MessageTooLarge) as error:
                failed.append(envelope.id)
                last = error
        if failed:
            raise PublishNotConfirmed(
                f"{len(failed)} of {len(envelopes)} messages were not sent: {last}", failed
            ) from last
        return sent

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        """An event to every subscription queue ``<topic>.<subscription>``.

        With no subscriptions it does nothing: an event nobody listens to is
        not an error.
        """
        failed: list[str] = []
        last: Exception | None = None
        for subscription in subscriptions:
            try:
                self.send(envelope, subscription_queue(topic, subscription))
            except TransportError as error:
                failed.append(envelope.id)
                last = error
        if failed:
            raise PublishNotConfirmed(
                f"event {envelope.id} reached {len(subscriptions) - len(failed)} of "
                f"{len(subscriptions)} subscriptions of {topic!r}: {last}",
                [envelope.id],
            ) from last

    def subscriptions(self, topic: str) -> list[str]:
        """Subscriptions the broker remembers for ``topic`` (recorded by ``setup``)."""
        return []

    # -- receiving and settling -----------------------------------------------

    @abstractmethod
    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        """Up to ``max`` messages from ``queues`` (default: the DSN's queue).

        Waits at most ``timeout`` seconds for the first one; returns an empty
        list when there is none. Undecodable messages come back too, with
        ``envelope`` None and the reason in ``error``: they must be
        dead-lettered, never dropped and never retried.
        """

    @abstractmethod
    def ack(self, received: Received) -> None:
        """The message is done: the broker forgets it."""

    def ack_many(self, received: Sequence[Received]) -> None:
        """Acknowledge a batch, in one round trip where the broker allows it."""
        for item in received:
            self.ack(item)

    @abstractmethod
    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """Replace ``received`` by ``envelope``, delivered after ``delay`` seconds.

        The retry middleware has already raised ``envelope.attempt``. A
        broker that cannot rewrite a message sends the new one and then
        acknowledges the old: if the send fails the old one stays.
        """

    @abstractmethod
    def reject(self, received: Received, reason: str) -> None:
        """Dead-letter ``received`` on the broker side, with ``reason`` where kept.

        The core uses this only when no failure transport is configured;
        otherwise it copies the message there and acknowledges the original.
        """

    @abstractmethod
    def release(self, received: Received) -> None:
        """Give an unstarted, prefetched message back at once (shutdown)."""

    def renew(self, received: Received) -> None:
        """Extend the lease on ``received``; a no-op where there is none.

        Called from the worker's keepalive thread: implementations lock
        around their connection.
        """

    def identify(self, worker_id: str) -> None:
        """Learn the worker's id before the first connection, to show it to the broker.

        Where a broker displays client names (RabbitMQ's management UI), an
        operator can then tell which worker holds which connection.
        """

    def stop_receiving(self) -> None:
        """Stop the broker sending messages ahead; the worker is about to stop.

        Called before the worker's last acknowledgements, so a broker that
        pushes messages (AMQP) does not send more that closing would then
        hand back with a raised delivery count. A later ``receive`` starts
        again.
        """

    def limit_prefetch(self, most: int) -> None:
        """Never hold more than ``most`` undelivered messages ahead of the worker.

        The worker calls it with its ``--limit``, so a broker that pushes
        messages ahead (AMQP's prefetch) does not hand out, and then take
        back with a raised delivery count, more than the worker will handle.
        """

    def message_key(self, received: Received) -> str | None:
        """What names this physical message on the broker across redeliveries, if anything.

        A row id, a stream entry id, a job id: the record of undecodable
        bytes is keyed by it, so a copy redelivered after a worker died
        replaces its record while identical bytes sent twice stay two
        records. None (the default) keys the record by the bytes themselves.
        """
        return None

    def keepalive_interval(self) -> float | None:
        """How often a worker should ``renew`` what it holds; None: never."""
        return None

    # -- administration ----------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Declare the default queue, ``queues``, and each topic's subscription queues.

        ``topics`` maps a topic to its subscription names; brokers that can
        remember them do, so a producer that does not import the handlers
        still knows where to publish.
        """

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per queue (default: the DSN's queue)."""
        return [QueueStats(queue) for queue in (queues or [self.queue])]

    def flush(self) -> None:
        """Wait until every message sent so far is confirmed; raise any that was not.

        A no-op for transports whose ``send`` returns once the broker has the
        message (all of them, unless a DSN asks for background confirms, as
        AMQP's ``confirm=async`` does).
        """

    def close(self) -> None:
        """Disconnect; the transport may not be used afterwards."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- helpers for implementations ----------------------------------------

    def encode(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]:
        """Serialize, refusing before any I/O what the broker or a consumer would refuse.

        The limit is the smaller of the broker's (``max_message_size``) and
        the serializer's ``max_body``, which every consumer of this bus
        applies when decoding: a message sent past it would only ever come
        back as an invalid message.
        """
        body, headers = self.serializer.encode(envelope)
        limit = body_limit(self.serializer, envelope.type)
        broker = self.capabilities.max_message_size
        if broker is not None and broker < limit:
            limit = broker
        if len(body) > limit:
            raise MessageTooLarge(len(body), limit)
        return body, headers

    def decoded(
        self,
        body: bytes,
        headers: Mapping[str, str],
        handle: Any,
        queue: str,
        *,
        delivery_count: int = 1,
        transport_message_id: str | None = None,
        generation: int | None = None,
    ) -> Received:
        """A Received from raw bytes, decoded or carrying why it could not be.

        ``generation`` is the connection the delivery arrived on (default:
        the current one); a transport with its own I/O thread knows better.
        """
        received = Received(
            self,
            handle,
            queue,
            delivery_count,
            self.generation if generation is None else generation,
        )
        serializer = self.serializer
        try:
            # courier's own serializer builds the envelope with ``received``
            # in place: one tuple, not a copy of it.
            decode_for = getattr(serializer, "decode_for", None)
            if decode_for is not None:
                envelope = decode_for(body, headers, received)
            else:
                envelope = attach(serializer.decode(body, headers), received)
        except (MessageDecodingFailed, ValidationFailed) as error:
            received.raw = body
            received.raw_headers = dict(headers)
            received.error = detached(error)
            return received
        if transport_message_id is not None:
            envelope = envelope.with_(transport_message_id=transport_message_id)
        received.envelope = envelope
        return received

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} queue={self.queue!r}>"


def detached(error: ErrorT) -> ErrorT:
    """``error`` as data: without the traceback and chained errors it was raised with.

    A caught decoding error's traceback holds the frames that held the raw
    body, and the Received that keeps the error is in those frames: a cycle
    that only the cyclic garbage collector frees, whenever it happens to
    run. A worker fed large undecodable bodies would grow by one body per
    message until then.
    """
    error.__traceback__ = None
    error.__context__ = None
    error.__cause__ = None
    return error


def kept_count(envelope: Envelope | None) -> int:
    """How many times a failure store kept ``envelope`` (0 for None), from its header."""
    if envelope is None:
        return 0
    try:
        return max(1, int(envelope.headers.get(KEPT_HEADER, "1")))
    except ValueError:
        return 1


def body_limit(serializer: Serializer, message_type: str) -> int:
    """The largest body ``serializer`` decodes for ``message_type`` (see JsonSerializer)."""
    limit_for = getattr(serializer, "limit_for", None)
    return int(limit_for(message_type)) if limit_for is not None else serializer.max_body


def attach(envelope: Envelope, received: Received) -> Envelope:
    """``envelope`` as delivered by ``received`` (the consume side's view)."""
    return Envelope._build((*envelope[:-1], received))
