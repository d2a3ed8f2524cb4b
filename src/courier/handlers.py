"""Which function handles which message.

A command has exactly one handler: two is a configuration error the moment
the second registers, none is one at worker startup. Each handler of an
:class:`~courier.message.Event` is a subscription with its own queue, named
explicitly or after the function (renaming the function then orphans its
queue; ``courier setup`` lists such queues).

Handlers are marked where they are written, without a global registry, and
registered on a bus explicitly::

    @handler(SendEmail)
    def send_email(message: SendEmail) -> None: ...

    bus.register(send_email)          # or bus.register(my_app.handlers)
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from courier.errors import ConfigurationError
from courier.message import Event, Message

__all__ = ["HandlerRegistry", "HandlerSpec", "handler"]

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__courier_handles__"
_SUBSCRIPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,99}$")


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler."""

    message_type: type[Message]
    func: Callable[..., Any]
    #: The subscription name, for event handlers; None for commands.
    subscription: str | None
    #: Whether the function takes the envelope as a second argument.
    takes_envelope: bool

    @property
    def name(self) -> str:
        func = self.func
        return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


def handler(message_type: type[Message], *, subscription: str | None = None) -> Callable[[F], F]:
    """Mark a function as the handler of ``message_type`` (a subscription, for events).

    The function takes the message, and optionally the envelope as a second
    argument. Returning a message continues a pipeline: the bus dispatches
    it before the incoming message is acknowledged.
    """

    def mark(func: F) -> F:
        marks = list(getattr(func, _MARK, ()))
        marks.append((message_type, subscription))
        try:
            setattr(func, _MARK, marks)
        except AttributeError:
            raise ConfigurationError(f"cannot mark {func!r} as a handler") from None
        return func

    return mark


def marked_handlers(target: Any) -> list[tuple[Callable[..., Any], type[Message], str | None]]:
    """The (function, type, subscription) marks on a function or in a module."""
    if isinstance(target, ModuleType):
        found = []
        for value in vars(target).values():
            found += marked_handlers(value) if callable(value) and hasattr(value, _MARK) else []
        return found
    marks = getattr(target, _MARK, None)
    if marks is None:
        raise ConfigurationError(f"{target!r} is not marked with @handler(...)")
    return [(target, message_type, subscription) for message_type, subscription in marks]


def _is_async(func: Callable[..., Any]) -> bool:
    """A coroutine or async generator function, or an object whose ``__call__`` is one."""
    for candidate in (func, getattr(func, "__call__", None)):  # noqa: B004
        while isinstance(candidate, functools.partial):
            candidate = candidate.func
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return True
    return False


def _takes_envelope(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in parameters
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if any(p.kind is p.VAR_POSITIONAL for p in positional):
        return True
    if not positional:
        raise ConfigurationError(f"handler {func!r} must take the message as its first argument")
    return len(positional) >= 2


class HandlerRegistry:
    """The handlers of one bus: one per command, any number of subscriptions per event."""

    def __init__(self) -> None:
        self._commands: dict[type[Message], HandlerSpec] = {}
        self._events: dict[type[Message], dict[str, HandlerSpec]] = {}

    def add(
        self,
        func: Callable[..., Any],
        message_type: type[Message],
        subscription: str | None = None,
    ) -> HandlerSpec:
        if not (isinstance(message_type, type) and issubclass(message_type, Message)):
            raise ConfigurationError(f"{message_type!r} is not a courier Message class")
        if not callable(func):
            raise ConfigurationError(f"handler {func!r} is not callable")
        if _is_async(func):
            raise ConfigurationError(
                f"handler {getattr(func, '__qualname__', func)!r} is async def: courier's worker "
                "calls handlers synchronously, so it would only ever get a coroutine back; write "
                "it as a plain def (use asyncio.run inside it if it must await)"
            )
        takes_envelope = _takes_envelope(func)
        if issubclass(message_type, Event):
            name: str = subscription or str(getattr(func, "__name__", ""))
            if not _SUBSCRIPTION.match(name):
                raise ConfigurationError(
                    f"subscription name {name!r} for {message_type.__qualname__} is not valid: "
                    "pass subscription='letters-digits_dashes'"
                )
            subscriptions = self._events.setdefault(message_type, {})
            if name in subscriptions and subscriptions[name].func is not func:
                raise ConfigurationError(
                    f"{message_type.__qualname__} already has a subscription named {name!r} "
                    f"({subscriptions[name].name})"
                )
            spec = HandlerSpec(message_type, func, name, takes_envelope)
            subscriptions[name] = spec
            return spec
        if subscription is not None:
            raise ConfigurationError(
                f"{message_type.__qualname__} is a command: subscriptions are for Event types"
            )
        known = self._commands.get(message_type)
        if known is not None and known.func is not func:
            raise ConfigurationError(
                f"{message_type.__qualname__} is a command and already has a handler "
                f"({known.name}); a command has exactly one"
            )
        spec = HandlerSpec(message_type, func, None, takes_envelope)
        self._commands[message_type] = spec
        return spec

    def command(self, message_type: type[Message]) -> HandlerSpec | None:
        return self._commands.get(message_type)

    def subscriptions(self, message_type: type[Message]) -> dict[str, HandlerSpec]:
        return self._events.get(message_type, {})

    def message_types(self) -> list[type[Message]]:
        return [*self._commands, *self._events]

    def all(self) -> list[HandlerSpec]:
        specs = list(self._commands.values())
        for subscriptions in self._events.values():
            specs += subscriptions.values()
        return specs
