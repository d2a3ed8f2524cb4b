"""Message wire names, and the registry that is the only way from a name to a class."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import pytest

from courier import Bus, ConfigurationError, Event, Message
from courier.message import valid_message_name
from courier.registry import MessageRegistry

if TYPE_CHECKING:
    from collections.abc import Callable


class Explicit(Message):
    message_name: ClassVar[str] = "email.send"

    to: str


class Derived(Message):
    to: str


class DerivedChild(Explicit):
    """A subclass does not inherit its parent's wire name."""


class Happened(Event):
    message_name: ClassVar[str] = "user.registered"


class SameNameAsExplicit(Message):
    message_name: ClassVar[str] = "email.send"


def test_explicit_wire_name() -> None:
    assert Explicit.message_name == "email.send"
    assert Happened.message_name == "user.registered"


def test_derived_wire_name_is_module_and_qualified_name() -> None:
    assert Derived.message_name == f"{__name__}.Derived"
    assert DerivedChild.message_name == f"{__name__}.DerivedChild"
    assert Derived.message_name != Explicit.message_name


def test_wire_name_is_not_a_field() -> None:
    assert "message_name" not in Explicit.model_fields
    assert Explicit(to="a").model_dump() == {"to": "a"}


@pytest.mark.parametrize(
    "name",
    ["email.send", "a", "_private", "Billing:Invoice-v2", "x" * 255, "app.v1.user_created"],
)
def test_valid_names(name: str) -> None:
    assert valid_message_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../../x",
        "a..b",
        ".leading",
        "1starts-with-digit",
        "has space",
        "slash/inside",
        "back\\slash",
        "semi;colon",
        "x" * 256,
        "quote'd",
        "new\nline",
        "f.<locals>.Local",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not valid_message_name(name)


@pytest.mark.parametrize("name", ["../../x", "has space", "a..b", "os.system()"])
def test_a_class_with_an_invalid_wire_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigurationError, match="not a valid wire name"):
        type("Bad", (Message,), {"message_name": name, "__annotations__": {}})


def test_a_local_class_derives_a_name_without_locals() -> None:
    class Local(Message):
        pass

    assert Local.message_name == (
        f"{__name__}.test_a_local_class_derives_a_name_without_locals.Local"
    )
    assert valid_message_name(Local.message_name)

    class Named(Message):
        message_name: ClassVar[str] = "test.local.named"

    assert Named.message_name == "test.local.named"


def test_two_classes_with_one_wire_name_conflict_in_a_registry() -> None:
    registry = MessageRegistry()
    registry.register(Explicit)
    registry.register(Explicit)  # the same class again is harmless
    with pytest.raises(ConfigurationError, match=r"email\.send") as caught:
        registry.register(SameNameAsExplicit)
    assert "Explicit" in str(caught.value)
    assert "SameNameAsExplicit" in str(caught.value)
    assert registry.resolve("email.send") is Explicit


@pytest.mark.parametrize("how", ["route", "handler", "register_messages", "dispatch"])
def test_two_classes_with_one_wire_name_conflict_on_a_bus(how: str) -> None:
    bus = Bus(transports={"jobs": "memory://"})
    bus.register_messages(Explicit)
    ways: dict[str, Callable[[], object]] = {
        "route": lambda: bus.route(SameNameAsExplicit, "jobs"),
        "handler": lambda: bus.add_handler(lambda message: None, SameNameAsExplicit),
        "register_messages": lambda: bus.register_messages(SameNameAsExplicit),
        "dispatch": lambda: bus.dispatch(SameNameAsExplicit()),
    }
    with pytest.raises(ConfigurationError, match=r"email\.send"):
        ways[how]()
    assert bus.registry.resolve("email.send") is Explicit


def test_registry_resolves_only_what_was_registered() -> None:
    registry = MessageRegistry()
    registry.register(Explicit)
    registry.register(Happened)
    assert registry.resolve("email.send") is Explicit
    assert registry.resolve("user.registered") is Happened
    assert registry.resolve(f"{__name__}.Derived") is None
    assert registry.resolve("os.system") is None
    assert "email.send" in registry
    assert "os.system" not in registry
    assert len(registry) == 2
    assert set(registry) == {Explicit, Happened}
    assert registry.names() == ["email.send", "user.registered"]


@pytest.mark.parametrize("thing", [int, object, "email.send", Explicit(to="a")])
def test_only_message_classes_register(thing: object) -> None:
    with pytest.raises(ConfigurationError, match="not a courier Message class"):
        MessageRegistry().register(thing)  # type: ignore[arg-type]


def test_messages_are_frozen() -> None:
    message = Explicit(to="a")
    with pytest.raises(ValueError, match="frozen"):
        message.to = "b"  # type: ignore[misc]
