"""What a transport declares on RabbitMQ, and what it is called.

For each queue ``q``:

- ``q`` itself: a quorum queue (``x-queue-type``) with ``x-delivery-limit``
  and ``x-dead-letter-exchange`` / ``x-dead-letter-routing-key`` naming its
  dead-letter queue; bound to ``exchange`` when that option is set;
- ``q<dead_letter_suffix>``: its dead-letter queue, bound to the
  ``dead_letter_exchange`` (direct) with routing key ``q``.

For each topic: a durable fanout exchange ``<topic_prefix><topic>``, and
for each subscription a queue ``<topic>.<subscription>`` (declared as
above) bound to it.

For the delays: per level, a fanout exchange and a queue both called
``<delay_prefix>.<milliseconds>``; the queue has ``x-message-ttl`` and
dead-letters to the default exchange, which routes each message by the
routing key it was published with, its target queue. Every level queue
holds messages of one TTL, so they expire in order; quorum level queues
dead-letter at least once (``x-dead-letter-strategy``).

Declarations are idempotent on the broker; the names already declared on
the live connection are remembered so the hot paths skip them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from courier.errors import ConfigurationError
from courier.transports.base import subscription_queue
from courier_amqp.connection import ChannelClosed, Session
from courier_amqp.options import AmqpOptions

__all__ = ["Topology"]


class Topology:
    """Names, arguments and declarations of one transport's queues and exchanges."""

    def __init__(self, options: AmqpOptions) -> None:
        self.options = options
        self._levels = options.delay_levels
        self._timeout = options.connect_timeout
        # Declared on the live session (cleared on reconnect).
        self._queues: set[str] = set()
        self._exchanges: set[str] = set()
        self._topics: set[tuple[str, tuple[str, ...]]] = set()
        self._delays = False
        # Declared at any time, for ``declared()``.
        self._all_queues: set[str] = set()
        self._all_exchanges: set[str] = set()

    def forget(self) -> None:
        """A new connection: declare again on first use (cheap, and safe if deleted)."""
        self._queues.clear()
        self._exchanges.clear()
        self._topics.clear()
        self._delays = False

    # -- names -----------------------------------------------------------------

    def dead_letter_queue(self, queue: str) -> str:
        return queue + self.options.dead_letter_suffix

    def topic_exchange(self, topic: str) -> str:
        return self.options.topic_prefix + topic

    def level(self, delay: float) -> float:
        """The shortest delay level not below ``delay`` (a delay is rounded up)."""
        for level in self._levels:
            if level >= delay - 1e-6:
                return level
        raise ConfigurationError(
            f"a delay of {delay:g}s is longer than the longest delay level "
            f"({self._levels[-1]:g}s); add a level to the delay_levels option"
        )

    def _delay_name(self, level: float) -> str:
        return f"{self.options.delay_prefix}.{round(level * 1000)}"

    def delay_exchange(self, delay: float) -> str:
        return self._delay_name(self.level(delay))

    def delay_queues(self) -> list[str]:
        return [self._delay_name(level) for level in self._levels]

    def declared(self) -> dict[str, list[str]]:
        return {"queues": sorted(self._all_queues), "exchanges": sorted(self._all_exchanges)}

    # -- arguments -------------------------------------------------------------

    def queue_arguments(self, queue: str) -> dict[str, Any]:
        options = self.options
        arguments: dict[str, Any] = {
            "x-queue-type": options.queue_type,
            "x-dead-letter-exchange": options.dead_letter_exchange,
            "x-dead-letter-routing-key": queue,
        }
        if options.queue_type == "quorum":
            arguments["x-delivery-limit"] = options.delivery_limit
        if options.max_priority is not None:
            arguments["x-max-priority"] = options.max_priority
        return arguments

    def delay_arguments(self, level: float) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-queue-type": self.options.queue_type,
            "x-message-ttl": round(level * 1000),
            "x-dead-letter-exchange": "",
        }
        if self.options.queue_type == "quorum":
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
        return arguments

    # -- declarations ----------------------------------------------------------

    def _rpc(self, session: Session, method: str, name: str, **arguments: Any) -> Any:
        try:
            return session.rpc(method, self._timeout, **arguments)
        except ChannelClosed as error:
            if error.code == 406:
                raise ConfigurationError(
                    f"RabbitMQ refused to declare {name!r}: {error.text} (it exists with other "
                    "settings: delete it, or match queue_type and the dead-letter options)"
                ) from None
            raise

    def _exchange(self, session: Session, name: str, kind: str) -> None:
        if name and name not in self._exchanges:
            self._rpc(
                session, "exchange_declare", name, exchange=name, exchange_type=kind, durable=True
            )
            self._exchanges.add(name)
            self._all_exchanges.add(name)

    def _queue(self, session: Session, name: str, arguments: dict[str, Any]) -> None:
        self._rpc(session, "queue_declare", name, queue=name, durable=True, arguments=arguments)
        self._all_queues.add(name)

    def declare_queue(self, session: Session, queue: str, *, force: bool = False) -> None:
        """The queue, its dead-letter queue and their bindings."""
        if queue in self._queues and not force:
            return
        options = self.options
        dead = self.dead_letter_queue(queue)
        self._exchange(session, options.dead_letter_exchange, "direct")
        self._queue(session, dead, {"x-queue-type": options.queue_type})
        self._rpc(
            session,
            "queue_bind",
            dead,
            queue=dead,
            exchange=options.dead_letter_exchange,
            routing_key=queue,
        )
        self._queue(session, queue, self.queue_arguments(queue))
        if options.exchange:
            self._exchange(session, options.exchange, "direct")
            self._rpc(
                session,
                "queue_bind",
                queue,
                queue=queue,
                exchange=options.exchange,
                routing_key=queue,
            )
        self._queues.add(queue)

    def declare_delays(self, session: Session, *, force: bool = False) -> None:
        """One fanout exchange and one TTL queue per delay level."""
        if self._delays and not force:
            return
        for level in self._levels:
            name = self._delay_name(level)
            self._exchange(session, name, "fanout")
            self._queue(session, name, self.delay_arguments(level))
            self._rpc(session, "queue_bind", name, queue=name, exchange=name, routing_key="")
        self._delays = True

    def declare_topic(
        self, session: Session, topic: str, subscriptions: Sequence[str], *, force: bool = False
    ) -> None:
        """The topic's fanout exchange and a bound queue per subscription."""
        key = (topic, tuple(sorted(subscriptions)))
        if key in self._topics and not force:
            return
        exchange = self.topic_exchange(topic)
        self._exchange(session, exchange, "fanout")
        for subscription in subscriptions:
            queue = subscription_queue(topic, subscription)
            self.declare_queue(session, queue, force=force)
            self._rpc(session, "queue_bind", queue, queue=queue, exchange=exchange, routing_key="")
        self._topics.add(key)

    def count(self, session: Session, queue: str) -> int | None:
        """Ready messages in ``queue`` (a passive declare); None if it does not exist."""
        try:
            frame = session.rpc("queue_declare", self._timeout, queue=queue, passive=True)
        except ChannelClosed as error:
            if error.code == 404:
                return None
            raise
        count: int = frame.method.message_count
        return count
