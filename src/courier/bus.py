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
from datetime import timedelta
from types import ModuleType
from typing import Any, TypeVar

from courier.dead_letters import DeadLetters, InvalidMessage
from courier.envelope import _EMPTY_HEADERS, Envelope, new_message_id
from courier.errors import (
    ConfigurationError,
    PublishNotConfirmed,
    TransportError,
)
from courier.handlers import HandlerRegistry, HandlerSpec, marked_handlers
from courier.handling import Handling, current_envelope
from courier.message import Event, Message
from courier.middleware.acknowledge import AcknowledgeMiddleware, AckPolicy
from courier.middleware.base import Middleware, Next, compose
from courier.middleware.logging import LoggingMiddleware
from courier.middleware.max_deliveries import MaxDeliveriesMiddleware
from courier.middleware.retry import RetryMiddleware, RetryPolicy, RetryStrategy
from courier.middleware.validation import ValidationMiddleware
from courier.poison import DEFAULT_MAX_DELIVERIES, PoisonGuard
from courier.registry import MessageRegistry
from courier.routing import Route, Router
from courier.serializer import DEFAULT_MAX_BODY, JsonSerializer, Serializer
from courier.status import SqliteStatusStore, StatusStore, check_status_dsn, open_status_store
from courier.topology import Topology
from courier.transports.base import Outcome, Received, Transport
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier.transports.sqlite import SqliteTransport
from courier.transports.sync import SyncTransport

__all__ = ["Bus"]

F = TypeVar("F", bound=Callable[..., Any])

