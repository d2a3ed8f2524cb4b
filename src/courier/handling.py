"""Calling handlers: the end of the consume stack, and in-process handling.

A command goes to its one handler; an event received on a subscription's
queue goes to that subscription's handler (and to every subscription when
handled in process). What a handler raises is wrapped in
:class:`~courier.errors.HandlerFailed` for the retry middleware to read.
What it returns continues a pipeline: it is dispatched before the incoming
message is acknowledged, and, like any dispatch from inside a handler,
carries the conversation on (correlation and causation ids) through
:func:`current_envelope`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from courier.errors import HandlerFailed, NoHandlerForMessage, UnrecoverableError
from courier.message import Event, Message

if TYPE_CHECKING:
    from courier.envelope import Envelope
    from courier.handlers import HandlerRegistry, HandlerSpec
    from courier.poison import PoisonGuard
    from courier.routing import Router

__all__ = ["Handling", "current_envelope"]

#: The envelope whose handler is running in this context, so a dispatch from
#: inside a handler carries the conversation on (correlation and causation).
_current: ContextVar[Envelope | None] = ContextVar("courier_current_envelope", default=None)


def current_envelope() -> Envelope | None:
    """The envelope being handled in this context, if any."""
    return _current.get()


class Handling:
    """Runs the handlers of one bus.

    It needs the handlers, the router (an event received on a subscription's
    queue names its subscription), a way to dispatch what a handler returns,
    and the poison guard, which notes the message whose handler is running.
    """

    def __init__(
        self,
        handlers: HandlerRegistry,
        router: Router,
        dispatch: Callable[[Message], object],
        guard: PoisonGuard,
    ) -> None:
        self.handlers = handlers
        self.router = router
        self.dispatch = dispatch
        self.guard = guard
        #: Per message class: whether it is an Event (``issubclass`` on a
        #: pydantic model class goes through ABCMeta, too slow per message).
        self._is_event: dict[type[Message], bool] = {}

    def handle(self, envelope: Envelope) -> Envelope:
        """The end of the consume stack: the handler for this delivery."""
        message_type = type(envelope.message)
        is_event = self._is_event.get(message_type)
        if is_event is None:
            is_event = self._is_event[message_type] = issubclass(message_type, Event)
        if is_event:
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

    def handle_now(self, envelope: Envelope) -> Envelope:
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
            # The handler alone is noted: a death while it runs is this message's.
            consuming = envelope.received is not None
            if consuming:
                self.guard.begin(envelope.id)
            try:
                if spec.takes_envelope:
                    result = spec.func(envelope.message, envelope)
                else:
                    result = spec.func(envelope.message)
            finally:
                if consuming:
                    self.guard.end()
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
            # A programming error, not bad luck: retrying returns the same thing.
            raise UnrecoverableError(
                f"handler {spec.name} returned {type(result).__name__}; a handler returns "
                "None, a Message or a list of Messages"
            )
