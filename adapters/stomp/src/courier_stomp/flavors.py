"""Where RabbitMQ, ActiveMQ and Artemis speak STOMP differently.

Part of the connection (:mod:`courier_stomp.connection`): the transport asks
its :class:`Flavor` for every destination and broker-specific header, and
never spells one itself. Only RabbitMQ (3.10's STOMP plugin) is tested; the
other two follow their brokers' documentation.

RabbitMQ (the default, tested):
  queue ``q``: ``/queue/q``, which declares a durable queue on SEND and
  SUBSCRIBE; topic ``t``: ``/topic/t`` (``amq.topic``, routing key ``t``);
  subscription queue ``t.s``: declared and bound by a durable SUBSCRIBE to
  ``/topic/t`` with ``x-queue-name: t.s``; prefetch: ``prefetch-count``;
  delays: a TTL queue per level that dead-letters back; delivery count:
  ``x-delivery-count`` on quorum queues, else the ``redelivered`` flag.

ActiveMQ 5.x:
  queue ``q``: ``/queue/q``; topic ``t``: the virtual topic
  ``/topic/VirtualTopic.t``; subscription queue ``t.s``:
  ``/queue/Consumer.s.VirtualTopic.t``; prefetch: ``activemq.prefetchSize``;
  delays: ``AMQ_SCHEDULED_DELAY`` (the broker needs ``schedulerSupport``);
  delivery count: ``redelivered`` only.

Artemis:
  queue ``q``: ``q`` with ``destination-type: ANYCAST``; topic ``t``: ``t``
  with ``destination-type: MULTICAST``; subscription queue ``t.s``: the
  fully qualified queue name ``t::t.s``; prefetch: ``consumer-window-size``
  (bytes: prefetch x 1 KiB); delays: ``AMQ_SCHEDULED_DELAY``; delivery
  count: ``redelivered`` only.

Every flavor sends ``persistent:true``. Where the broker gives only the
``redelivered`` flag, ``delivery_count`` is a lower bound: 2 for a
redelivery, 1 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from courier.errors import ConfigurationError
from courier_stomp.options import StompOptions

__all__ = ["ActiveMq", "Artemis", "Flavor", "Frame", "RabbitMq", "Subscription", "flavor_for"]

#: A destination and the headers that go with it.
Frame = tuple[str, dict[str, str]]
#: A subscription queue's topic and subscription name.
Subscription = tuple[str, str]

#: STOMP's own headers, on any broker: never courier's, never a user's.
STOMP_HEADERS = frozenset(
    {
        "ack",
        "content-length",
        "destination",
        "host",
        "id",
        "message-id",
        "receipt",
        "receipt-id",
        "subscription",
        "transaction",
        "redelivered",
        "persistent",
        "priority",
        "expires",
        "expiration",
        "reply-to",
        "correlation-id",
        "login",
        "passcode",
        "heart-beat",
        "accept-version",
        "version",
        "session",
        "server",
        "selector",
        "durable",
        "auto-delete",
        "exclusive",
    }
)


class Flavor:
    """RabbitMQ's STOMP, which the other flavors adjust."""

    name = "rabbitmq"
    #: Headers this broker adds or reads: taken out of every delivery.
    reserved: frozenset[str] = STOMP_HEADERS
    #: Header prefixes likewise reserved.
    reserved_prefixes: tuple[str, ...] = ()
    #: The broker counts deliveries (with this queue type).
    counts_deliveries = False

    def __init__(self, options: StompOptions) -> None:
        self.options = options
        self.persistent = {"persistent": "true"}
        #: Header name -> whether it may travel as a STOMP header of its own
        #: (a cache for :func:`courier_stomp.wire.outgoing`).
        self.native_names: dict[str, bool] = {}
        #: Header name -> whether it is the broker's (a cache for ``incoming``).
        self.broker_names: dict[str, bool] = {}

    # -- connecting ----------------------------------------------------------

    def connect_headers(self) -> dict[str, str]:
        return {"client-id": self.options.client_id} if self.options.client_id else {}

    # -- destinations ----------------------------------------------------------

    def check_name(self, name: str) -> str:
        """``name``, unless no frame can carry it (a NUL ends a frame).

        Anything else the broker judges: a name it refuses (RabbitMQ's
        ``amq.`` prefix, an empty or overlong name) is an ERROR frame, so
        ``PublishNotConfirmed`` on send.
        """
        if "\x00" in name:
            raise ConfigurationError(f"{name!r} is not a usable STOMP destination name")
        return name

    def send_to(self, queue: str, subscription: Subscription | None = None) -> Frame:
        """Where a message for ``queue`` goes, and the headers that declare it.

        ``subscription`` is ``(topic, name)`` when ``queue`` is a topic's
        subscription queue (RabbitMQ addresses it like any other queue).
        """
        return f"/queue/{self._escape(queue)}", {**self.persistent, **self.queue_arguments()}

    def consume_from(
        self, queue: str, prefetch: int, subscription: Subscription | None = None
    ) -> Frame:
        return f"/queue/{self._escape(queue)}", {
            "prefetch-count": str(prefetch),
            **self.queue_arguments(),
        }

    def send_to_topic(self, topic: str) -> Frame:
        return f"/topic/{self._escape(topic)}", dict(self.persistent)

    def declare_subscription(self, topic: str, name: str, queue: str) -> Frame:
        """A SUBSCRIBE that creates ``queue`` and routes ``topic``'s events to it."""
        return f"/topic/{self._escape(topic)}", {
            "durable": "true",
            "auto-delete": "false",
            "x-queue-name": queue,
            "prefetch-count": "1",
            **self.queue_arguments(),
        }

    def queue_arguments(self) -> dict[str, str]:
        """Queue arguments every SEND and SUBSCRIBE must repeat (RabbitMQ compares them)."""
        if self.options.queue_type == "quorum":
            return {"x-queue-type": "quorum"}
        return {}

    @staticmethod
    def _escape(name: str) -> str:
        # RabbitMQ reads "%2F" in a destination as "/", its separator.
        return name.replace("/", "%2F")

    # -- delays --------------------------------------------------------------

    @property
    def max_delay(self) -> float | None:
        return self.options.delay_levels[-1]

    def level(self, delay: float) -> float:
        """The shortest delay level not below ``delay`` (a delay is rounded up)."""
        levels = self.options.delay_levels
        for level in levels:
            if level >= delay - 1e-6:
                return level
        raise ConfigurationError(
            f"a delay of {delay:g}s is longer than the longest delay level "
            f"({levels[-1]:g}s); add a level to the delay_levels option"
        )

    def send_later(
        self, queue: str, delay: float, subscription: Subscription | None = None
    ) -> Frame:
        """Where ``queue``'s message waits ``delay`` seconds first.

        A durable queue per level and target whose ``x-message-ttl`` is the
        level and whose expired messages RabbitMQ dead-letters to the target
        through the default exchange. Every message of one level queue has
        the same TTL, so they expire in order.
        """
        ms = round(self.level(delay) * 1000)
        name = f"{self.options.delay_prefix}.{ms}.queue.{queue}"
        return f"/queue/{self._escape(name)}", {
            **self.persistent,
            "x-message-ttl": str(ms),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        }

    def send_to_topic_later(self, topic: str, delay: float) -> Frame:
        """As :meth:`send_later`, dead-lettering to ``amq.topic``: every subscription."""
        ms = round(self.level(delay) * 1000)
        name = f"{self.options.delay_prefix}.{ms}.topic.{topic}"
        return f"/queue/{self._escape(name)}", {
            **self.persistent,
            "x-message-ttl": str(ms),
            "x-dead-letter-exchange": "amq.topic",
            "x-dead-letter-routing-key": topic,
        }

    # -- deliveries ------------------------------------------------------------

    def is_reserved(self, header: str) -> bool:
        return header in self.reserved or header.startswith(self.reserved_prefixes)

    def delivery_count(self, headers: Mapping[str, str]) -> int:
        """How often the broker handed this delivery out, 1 on the first."""
        return 2 if headers.get("redelivered") == "true" else 1