_dispatch_log = logging.getLogger("courier.dispatch")


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
        status_store: StatusStore | str | None = None,
    ) -> None:
        self.registry = MessageRegistry()
        self.registry.register(InvalidMessage)
        self.serializer: Serializer = serializer or JsonSerializer(self.registry, max_body=max_body)
        #: The serializer of the failure and invalid-message transports: the
        #: only one that decodes courier's own record types.
        self.store_serializer = JsonSerializer(
            self.registry, max_body=self.serializer.max_body, internal=True
        )
        if isinstance(status_store, str):
            check_status_dsn(status_store)
        self._status_store = status_store
        self.poison = PoisonGuard(self._find_status_store, max_deliveries)
        self.handlers = HandlerRegistry()
        self.router = Router()
        self.retry_policy = (
            retry
            if isinstance(retry, RetryPolicy)
            else RetryPolicy(default=retry or RetryStrategy())
        )
        self.ack_policy = ack_policy
        self.validate = validate
        self.dead_letters = DeadLetters(
            self.transport, failure_transport, invalid_transport, max_body=self.serializer.max_body
        )
        self._middleware: list[Middleware] = list(middleware)
        self._transports: dict[str, Transport] = {}
        self._dsns: dict[str, Dsn] = {}
        self._senders: dict[type[Message], Callable[[Envelope], Envelope]] = {}
        self._dispatchable: set[type[Message]] = set()
        self._dispatch_stack: Next | None = None
        self._consume_stack: Next | None = None
        self.topology = Topology(self)
        self.handling = Handling(self.handlers, self.router, self.dispatch, self.poison)
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

        ``path`` defaults to the running ``courier`` command's ``--config``,
        then ``$COURIER_CONFIG``, then the first ``courier.toml`` or
        ``pyproject.toml`` with ``[tool.courier]`` in the working directory
        or its parents; relative paths in it mean its folder. ``overrides``
        replace settings by name (``transports={...}``).
        """
        from courier.config import build_bus, load_settings

        settings, file = load_settings(path, overrides=overrides or None)
        return build_bus(settings, cls(), base=file.parent if file is not None else None)

    # -- configuration -------------------------------------------------------

    @property
    def max_deliveries(self) -> int:
        """Worker deaths a message's handler may cause before it is dead-lettered unrun."""
        return self.poison.max_deliveries

    @max_deliveries.setter
    def max_deliveries(self, value: int) -> None:
        self.poison.max_deliveries = value

    @property
    def failure_transport(self) -> str | None:
        return self.dead_letters.failure_transport

    @property
    def invalid_transport(self) -> str | None:
        return self.dead_letters.invalid_transport

    def configure(
        self,
        *,
        ack_policy: AckPolicy | None = None,
        validate: bool | None = None,
        max_body: int | None = None,
    ) -> None:
        """Change bus settings after construction (what the configuration file sets)."""
        if ack_policy is not None:
            self.ack_policy = ack_policy
        if validate is not None:
            self.validate = validate
        if max_body is not None:
            for serializer in (self.serializer, self.store_serializer):
                serializer.max_body = max_body
            self.dead_letters.max_body = max_body
        self._dispatch_stack = self._consume_stack = None

    def set_dead_letters(self, failure: str | None, invalid: str | None = None) -> None:
        """Name the failure transport and the invalid-message transport."""
        self.dead_letters.failure_transport = failure
        self.dead_letters.invalid_transport = invalid or failure
        for name, transport in self._transports.items():
            self._choose_serializer(name, transport)
        self._consume_stack = None

    def _is_store(self, name: str) -> bool:
        return name in (self.dead_letters.failure_transport, self.dead_letters.invalid_transport)

    def _choose_serializer(self, name: str, transport: Transport) -> None:
        """Stores decode courier's own records; every other transport refuses them."""
        if self._is_store(name):
            transport.serializer = self.store_serializer
        elif transport.serializer is self.store_serializer:
            transport.serializer = self.serializer

    @property
    def status_store(self) -> StatusStore | str | None:
        """The status store as given (None: the failure store's SQLite file, if any)."""
        return self._status_store

    def use_status_store(self, store: StatusStore | str) -> None:
        """Keep worker deaths and heartbeats in ``store`` (a DSN or a store)."""
        if isinstance(store, str):
            check_status_dsn(store)
        self._status_store = store
        self.poison.reset()

    def _find_status_store(self) -> StatusStore | None:
        """The store named at construction, else the failure store's SQLite file, else none."""
        chosen = self._status_store
        if isinstance(chosen, StatusStore):
            return chosen
        if isinstance(chosen, str):
            return open_status_store(chosen)
        failure = self.failure_transport
        if failure is not None and failure in self._transports:
            transport = self._transports[failure]
            if isinstance(transport, SqliteTransport) and transport.path != ":memory:":
                return SqliteStatusStore(transport.path)
        return None

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
            transport.bind(self.handling.handle_now)
        self._choose_serializer(name, transport)
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
            MaxDeliveriesMiddleware(self.poison),
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
        after its handlers ran for unrouted and ``sync://`` messages. A
        transport that confirms in the background (AMQP's ``confirm=async``)
        returns once the message is written; a failed confirm is raised by
        the next dispatch to it, by :meth:`flush` or by :meth:`close`.
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

        # Per class: None (handle in process), a Route (event), or the batch key.
        plans: dict[type[Message], tuple[str, str | None] | Route | None] = {}

        def plan(message_type: type[Message]) -> tuple[str, str | None] | Route | None:
            route = self.router.route_for(message_type)
            if route is None or self.transport(route.transport).capabilities.in_process:
                return None
            if issubclass(message_type, Event):
                return route
            return (route.transport, route.queue)

        def collect(envelope: Envelope) -> Envelope:
            message_type = type(envelope.message)
            try:
                target = plans[message_type]
            except KeyError:
                target = plans[message_type] = plan(message_type)
            if target is None:
                return self._send(envelope)
            if isinstance(target, Route):
                events.append((envelope, target))
            else:
                if envelope.delay or envelope.priority or envelope.ttr is not None:
                    self._check_capabilities(envelope, self.transport(target[0]))
                batches.setdefault(target, []).append(envelope)
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
            first = errors[0]
            why = first.reason if isinstance(first, PublishNotConfirmed) else str(first)
            raise PublishNotConfirmed(
                f"{len(failed)} of {len(staged)} messages were not sent: {why}", failed
            ) from first
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
        parent = current_envelope()
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
            sender = self.handling.handle_now
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
                if envelope.delay or envelope.priority or envelope.ttr is not None:
                    check(envelope, transport)
                return send(envelope, queue)

        self._senders[message_type] = sender
        return sender

    def _publish(self, envelope: Envelope, route: Route) -> None:
        message_type = type(envelope.message)
        transport = self.transport(route.transport)
        if transport.capabilities.in_process:
            self.handling.handle_now(envelope)
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
        if envelope.ttr is not None and not capabilities.ttr and not capabilities.in_process:
            raise ConfigurationError(
                f"transport {transport.name!r} has no per-message ttr; its DSN's lease= applies "
                f"to every message (dispatched {envelope.type} with ttr={envelope.ttr:g})"
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
            stack = self._consume_stack = compose(self.consume_middleware(), self.handling.handle)
        stack(envelope)
        if received.outcome is None:
            received.outcome = Outcome.ACK
        return received.outcome

    # -- the layout of queues (see courier.topology) ---------------------------

    def layout(self, transport: str) -> tuple[list[str], dict[str, list[str]]]:
        """The queues and ``{topic: subscriptions}`` that ``transport`` serves."""
        return self.topology.layout(transport)

    def consumed_queues(self, transport: str, subscriptions: Sequence[str] = ()) -> list[str]:
        """Queues a worker of ``transport`` receives from, command queues first."""
        return self.topology.consumed_queues(transport, subscriptions)

    def setup(self, transports: Iterable[str] | None = None) -> None:
        """Declare every queue and subscription the configuration implies."""
        self.topology.setup(transports)

    def check(self, transports: Iterable[str]) -> None:
        """Refuse, at worker startup, a configuration that cannot work."""
        self.topology.check(transports)

    def check_retry_delays(self, transport: Transport) -> None:
        """Refuse retry strategies that ``transport`` cannot delay as asked."""
        self.topology.check_retry_delays(transport)

    def flush(self) -> None:
        """Wait for the broker to confirm every message dispatched so far.

        Only transports that confirm in the background (AMQP with
        ``confirm=async``) have anything to wait for; a message one of them
        could not deliver (nacked, returned) raises
        :class:`~courier.errors.PublishNotConfirmed` here, if the next
        dispatch did not raise it already.
        """
        failure: TransportError | None = None
        for transport in self._transports.values():
            try:
                transport.flush()
            except TransportError as error:
                failure = failure or error
        if failure is not None:
            raise failure

    def close(self) -> None:
        """Close every transport and the status store.

        Transports that confirm in the background wait for their confirms
        first; one that failed is raised once everything is closed.
        """
        failure: TransportError | None = None
        for transport in self._transports.values():
            try:
                transport.close()
            except TransportError as error:
                failure = failure or error
        store = self.poison.store if self.poison._resolved else None
        if store is not None:
            store.close()
        if failure is not None:
            raise failure

    def __enter__(self) -> Bus:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Bus transports={sorted(self._transports)}>"
