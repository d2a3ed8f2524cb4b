"""Where each message goes: the four routing patterns.

1. Point to point: a command type is routed to one transport (and
   optionally a queue on it); one worker handles each message.
2. Publish/subscribe: an event type is routed to a topic on a transport;
   each subscription gets its own copy in ``<topic>.<subscription>``.
3. Pipelines: a handler's returned message follows its own route (the bus
   does this; the correlation id carries through).
4. Dead letters: see :mod:`courier.dead_letters`.

Routes are keyed by wire name, so configuration files can name types
without importing them. A route for a base class applies to its
subclasses; ``"*"`` routes everything not routed otherwise. An unrouted
message is handled in the dispatching process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from courier.errors import ConfigurationError
from courier.message import Event, Message

__all__ = ["CATCH_ALL", "Route", "Router"]

CATCH_ALL = "*"


@dataclass(frozen=True, slots=True)
class Route:
    """Where one message type goes."""

    transport: str
    #: For commands: a queue other than the transport's default.
    queue: str | None = None
    #: For events: the topic (default: the event's wire name).
    topic: str | None = None
    #: For events: subscriptions to publish to even when this process has
    #: no handler for them (a producer that does not import the consumers).
    subscriptions: tuple[str, ...] = field(default=())


class Router:
    """Message type -> Route, resolved once per class and cached."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._cache: dict[type[Message], Route | None] = {}

    def add(
        self,
        message_type: type[Message] | str,
        transport: str,
        *,
        queue: str | None = None,
        topic: str | None = None,
        subscriptions: Sequence[str] = (),
    ) -> Route:
        if isinstance(message_type, str):
            name = message_type
        elif isinstance(message_type, type) and issubclass(message_type, Message):
            name = message_type.message_name
            is_event = issubclass(message_type, Event)
            if is_event and queue is not None:
                raise ConfigurationError(
                    f"{message_type.__qualname__} is an event: route it to a topic, not a queue"
                )
            if not is_event and (topic is not None or subscriptions):
                raise ConfigurationError(
                    f"{message_type.__qualname__} is a command: route it to a queue, not a topic"
                )
        else:
            raise ConfigurationError(f"cannot route {message_type!r}: not a Message class")
        route = Route(transport, queue, topic, tuple(subscriptions))
        self._routes[name] = route
        self._cache.clear()
        return route

    def route_for(self, message_type: type[Message]) -> Route | None:
        """The route of ``message_type``: its own, a base class's, or the catch-all."""
        try:
            return self._cache[message_type]
        except KeyError:
            pass
        route = None
        for klass in message_type.__mro__:
            name = getattr(klass, "message_name", None)
            if klass is Message or klass is Event or name is None:
                break
            route = self._routes.get(name)
            if route is not None:
                break
        else:  # pragma: no cover - every Message has Message in its MRO
            pass
        if route is None:
            route = self._routes.get(CATCH_ALL)
        self._cache[message_type] = route
        return route

    def topic_of(self, message_type: type[Message], route: Route) -> str:
        return route.topic or message_type.message_name

    def routes(self) -> dict[str, Route]:
        """Every explicit route, by wire name (or ``*``)."""
        return dict(self._routes)

    def transports(self) -> set[str]:
        return {route.transport for route in self._routes.values()}
