"""Handler registration: one per command, named subscriptions for events."""

from __future__ import annotations

import functools
import types
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from courier import (
    ConfigurationError,
    Envelope,
    Event,
    HandlerFailed,
    Message,
    UnrecoverableError,
    handler,
)
from courier.middleware.retry import RetryStrategy

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier import Bus


class SendEmail(Message):
    message_name: ClassVar[str] = "test.handlers.send"

    to: str


class UserRegistered(Event):
    message_name: ClassVar[str] = "test.handlers.registered"

    user: int


def test_a_command_has_exactly_one_handler(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()

    def first(message: SendEmail) -> None: ...

    def second(message: SendEmail) -> None: ...

    bus.add_handler(first, SendEmail)
    bus.add_handler(first, SendEmail)  # the same function again is harmless
    with pytest.raises(ConfigurationError, match="already has a handler") as caught:
        bus.add_handler(second, SendEmail)
    assert "first" in str(caught.value)
    spec = bus.handlers.command(SendEmail)
    assert spec is not None
    assert spec.func is first


def test_a_command_takes_no_subscription(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(ConfigurationError, match="is a command"):
        make_bus().add_handler(lambda message: None, SendEmail, "welcome")


def test_event_subscriptions_are_named_explicitly_or_after_the_function(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus()

    def send_welcome_email(event: UserRegistered) -> None: ...

    def audit(event: UserRegistered) -> None: ...

    bus.add_handler(send_welcome_email, UserRegistered)
    bus.add_handler(audit, UserRegistered, "audit-log")
    assert sorted(bus.handlers.subscriptions(UserRegistered)) == [
        "audit-log",
        "send_welcome_email",
    ]


def test_two_functions_cannot_share_a_subscription_name(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()

    def one(event: UserRegistered) -> None: ...

    def two(event: UserRegistered) -> None: ...

    bus.add_handler(one, UserRegistered, "same")
    with pytest.raises(ConfigurationError, match="already has a subscription named 'same'"):
        bus.add_handler(two, UserRegistered, "same")


@pytest.mark.parametrize("name", ["has space", "dots.inside", "", "-leading", "x" * 101, "a/b"])
def test_invalid_subscription_names(make_bus: Callable[..., Bus], name: str) -> None:
    with pytest.raises(ConfigurationError, match="subscription name"):
        make_bus().add_handler(lambda event: None, UserRegistered, name)


def test_a_lambda_needs_an_explicit_subscription_name(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(ConfigurationError, match="'<lambda>'"):
        make_bus().add_handler(lambda event: None, UserRegistered)


def test_only_messages_and_callables(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    with pytest.raises(ConfigurationError, match="not a courier Message class"):
        bus.add_handler(lambda message: None, dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not callable"):
        bus.add_handler("not a function", SendEmail)  # type: ignore[arg-type]


def test_a_handler_must_take_the_message(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(ConfigurationError, match="must take the message"):
        make_bus().add_handler(lambda: None, SendEmail)


def test_the_envelope_is_passed_when_the_handler_takes_two_arguments(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus()
    seen: list[tuple[Any, ...]] = []

    @bus.handler(SendEmail)
    def with_envelope(message: SendEmail, envelope: Envelope) -> None:
        seen.append((message, envelope))

    sent = bus.dispatch(SendEmail(to="a"), headers={"x-tenant": "acme"})
    [(message, envelope)] = seen
    assert message == SendEmail(to="a")
    assert isinstance(envelope, Envelope)
    assert envelope.id == sent.id
    assert envelope.headers["x-tenant"] == "acme"


def test_the_marker_decorator_needs_explicit_registration(make_bus: Callable[..., Bus]) -> None:
    calls: list[str] = []

    @handler(SendEmail)
    def send(message: SendEmail) -> None:
        calls.append(message.to)

    @handler(UserRegistered, subscription="welcome")
    @handler(UserRegistered, subscription="audit")
    def on_registered(event: UserRegistered) -> None:
        calls.append(f"user {event.user}")

    bus = make_bus()
    assert bus.handlers.all() == []
    bus.register(send, on_registered)
    assert bus.handlers.command(SendEmail) is not None
    assert sorted(bus.handlers.subscriptions(UserRegistered)) == ["audit", "welcome"]
    bus.dispatch(SendEmail(to="a"))
    bus.dispatch(UserRegistered(user=7))
    assert calls == ["a", "user 7", "user 7"]


def test_registering_a_module_registers_every_marked_function(
    make_bus: Callable[..., Bus],
) -> None:
    module = types.ModuleType("app_handlers")

    @handler(SendEmail)
    def send(message: SendEmail) -> None: ...

    def unmarked(message: SendEmail) -> None: ...

    module.send = send  # type: ignore[attr-defined]
    module.unmarked = unmarked  # type: ignore[attr-defined]
    module.CONSTANT = 3  # type: ignore[attr-defined]
    bus = make_bus()
    bus.register(module)
    assert [spec.func for spec in bus.handlers.all()] == [send]


def test_registering_an_unmarked_function_is_an_error(make_bus: Callable[..., Bus]) -> None:
    def plain(message: SendEmail) -> None: ...

    with pytest.raises(ConfigurationError, match="not marked"):
        make_bus().register(plain)


def test_handling_registers_the_type_for_decoding(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    assert "test.handlers.send" not in bus.registry
    bus.add_handler(lambda message: None, SendEmail)
    assert bus.registry.resolve("test.handlers.send") is SendEmail


def test_a_handler_returning_something_else_fails(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    bus.add_handler(lambda message: "done", SendEmail)
    with pytest.raises(HandlerFailed) as caught:
        bus.dispatch(SendEmail(to="a"))
    [inner] = caught.value.errors
    # A programming error: unrecoverable, so a worker dead-letters it at once.
    assert isinstance(inner, UnrecoverableError)
    assert "returned str" in str(inner)


def test_an_async_handler_is_refused_when_it_registers(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()

    async def send(message: SendEmail) -> None: ...

    class Callback:
        async def __call__(self, message: SendEmail) -> None: ...

    for func in (send, Callback(), functools.partial(send)):
        with pytest.raises(ConfigurationError, match="is async def"):
            bus.add_handler(func, SendEmail)
    with pytest.raises(ConfigurationError, match="is async def"):
        bus.handler(SendEmail)(send)
    assert bus.handlers.command(SendEmail) is None


def test_a_wrong_return_goes_to_the_failure_store_without_retries(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., Any],
    run_worker: Callable[..., Any],
) -> None:
    bus = make_bus(failure_transport="failed", retry=RetryStrategy(max_retries=3, delay=0))
    add_memory(bus, "jobs")
    failed = add_memory(bus, "failed")
    bus.route(SendEmail, "jobs")
    calls: list[str] = []

    def returns_a_string(message: SendEmail) -> str:
        calls.append(message.to)
        return "done"

    bus.add_handler(returns_a_string, SendEmail)
    bus.dispatch(SendEmail(to="a"))
    run_worker(bus, ["jobs"])
    assert calls == ["a"]  # run once: retrying would return the same thing
    [kept] = failed.list()
    assert kept.error is not None
    assert kept.error.error_class == "courier.errors.UnrecoverableError"
    assert "returned str" in kept.error.message
