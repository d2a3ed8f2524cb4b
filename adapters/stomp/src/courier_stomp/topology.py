"""What a transport addresses on the broker, and how it has it declared.

Destinations come from the :class:`~courier_stomp.flavors.Flavor`; this
module remembers them. It knows which queues are a topic's subscription
queues (learnt from ``setup`` and ``publish``: ActiveMQ and Artemis address
those differently), caches each queue's destination, and declares what must
exist before anyone sends: STOMP has no declare frame, so a short-lived
connection SUBSCRIBEs once to each destination, which makes the broker
declare (and, for a topic, bind) it, and closes without acknowledging
anything. A message the broker hands out meanwhile (one per declared queue
at most: the declaration's ``prefetch-count`` is 1) goes back at close.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from courier.errors import ConnectionLost, TransportError
from courier.transports.base import subscription_queue
from courier_stomp.connection import Session
from courier_stomp.flavors import Flavor, Frame, Subscription

__all__ = ["Topology"]


class Topology:
    """Destinations of one transport, cached, and their declarations."""

    def __init__(self, flavor: Flavor, open_session: Callable[[], Session]) -> None:
        self.flavor = flavor
        self._open = open_session
        #: Subscription queue -> (topic, subscription).
        self.subscriptions: dict[str, Subscription] = {}
        self._targets: dict[str, Frame] = {}
        #: Topics whose subscription queues were declared, for one publishing session.
        self._declared: set[tuple[str, tuple[str, ...]]] = set()
        self._declared_for = 0
        #: Every destination used, for ``declared``.
        self._addressed: set[str] = set()

    # -- destinations ----------------------------------------------------------

    def send_to(self, queue: str) -> Frame:
        """Where a message for ``queue`` goes now (cached)."""
        target = self._targets.get(queue)
        if target is None:
            self.flavor.check_name(queue)
            target = self._targets[queue] = self.flavor.send_to(
                queue, self.subscriptions.get(queue)
            )
            self._addressed.add(target[0])
        return target

    def send_later(self, queue: str, delay: float) -> Frame:
        """Where a message for ``queue`` waits ``delay`` seconds first."""
        target = self.flavor.send_later(
            self.flavor.check_name(queue), delay, self.subscriptions.get(queue)
        )
        self._addressed.add(target[0])
        return target

    def send_to_topic(self, topic: str, delay: float) -> Frame:
        self.flavor.check_name(topic)
        if delay > 0:
            target = self.flavor.send_to_topic_later(topic, delay)
            self._addressed.add(target[0])
            return target
        return self.flavor.send_to_topic(topic)

    def consume_from(self, queue: str, prefetch: int) -> Frame:
        target = self.flavor.consume_from(
            self.flavor.check_name(queue), prefetch, self.subscriptions.get(queue)
        )
        self._addressed.add(target[0])
        return target

    def learn(self, topic: str, subscriptions: Sequence[str]) -> list[tuple[str, str]]:
        """Remember ``topic``'s subscription queues; ``(subscription, queue)`` for each."""
        queues = []
        for name in subscriptions:
            queue = subscription_queue(topic, name)
            if self.subscriptions.get(queue) != (topic, name):
                self.subscriptions[queue] = (topic, name)
                self._targets.pop(queue, None)
            queues.append((name, queue))
        return queues

    # -- declarations ----------------------------------------------------------

    def declare_topic(self, generation: int, topic: str, subscriptions: Sequence[str]) -> None:
        """Declare ``topic``'s subscription queues, once per publishing connection."""
        if self._declared_for != generation:
            self._declared.clear()
            self._declared_for = generation
        key = (topic, tuple(sorted(subscriptions)))
        if key not in self._declared:
            flavor = self.flavor
            self.declare(
                [
                    flavor.declare_subscription(topic, name, queue)
                    for name, queue in self.learn(topic, subscriptions)
                ]
            )
            self._declared.add(key)

    def setup(self, queues: Sequence[str], topics: Mapping[str, Sequence[str]]) -> None:
        """Declare ``queues`` and each topic's subscription queues, bound to it."""
        frames = [self.flavor.consume_from(self.flavor.check_name(name), 1) for name in queues]
        for topic, subscriptions in topics.items():
            frames += [
                self.flavor.declare_subscription(topic, name, queue)
                for name, queue in self.learn(topic, subscriptions)
            ]
        self.declare(frames)

    def declare(self, frames: Sequence[Frame]) -> None:
        """SUBSCRIBE to each destination on a short-lived connection; see the module docstring."""
        if not frames:
            return
        session = self._open()
        try:
            for destination, headers in frames:
                self._addressed.add(destination)
                session.declare(destination, headers)
        except TransportError as error:
            raise ConnectionLost(f"declaring {destination!r} failed: {error}") from None
        finally:
            session.close()

    def declared(self) -> list[str]:
        """The RabbitMQ queues addressed (so declared), for a test's teardown."""
        names = set(self.subscriptions)
        for destination in self._addressed:
            if destination.startswith("/queue/"):
                names.add(destination[len("/queue/") :].replace("%2F", "/"))
        return sorted(names)