class RabbitMq(Flavor):
    """RabbitMQ's STOMP plugin: the defaults above, plus quorum delivery counts."""

    reserved = STOMP_HEADERS | {
        "amqp-message-id",
        "content-encoding",
        "prefetch-count",
        "x-queue-name",
        "x-queue-type",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-expires",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-priority",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-stream-offset",
        "x-delivery-count",
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
    }

    def __init__(self, options: StompOptions) -> None:
        super().__init__(options)
        self.counts_deliveries = options.queue_type == "quorum"

    def delivery_count(self, headers: Mapping[str, str]) -> int:
        # Quorum queues count earlier deliveries (absent on the first).
        counted = headers.get("x-delivery-count")
        if counted is not None and counted.isdigit():
            return int(counted) + 1
        return super().delivery_count(headers)


class ActiveMq(Flavor):
    """ActiveMQ 5.x: virtual topics for subscriptions, the scheduler for delays."""

    name = "activemq"
    reserved = STOMP_HEADERS | {"activemq.prefetchSize", "client-id", "type"}
    reserved_prefixes: tuple[str, ...] = ("JMS", "AMQ_", "_AMQ_", "activemq.")

    def _destination(self, queue: str, subscription: Subscription | None) -> str:
        if subscription is None:
            return f"/queue/{queue}"
        topic, name = subscription
        return f"/queue/Consumer.{name}.VirtualTopic.{topic}"

    def send_to(self, queue: str, subscription: Subscription | None = None) -> Frame:
        return self._destination(queue, subscription), dict(self.persistent)

    def consume_from(
        self, queue: str, prefetch: int, subscription: Subscription | None = None
    ) -> Frame:
        return self._destination(queue, subscription), {"activemq.prefetchSize": str(prefetch)}

    def send_to_topic(self, topic: str) -> Frame:
        return f"/topic/VirtualTopic.{topic}", dict(self.persistent)

    def declare_subscription(self, topic: str, name: str, queue: str) -> Frame:
        # A virtual topic keeps messages for a consumer queue once it exists.
        return self.consume_from(queue, 1, (topic, name))

    def queue_arguments(self) -> dict[str, str]:
        return {}

    @property
    def max_delay(self) -> float | None:
        return None

    def level(self, delay: float) -> float:
        return delay

    def send_later(
        self, queue: str, delay: float, subscription: Subscription | None = None
    ) -> Frame:
        destination, headers = self.send_to(queue, subscription)
        return destination, {**headers, "AMQ_SCHEDULED_DELAY": str(round(delay * 1000))}

    def send_to_topic_later(self, topic: str, delay: float) -> Frame:
        destination, headers = self.send_to_topic(topic)
        return destination, {**headers, "AMQ_SCHEDULED_DELAY": str(round(delay * 1000))}


