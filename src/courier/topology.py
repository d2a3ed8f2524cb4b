"""Which queues each transport serves, and whether a configuration can work.

The bus knows messages, routes and handlers; this module turns them into
the broker's layout: the queues a transport serves, the subscription queues
of its topics, the queues a worker consumes, what ``setup`` declares, and
the startup checks that refuse a configuration before it touches a message
(a routed command with no handler, a failure store that cannot list, a
retry delay the broker cannot keep).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from courier.errors import ConfigurationError
from courier.message import Event, Message, defined_message
from courier.routing import CATCH_ALL, Route
from courier.transports.base import Transport, subscription_queue

if TYPE_CHECKING:
    from courier.bus import Bus

__all__ = ["Topology", "require_listable"]


def require_listable(transport: Transport, what: str) -> None:
    """Refuse a dead-letter store that cannot list: ``courier failed`` could not show it."""
    if not transport.capabilities.listable:
        raise ConfigurationError(
            f"{what} cannot list its messages, so `courier failed` could not show them; "
            "use sqlite://, memory:// or redis://"
        )


class Topology:
    """The layout of one bus's queues and its startup checks."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def adopt_routed_types(self) -> None:
        """Register the classes that routes name but nothing registered yet.

        Routing configured by wire name cannot import anything; it names a
        class the app has defined, and routing it registers it, exactly as
        ``bus.route(SendEmail, ...)`` does.
        """
        for name in self.bus.router.routes():
            if name != CATCH_ALL and self.bus.registry.resolve(name) is None:
                defined = defined_message(name)
                if defined is not None:
                    self.bus.registry.register(defined)

    def routed_types(self, transport: str) -> list[tuple[type[Message], Route]]:
        self.adopt_routed_types()
        found = []
        for message_type in self.bus.registry:
            route = self.bus.router.route_for(message_type)
            if route is not None and route.transport == transport:
                found.append((message_type, route))
        return found

    def layout(self, transport: str) -> tuple[list[str], dict[str, list[str]]]:
        """The queues and ``{topic: subscriptions}`` that ``transport`` serves."""
        default = self.bus.transport(transport).queue
        queues: list[str] = []
        topics: dict[str, set[str]] = {}
        for message_type, route in self.routed_types(transport):
            if issubclass(message_type, Event):
                names = topics.setdefault(self.bus.router.topic_of(message_type, route), set())
                names.update(self.bus.handlers.subscriptions(message_type))
                names.update(route.subscriptions)
            else:
                queues.append(route.queue or default)
        for name, route in self.bus.router.routes().items():
            # Routes by name whose class this process never imported.
            if route.transport == transport and self.bus.registry.resolve(name) is None:
                if route.topic is not None or route.subscriptions:
                    topics.setdefault(route.topic or name, set()).update(route.subscriptions)
                elif name != "*":
                    queues.append(route.queue or default)
        if not topics or queues:
            queues.insert(0, default)
        ordered = list(dict.fromkeys(queues))
        return ordered, {topic: sorted(names) for topic, names in topics.items()}

    def consumed_queues(self, transport: str, subscriptions: Sequence[str] = ()) -> list[str]:
        """Queues a worker of ``transport`` receives from, command queues first.

        Subscription queues are those this process has handlers for,
        narrowed to ``subscriptions`` when given.
        """
        queues, topics = self.layout(transport)
        if subscriptions:
            queues = []
        handled: set[tuple[str, str]] = set()
        for message_type, route in self.routed_types(transport):
            if issubclass(message_type, Event):
                topic = self.bus.router.topic_of(message_type, route)
                handled.update(
                    (topic, name) for name in self.bus.handlers.subscriptions(message_type)
                )
        for topic, names in topics.items():
            for name in names:
                if (topic, name) in handled and (not subscriptions or name in subscriptions):
                    queues.append(subscription_queue(topic, name))
        if subscriptions and not queues:
            raise ConfigurationError(
                f"transport {transport!r} has no subscription named "
                f"{', '.join(repr(s) for s in subscriptions)} with a handler in this process"
            )
        return queues

    def setup(self, transports: Iterable[str] | None = None) -> None:
        """Declare every queue and subscription the configuration implies."""
        names = list(transports) if transports is not None else list(self.bus.transports)
        for name in (self.bus.failure_transport, self.bus.invalid_transport):
            if name is not None and name not in names:
                names.append(name)
        for name in names:
            transport = self.bus.transport(name)
            if transport.capabilities.in_process:
                continue
            queues, topics = self.layout(name)
            transport.setup(queues, topics)

    def check(self, transports: Iterable[str]) -> None:
        """Refuse, at worker startup, a configuration that cannot work.

        Every command routed to a consumed transport needs exactly one
        handler here; the dead-letter transports must exist and be listable;
        a transport that retries with a delay must be able to delay.
        """
        for name in (self.bus.failure_transport, self.bus.invalid_transport):
            if name is None:
                continue
            require_listable(self.bus.transport(name), f"failure transport {name!r}")
        for name in transports:
            transport = self.bus.transport(name)
            if transport.capabilities.in_process:
                raise ConfigurationError(
                    f"transport {name!r} is sync://: its messages are handled when dispatched, "
                    "there is nothing to consume"
                )
            for message_type, _ in self.routed_types(name):
                if issubclass(message_type, Event):
                    continue
                if self.bus.handlers.command(message_type) is None:
                    raise ConfigurationError(
                        f"{message_type.message_name} is routed to {name!r} but has no handler "
                        "in this process"
                    )
            for route_name, route in self.bus.router.routes().items():
                if (
                    route.transport == name
                    and route_name != "*"
                    and self.bus.registry.resolve(route_name) is None
                ):
                    raise ConfigurationError(
                        f"routing names message type {route_name!r} for {name!r}, but no class "
                        "with that message_name is imported by the app"
                    )
            self.check_retry_delays(transport)

    def check_retry_delays(self, transport: Transport) -> None:
        """Refuse retry strategies that ``transport`` cannot delay as asked.

        The strategies that can apply there: the transport's own (or the
        default), and those of the message types routed to it.
        """
        policy = self.bus.retry_policy
        strategies = [policy.transports.get(transport.name, policy.default)]
        for message_type, _ in self.routed_types(transport.name):
            own = policy.message_types.get(message_type.message_name)
            if own is not None:
                strategies.append(own)
        capabilities = transport.capabilities
        for strategy in strategies:
            if strategy.max_retries == 0 or strategy.delay == 0:
                continue
            if not capabilities.delay:
                raise ConfigurationError(
                    f"transport {transport.name!r} cannot delay messages, but its retry strategy "
                    f"waits {strategy.delay:g}s; set retry delay to 0 for it"
                )
            longest = strategy.base_delay(strategy.max_retries) * (1 + strategy.jitter)
            if capabilities.max_delay is not None and longest > capabilities.max_delay:
                raise ConfigurationError(
                    f"transport {transport.name!r} delays at most {capabilities.max_delay:g}s, "
                    f"but its retry strategy may wait {longest:g}s; set retry max_delay"
                )
