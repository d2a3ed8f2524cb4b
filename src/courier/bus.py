"""The Bus: where messages are dispatched and where received ones are handled.

::

    bus = Bus(transports={"email": "sqlite:///courier.db?queue=email"})
    bus.route(SendEmail, "email")

    @bus.handler(SendEmail)
    def send_email(message: SendEmail) -> None: ...

    bus.dispatch(SendEmail(to="ada@example.com", subject="Hello"))

Dispatch runs the dispatch middleware stack and ends at the router, which
sends to a transport or, for unrouted messages and ``sync://``, calls the
handlers in this process. The worker hands each received message to
:meth:`Bus.consume`, which runs the consume stack (acknowledge,
max-deliveries, retry, your middleware) and ends at the handler.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from datetime import timedelta
from types import ModuleType
from typing import Any, TypeVar

from courier.dead_letters import DeadLetters, InvalidMessage
from courier.envelope import _EMPTY_HEADERS, Envelope, new_message_id
from courier.errors import (
    ConfigurationError,
    HandlerFailed,
    NoHandlerForMessage,
    PublishNotConfirmed,
    TransportError,
)
from courier.handlers import HandlerRegistry, HandlerSpec, marked_handlers
from courier.message import Event, Message, defined_message
from courier.middleware.acknowledge import AcknowledgeMiddleware, AckPolicy
from courier.middleware.base import Middleware, Next, compose
from courier.middleware.logging import LoggingMiddleware
from courier.middleware.max_deliveries import DEFAULT_MAX_DELIVERIES, MaxDeliveriesMiddleware
from courier.middleware.retry import RetryMiddleware, RetryPolicy, RetryStrategy
from courier.middleware.validation import ValidationMiddleware
from courier.registry import MessageRegistry
from courier.routing import CATCH_ALL, Route, Router
from courier.serializer import DEFAULT_MAX_BODY, JsonSerializer, Serializer
from courier.transports.base import Outcome, Received, Transport, subscription_queue
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier.transports.sync import SyncTransport

__all__ = ["Bus", "current_envelope"]

F = TypeVar("F", bound=Callable[..., Any])

_dispatch_log = logging.getLogger("courier.dispatch")

#: The envelope whose handler is running in this context, so a dispatch from
#: inside a handler carries the conversation on (correlation and causation).
_current: ContextVar[Envelope | None] = ContextVar("courier_current_envelope", default=None)


def current_envelope() -> Envelope | None:
    """The envelope being handled in this context, if any."""
    return _current.get()


class Bus:
    """Dispatches messages and handles received ones; see the module docstring."""

    def __init__(
        self,
        *,
        transports: Mapping[str, str | Dsn | Transport] | None = None,
        routing: Mapping[type[Message] | str, str | Route] | None = None,
        failure_transport: str | None = None,
        invalid_transport: str | None = None,
        retry: RetryPolicy | RetryStrategy | None = None,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        ack_policy: AckPolicy = AckPolicy.REJECT_ON_ERROR,
        middleware: Sequence[Middleware] = (),
        serializer: Serializer | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        validate: bool = False,
    ) -> None:
        self.registry = MessageRegistry()
        self.registry.register(InvalidMessage)
        self.serializer: Serializer = serializer or JsonSerializer(self.registry, max_body=max_body)
        self.handlers = HandlerRegistry()
        self.router = Router()
        self.retry_policy = (
            retry
            if isinstance(retry, RetryPolicy)
            else RetryPolicy(default=retry or RetryStrategy())
        )
        self.max_deliveries = max_deliveries
        self.ack_policy = ack_policy
        self.validate = validate
        self.dead_letters = DeadLetters(self.transport, failure_transport, invalid_transport)
        self._middleware: list[Middleware] = list(middleware)
        self._transports: dict[str, Transport] = {}
        self._dsns: dict[str, Dsn] = {}
        self._senders: dict[type[Message], Callable[[Envelope], Envelope]] = {}
        self._dispatchable: set[type[Message]] = set()
        self._dispatch_stack: Next | None = None
        self._consume_stack: Next | None = None
        for name, target in (transports or {}).items():
            self.add_transport(name, target)
        for message_type, route in (routing or {}).items():
            if isinstance(route, Route):
                self.route(
                    message_type,
                    route.transport,
                    queue=route.queue,
                    topic=route.topic,
                    subscriptions=route.subscriptions,
                )
            else:
                self.route(message_type, route)

    @classmethod
    def from_config(cls, path: str | None = None, **overrides: Any) -> Bus:
        """A bus configured from ``courier.toml`` / ``[tool.courier]`` / ``COURIER_*``.

        ``path`` defaults to ``$COURIER_CONFIG``, then ``courier.toml`` or
        ``pyproject.toml`` in the working directory; ``overrides`` replace
        settings by name (``transports={...}``).
        """
        from courier.config import build_bus, load_settings

        settings, _ = load_settings(path, overrides=overrides or None)
        return build_bus(settings, cls())

    # -- configuration -------------------------------------------------------

    @property
    def failure_transport(self) -> str | None:
        return self.dead_letters.failure_transport

    @property
    def invalid_transport(self) -> str | None:
        return self.dead_letters.invalid_transport

    def set_dead_letters(self, failure: str | None, invalid: str | None = None) -> None:
        """Name the failure transport and the invalid-message transport."""
        self.dead_letters.failure_transport = failure
        self.dead_letters.invalid_transport = invalid or failure
        self._consume_stack = None

    def add_transport(self, name: str, target: str | Dsn | Transport) -> Transport:
        """Open ``target`` (a DSN or a transport) under ``name``."""
        if name in self._transports:
            raise ConfigurationError(f"transport {name!r} is configured twice")
        if isinstance(target, Transport):
            transport = target
            transport.name = name
        else:
            dsn = target if isinstance(target, Dsn) else Dsn.parse(target)
            transport = open_transport(dsn, name=name, serializer=self.serializer)
            self._dsns[name] = dsn
        if isinstance(transport, SyncTransport):
            transport.bind(self._handle_now)
        self._transports[name] = transport
        self._senders.clear()
        return transport

    def transport(self, name: str) -> Transport:
        """The transport configured under ``name``."""
        try:
            return self._transports[name]
        except KeyError:
            known = ", ".join(sorted(self._transports)) or "none"
            raise ConfigurationError(f"unknown transport {name!r} (configured: {known})") from None

    @property
    def transports(self) -> dict[str, Transport]:
        return dict(self._transports)

    def dsn(self, name: str) -> Dsn | None:
        """The DSN a transport was opened from (render it masked)."""
        return self._dsns.get(name)

    def route(
        self,
        message_type: type[Message] | str,
        transport: str,
        *,
        queue: str | None = None,
        topic: str | None = None,
        subscriptions: Sequence[str] = (),
    ) -> Route:
        """Send ``message_type`` to ``transport`` (a queue on it, or a topic for events)."""
        if not isinstance(message_type, str):
            self.registry.register(message_type)
        route = self.router.add(
            message_type, transport, queue=queue, topic=topic, subscriptions=subscriptions
        )
        self._senders.clear()
        return route

    def handler(
        self, message_type: type[Message], *, subscription: str | None = None
    ) -> Callable[[F], F]:
        """Decorator: register the function as a handler on this bus."""

        def register(func: F) -> F:
            self.add_handler(func, message_type, subscription)
            return func

        return register

    def add_handler(
        self,
        func: Callable[..., Any],
        message_type: type[Message],
        subscription: str | None = None,
    ) -> HandlerSpec:
        spec = self.handlers.add(func, message_type, subscription)
        self.registry.register(message_type)
        return spec

    def register(self, *targets: Callable[..., Any] | ModuleType) -> None:
        """Register functions (or every function of a module) marked with ``@handler``."""
        for target in targets:
            for func, message_type, subscription in marked_handlers(target):
                self.add_handler(func, message_type, subscription)

    def register_messages(self, *message_types: type[Message]) -> None:
        """Make types decodable without routing or handling them here."""
        for message_type in message_types:
            self.registry.register(message_type)

    def use(self, *middleware: Middleware) -> None:
        """Add middleware; it runs on dispatch and on consume, inside courier's own."""
        self._middleware.extend(middleware)
        self._dispatch_stack = self._consume_stack = None

    # -- the stacks ----------------------------------------------------------

    def dispatch_middleware(self) -> list[Middleware]:
        """The dispatch stack, outermost first.

        Empty unless you add middleware: pydantic validated the message when
        it was built (``validate=True`` checks it again, for messages made
        with ``model_construct``), and the router logs at DEBUG itself.
        """
        layers: list[Middleware] = [ValidationMiddleware()] if self.validate else []
        return layers + self._middleware

    def consume_middleware(self) -> list[Middleware]:
        """The consume stack, outermost first."""
        return [
            LoggingMiddleware(),
            AcknowledgeMiddleware(self.dead_letters, self.ack_policy),
            MaxDeliveriesMiddleware(self.max_deliveries),
            RetryMiddleware(self.retry_policy),
            *self._middleware,
        ]

    # -- dispatching ---------------------------------------------------------

    def dispatch(
        self,
        message: Message,
        *,
        delay: float | timedelta = 0.0,
        priority: int = 0,
        ttr: float | timedelta | None = None,
        headers: Mapping[str, str] | None = None,
        id: str | None = None,
        correlation_id: str | None = None,
    ) -> Envelope:
        """Send ``message`` where it is routed; return its envelope.

        Returns once the transport has it (confirmed by the broker), or
        after its handlers ran for unrouted and ``sync://`` messages.
        """
        envelope = self._envelope(message, delay, priority, ttr, headers, id, correlation_id)
        stack = self._dispatch_stack
        if stack is None:
            stack = self._dispatch_stack = compose(self.dispatch_middleware(), self._send)
        return stack(envelope)

    def dispatch_many(
        self,
        messages: Iterable[Message],
        *,
        delay: float | timedelta = 0.0,
        priority: int = 0,
        ttr: float | timedelta | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> list[Envelope]:
        """Dispatch a batch, handing each transport's share to ``send_many`` at once.

        On partial failure raises :class:`PublishNotConfirmed` naming every
        envelope id that was not sent; the others were.
        """
        envelopes = [
            self._envelope(message, delay, priority, ttr, headers, None, None)
            for message in messages
        ]
        batches: dict[tuple[str, str | None], list[Envelope]] = {}
        events: list[tuple[Envelope, Route]] = []

        def collect(envelope: Envelope) -> Envelope:
            message_type = type(envelope.message)
            route = self.router.route_for(message_type)
            if route is None or self.transport(route.transport).capabilities.in_process:
                return self._send(envelope)
            if issubclass(message_type, Event):
                events.append((envelope, route))
            else:
                self._check_capabilities(envelope, self.transport(route.transport))
                batches.setdefault((route.transport, route.queue), []).append(envelope)
            return envelope

        stack = compose(self.dispatch_middleware(), collect)
        staged = [stack(envelope) for envelope in envelopes]
        sent: dict[str, Envelope] = {}
        failed: list[str] = []
        errors: list[Exception] = []
        for (name, queue), batch in batches.items():
            try:
                results = self.transport(name).send_many(batch, queue)
            except PublishNotConfirmed as error:
                failed += error.failed_ids
                errors.append(error)
                continue
            sent.update((envelope.id, envelope) for envelope in results)
        for envelope, route in events:
            try:
                self._publish(envelope, route)
            except TransportError as error:
                failed.append(envelope.id)
                errors.append(error)
        if failed:
            raise PublishNotConfirmed(
                f"{len(failed)} of {len(staged)} messages were not sent: {errors[0]}", failed
            ) from errors[0]
        return [sent.get(envelope.id, envelope) for envelope in staged]

    def _envelope(
        self,
        message: Message,
        delay: float | timedelta,
        priority: int,
        ttr: float | timedelta | None,
        headers: Mapping[str, str] | None,
        message_id: str | None,
        correlation_id: str | None,
    ) -> Envelope:
        message_type = type(message)
        if message_type not in self._dispatchable:
            if not isinstance(message, Message):
                raise TypeError(f"can only dispatch courier Messages, not {message_type!r}")
            self.registry.register(message_type)
            self._dispatchable.add(message_type)
        parent = _current.get()
        causation_id = None
        if parent is not None:
            causation_id = parent.id
            correlation_id = correlation_id or parent.correlation_id or parent.id
        if delay or priority or ttr is not None or headers:
            return Envelope(
                message,
                id=message_id,
                delay=delay,
                priority=priority,
                ttr=ttr,
                headers=headers,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )
        return Envelope._build(
            (
                message,
                message_id or new_message_id(),
                1,
                time.time(),
                0.0,
                0,
                None,
                correlation_id,
                causation_id,
                None,
                None,
                _EMPTY_HEADERS,
                None,
            )
        )

    def _send(self, envelope: Envelope) -> Envelope:
        """The end of the dispatch stack: the router."""
        sender = self._senders.get(type(envelope.message))
        if sender is None:
            sender = self._sender_for(type(envelope.message))
        result = sender(envelope)
        if _dispatch_log.isEnabledFor(logging.DEBUG):
            _dispatch_log.debug("dispatched %r", result)
        return result

    def _sender_for(self, message_type: type[Message]) -> Callable[[Envelope], Envelope]:
        route = self.router.route_for(message_type)
        sender: Callable[[Envelope], Envelope]
        if route is None:
            sender = self._handle_now
        elif issubclass(message_type, Event):

            def sender(envelope: Envelope) -> Envelope:
                self._publish(envelope, route)
                return envelope

        else:
            transport = self.transport(route.transport)
            queue = route.queue
            send = transport.send
            check = self._check_capabilities

            def sender(envelope: Envelope) -> Envelope:
                if envelope.delay or envelope.priority:
                    check(envelope, transport)
                return send(envelope, queue)

        self._senders[message_type] = sender
        return sender

    def _publish(self, envelope: Envelope, route: Route) -> None:
        message_type = type(envelope.message)
        transport = self.transport(route.transport)
        if transport.capabilities.in_process:
            self._handle_now(envelope)
            return
        self._check_capabilities(envelope, transport)
        topic = self.router.topic_of(message_type, route)
        subscriptions = set(self.handlers.subscriptions(message_type)) | set(route.subscriptions)
        transport.publish(envelope, topic, sorted(subscriptions))

    @staticmethod
    def _check_capabilities(envelope: Envelope, transport: Transport) -> None:
        capabilities = transport.capabilities
        if envelope.delay:
            if not capabilities.delay:
                raise ConfigurationError(
                    f"transport {transport.name!r} cannot delay messages "
                    f"(dispatched {envelope.type} with delay={envelope.delay:g})"
                )
            if capabilities.max_delay is not None and envelope.delay > capabilities.max_delay:
                raise ConfigurationError(
                    f"transport {transport.name!r} delays at most {capabilities.max_delay:g}s "
                    f"(dispatched {envelope.type} with delay={envelope.delay:g})"
                )
        if envelope.priority and not capabilities.priority:
            raise ConfigurationError(
                f"transport {transport.name!r} has no message priorities "
                f"(dispatched {envelope.type} with priority={envelope.priority})"
            )

    # -- handling --------------------------------------------------------------

    def consume(self, received: Received) -> Outcome:
        """Run the consume stack on one received message; return how it was settled.

        Acknowledgement itself is left to the caller when the outcome
        ``needs_ack`` (the worker batches them). A :class:`TransportError`
        propagates: nothing was settled and the broker will redeliver.
        """
        envelope = received.envelope
        if envelope is None:
            received.failure = received.error
            received.outcome = self.dead_letters.invalid(received)
            return received.outcome
        stack = self._consume_stack
        if stack is None:
            stack = self._consume_stack = compose(self.consume_middleware(), self._handle)
        stack(envelope)
        if received.outcome is None:
            received.outcome = Outcome.ACK
        return received.outcome

    def _handle(self, envelope: Envelope) -> Envelope:
        """The end of the consume stack: the handler for this delivery."""
        message_type = type(envelope.message)
        if issubclass(message_type, Event):
            return self._handle_event(envelope, message_type)
        spec = self.handlers.command(message_type)
        if spec is None:
            raise NoHandlerForMessage(f"no handler for {message_type.message_name} in this process")
        try:
            self._call(spec, envelope)
        except Exception as error:
            raise HandlerFailed([error]) from error
        return envelope

    def _handle_event(self, envelope: Envelope, message_type: type[Message]) -> Envelope:
        subscriptions = self.handlers.subscriptions(message_type)
        received = envelope.received
        route = self.router.route_for(message_type)
        if received is not None and route is not None:
            prefix = self.router.topic_of(message_type, route) + "."
            if received.queue.startswith(prefix):
                name = received.queue[len(prefix) :]
                spec = subscriptions.get(name)
                if spec is None:
                    raise NoHandlerForMessage(
                        f"no subscription {name!r} for {message_type.message_name} in this process"
                    )
                try:
                    self._call(spec, envelope)
                except Exception as error:
                    raise HandlerFailed([error]) from error
                return envelope
        return self._run_all(envelope, list(subscriptions.values()))

    def _handle_now(self, envelope: Envelope) -> Envelope:
        """Handle in this process: unrouted messages and ``sync://``."""
        message_type = type(envelope.message)
        if issubclass(message_type, Event):
            return self._run_all(envelope, list(self.handlers.subscriptions(message_type).values()))
        spec = self.handlers.command(message_type)
        if spec is None:
            raise NoHandlerForMessage(
                f"no handler for {message_type.message_name}, and it is not routed to a transport"
            )
        return self._run_all(envelope, [spec])

    def _run_all(self, envelope: Envelope, specs: list[HandlerSpec]) -> Envelope:
        errors: list[Exception] = []
        for spec in specs:
            try:
                self._call(spec, envelope)
            except Exception as error:
                errors.append(error)
        if errors:
            raise HandlerFailed(errors) from errors[0]
        return envelope

    def _call(self, spec: HandlerSpec, envelope: Envelope) -> None:
        token = _current.set(envelope)
        try:
            if spec.takes_envelope:
                result = spec.func(envelope.message, envelope)
            else:
                result = spec.func(envelope.message)
            if result is not None:
                self._continue(result, spec)
        finally:
            _current.reset(token)

    def _continue(self, result: object, spec: HandlerSpec) -> None:
        """A pipeline: dispatch what the handler returned, before the ack."""
        if isinstance(result, Message):
            self.dispatch(result)
        elif isinstance(result, (list, tuple)) and all(isinstance(m, Message) for m in result):
            for message in result:
                self.dispatch(message)
        else:
            raise ConfigurationError(
                f"handler {spec.name} returned {type(result).__name__}; a handler returns "
                "None, a Message or a list of Messages"
            )

    # -- the layout of queues ------------------------------------------------

    def _adopt_routed_types(self) -> None:
        """Register the classes that routes name but nothing registered yet.

        Routing configured by wire name cannot import anything; it names a
        class the app has defined, and routing it registers it, exactly as
        ``bus.route(SendEmail, ...)`` does.
        """
        for name in self.router.routes():
            if name != CATCH_ALL and self.registry.resolve(name) is None:
                defined = defined_message(name)
                if defined is not None:
                    self.registry.register(defined)

    def _routed_types(self, transport: str) -> list[tuple[type[Message], Route]]:
        self._adopt_routed_types()
        found = []
        for message_type in self.registry:
            route = self.router.route_for(message_type)
            if route is not None and route.transport == transport:
                found.append((message_type, route))
        return found

    def layout(self, transport: str) -> tuple[list[str], dict[str, list[str]]]:
        """The queues and ``{topic: subscriptions}`` that ``transport`` serves."""
        default = self.transport(transport).queue
        queues: list[str] = []
        topics: dict[str, set[str]] = {}
        for message_type, route in self._routed_types(transport):
            if issubclass(message_type, Event):
                names = topics.setdefault(self.router.topic_of(message_type, route), set())
                names.update(self.handlers.subscriptions(message_type))
                names.update(route.subscriptions)
            else:
                queues.append(route.queue or default)
        for name, route in self.router.routes().items():
            # Routes by name whose class this process never imported.
            if route.transport == transport and self.registry.resolve(name) is None:
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
        for message_type, route in self._routed_types(transport):
            if issubclass(message_type, Event):
                topic = self.router.topic_of(message_type, route)
                handled.update((topic, name) for name in self.handlers.subscriptions(message_type))
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
        names = list(transports) if transports is not None else list(self._transports)
        for name in (self.failure_transport, self.invalid_transport):
            if name is not None and name not in names:
                names.append(name)
        for name in names:
            transport = self.transport(name)
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
        for name in (self.failure_transport, self.invalid_transport):
            if name is None:
                continue
            store = self.transport(name)
            if not store.capabilities.listable:
                raise ConfigurationError(
                    f"failure transport {name!r} cannot list its messages, so `courier failed` "
                    "could not show them; use sqlite://, memory:// or redis://"
                )
        for name in transports:
            transport = self.transport(name)
            if transport.capabilities.in_process:
                raise ConfigurationError(
                    f"transport {name!r} is sync://: its messages are handled when dispatched, "
                    "there is nothing to consume"
                )
            for message_type, _ in self._routed_types(name):
                if issubclass(message_type, Event):
                    continue
                if self.handlers.command(message_type) is None:
                    raise ConfigurationError(
                        f"{message_type.message_name} is routed to {name!r} but has no handler "
                        "in this process"
                    )
            for route_name, route in self.router.routes().items():
                if (
                    route.transport == name
                    and route_name != "*"
                    and self.registry.resolve(route_name) is None
                ):
                    raise ConfigurationError(
                        f"routing names message type {route_name!r} for {name!r}, but no class "
                        "with that message_name is imported by the app"
                    )
            self.check_retry_delays(transport)

    def check_retry_delays(self, transport: Transport) -> None:
        """Refuse retry strategies that ``transport`` cannot delay as asked."""
        strategies = [self.retry_policy.default, *self.retry_policy.message_types.values()]
        strategies.append(self.retry_policy.transports.get(transport.name, strategies[0]))
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

    def close(self) -> None:
        """Close every transport."""
        for transport in self._transports.values():
            transport.close()

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Bus transports={sorted(self._transports)}>"