class Artemis(ActiveMq):
    """ActiveMQ Artemis: routing types in headers, fully qualified queue names."""

    name = "artemis"
    reserved = STOMP_HEADERS | {
        "destination-type",
        "subscription-type",
        "consumer-window-size",
        "client-id",
        "durable-subscription-name",
        "type",
    }
    reserved_prefixes: tuple[str, ...] = ("JMS", "AMQ_", "_AMQ_", "activemq.", "__AMQ")

    def send_to(self, queue: str, subscription: Subscription | None = None) -> Frame:
        if subscription is not None:
            return f"{subscription[0]}::{queue}", {**self.persistent}
        return queue, {**self.persistent, "destination-type": "ANYCAST"}

    def consume_from(
        self, queue: str, prefetch: int, subscription: Subscription | None = None
    ) -> Frame:
        window = {"consumer-window-size": str(prefetch * 1024)}
        if subscription is not None:
            return f"{subscription[0]}::{queue}", {"subscription-type": "MULTICAST", **window}
        return queue, {"destination-type": "ANYCAST", **window}

    def send_to_topic(self, topic: str) -> Frame:
        return topic, {**self.persistent, "destination-type": "MULTICAST"}


def flavor_for(options: StompOptions) -> Flavor:
    if options.flavor == "activemq":
        return ActiveMq(options)
    if options.flavor == "artemis":
        return Artemis(options)
    return RabbitMq(options)
