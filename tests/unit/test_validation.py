"""ValidationFailed names field paths and error types, never the values."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

from courier import Bus, Envelope, InvalidMessage, Message, ValidationFailed
from courier.envelope import ErrorDetails
from courier.middleware.validation import ValidationMiddleware
from courier.registry import MessageRegistry
from courier.serializer import Headers, JsonSerializer
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier.worker import Worker

SECRET = "hunter2-S3CR3T-4111111111111111"


class Address(BaseModel):
    street: str
    postcode: str = Field(pattern=r"^\d{5}$")


class Payment(Message):
    message_name: ClassVar[str] = "billing.payment"

    card_number: int
    kind: Literal["visa", "amex"]
    amount: float = Field(gt=0)
    address: Address
    tags: list[int] = Field(default_factory=list)


SECRET_BODY = (
    '{"card_number": "%s", "kind": "%s", "amount": "%s", '
    '"address": {"street": 1, "postcode": "%s"}, "tags": [1, "%s"]}' % ((SECRET,) * 5)
).encode()

EXPECTED = [
    ("card_number", "int_parsing"),
    ("kind", "literal_error"),
    ("amount", "float_parsing"),
    ("address.street", "string_type"),
    ("address.postcode", "string_pattern_mismatch"),
    ("tags.1", "int_parsing"),
]


def decode_secret_body() -> ValidationFailed:
    registry = MessageRegistry()
    registry.register(Payment)
    serializer = JsonSerializer(registry)
    with pytest.raises(ValidationFailed) as caught:
        serializer.decode(SECRET_BODY, {Headers.TYPE: "billing.payment", Headers.ID: "p-1"})
    return caught.value


def test_errors_name_paths_and_types() -> None:
    error = decode_secret_body()
    assert [(path, kind) for path, kind, _ in error.errors] == EXPECTED
    text = str(error)
    assert text.startswith("invalid billing.payment: ")
    for path, kind in EXPECTED:
        assert f"{path}: {kind}" in text


def test_no_rendering_contains_the_value() -> None:
    error = decode_secret_body()
    renderings = [str(error), repr(error), *(message for _, _, message in error.errors)]
    details = ErrorDetails.from_exception(error)
    renderings += [details.message, details.traceback]
    assert SECRET in SECRET_BODY.decode()
    for text in renderings:
        assert SECRET not in text
        assert "hunter2" not in text


def test_error_at_the_root_is_named() -> None:
    error = ValidationFailed("x", [("", "model_type", "Input should be an object")])
    assert str(error) == "invalid x: <root>: model_type"


def test_dispatch_validation_catches_messages_built_without_validation(
    make_bus: Callable[..., Bus],
) -> None:
    bus = make_bus(validate=True, transports={"jobs": "memory://"})
    bus.route(Payment, "jobs")
    bad = Payment.model_construct(
        card_number=SECRET, kind="visa", amount=1.0, address=Address(street="s", postcode="12345")
    )
    with pytest.raises(ValidationFailed, match="card_number: int_parsing") as caught:
        bus.dispatch(bad)
    assert SECRET not in str(caught.value)
    jobs = bus.transport("jobs")
    assert isinstance(jobs, MemoryTransport)
    assert list(jobs.sent) == []


def test_dispatch_validation_is_off_by_default(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"jobs": "memory://"})
    bus.route(Payment, "jobs")
    bad = Payment.model_construct(card_number="x", kind="visa", amount=1.0)
    assert bus.dispatch(bad).message is bad


def test_validation_middleware_passes_valid_messages_on() -> None:
    envelope = Envelope(
        Payment(
            card_number=1, kind="amex", amount=2.5, address=Address(street="s", postcode="12345")
        )
    )
    assert ValidationMiddleware().handle(envelope, lambda e: e.with_(attempt=2)).attempt == 2


def test_invalid_payload_in_the_consume_path_keeps_no_value_in_the_record(
    dead_letter_bus: Bus, run_worker: Callable[..., Worker]
) -> None:
    bus = dead_letter_bus
    bus.route(Payment, "jobs")
    handled: list[Payment] = []
    bus.add_handler(handled.append, Payment)
    jobs = bus.transport("jobs")
    assert isinstance(jobs, MemoryTransport)
    jobs.send_raw(SECRET_BODY, {Headers.TYPE: "billing.payment", Headers.ID: "p-1"})
    run_worker(bus, ["jobs"])
    assert handled == []
    invalid = bus.transport("invalid")
    assert isinstance(invalid, MemoryTransport)
    [kept] = invalid.list()
    assert kept.error is not None
    assert kept.error.error_class == "courier.errors.ValidationFailed"
    assert "card_number: int_parsing" in kept.error.message
    # The evidence keeps the body; the error texts never quote it.
    assert isinstance(kept.message, InvalidMessage)
    assert kept.message.body == SECRET_BODY
    for text in (kept.error.message, kept.error.traceback, kept.message.reason):
        assert SECRET not in text
