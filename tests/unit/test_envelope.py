"""The Envelope: immutable, checked, copied with ``with_()``."""

from __future__ import annotations

import enum
import os
import random
import re
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from courier import ConfigurationError, Envelope, ErrorDetails, Message
from courier.envelope import new_message_id
from courier.transports.base import Received
from courier.transports.memory import MemoryTransport


class Ping(Message):
    message_name: ClassVar[str] = "test.envelope.ping"

    n: int = 0


def test_defaults() -> None:
    before = datetime.now(UTC).timestamp()
    envelope = Envelope(Ping(n=1))
    assert envelope.message == Ping(n=1)
    assert envelope.type == "test.envelope.ping"
    assert len(envelope.id) == 32
    int(envelope.id, 16)
    assert envelope.attempt == 1
    assert envelope.delay == 0.0
    assert envelope.priority == 0
    assert envelope.ttr is None
    assert envelope.correlation_id is None
    assert envelope.causation_id is None
    assert envelope.error is None
    assert envelope.transport_message_id is None
    assert dict(envelope.headers) == {}
    assert envelope.received is None
    assert before <= envelope.timestamp <= datetime.now(UTC).timestamp()
    assert envelope.created_at == datetime.fromtimestamp(envelope.timestamp, UTC)


def test_ids_are_unique() -> None:
    assert len({Envelope(Ping()).id for _ in range(1000)}) == 1000


def test_durations_accept_timedelta_and_datetimes() -> None:
    created = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    envelope = Envelope(
        Ping(), delay=timedelta(seconds=90), ttr=timedelta(minutes=2), created_at=created
    )
    assert envelope.delay == 90.0
    assert envelope.ttr == 120.0
    assert envelope.created_at == created


@pytest.mark.parametrize(
    "field",
    ["message", "id", "attempt", "delay", "priority", "headers", "error", "received", "timestamp"],
)
def test_fields_cannot_be_assigned(field: str) -> None:
    envelope = Envelope(Ping())
    with pytest.raises(AttributeError):
        setattr(envelope, field, None)
    assert getattr(envelope, field) is not None or field in {"error", "received"}


def test_no_new_attributes() -> None:
    envelope = Envelope(Ping())
    with pytest.raises(AttributeError):
        envelope.anything = 1  # type: ignore[attr-defined]


def test_with_returns_a_changed_copy_and_leaves_the_original() -> None:
    original = Envelope(Ping(n=1), priority=3, headers={"x-tenant": "acme"})
    copy = original.with_(attempt=2, delay=5, correlation_id="c-1")
    assert copy is not original
    assert (copy.attempt, copy.delay, copy.correlation_id) == (2, 5.0, "c-1")
    assert (original.attempt, original.delay, original.correlation_id) == (1, 0.0, None)
    assert copy.id == original.id
    assert copy.priority == 3
    assert dict(copy.headers) == {"x-tenant": "acme"}
    assert type(copy) is Envelope


def test_with_unknown_field_is_an_error() -> None:
    with pytest.raises(TypeError, match="no field 'colour'"):
        Envelope(Ping()).with_(colour="red")


def test_with_headers_adds_to_the_free_form_ones() -> None:
    envelope = Envelope(Ping(), headers={"a": "1"}).with_headers(b="2")
    assert dict(envelope.headers) == {"a": "1", "b": "2"}


@pytest.mark.parametrize("priority", [0, 5, 9])
def test_priorities_zero_to_nine(priority: int) -> None:
    assert Envelope(Ping(), priority=priority).priority == priority
    assert Envelope(Ping()).with_(priority=priority).priority == priority


def test_an_int_enum_priority_is_stored_as_an_int() -> None:
    class Urgency(enum.IntEnum):
        HIGH = 8

    envelope = Envelope(Ping(), priority=Urgency.HIGH)
    assert envelope.priority == 8
    assert type(envelope.priority) is int


@pytest.mark.parametrize("priority", [-1, 10, 99, 1.5, "5", None, True])
def test_priority_out_of_range_is_refused(priority: Any) -> None:
    with pytest.raises(ConfigurationError, match="priority"):
        Envelope(Ping(), priority=priority)
    with pytest.raises(ConfigurationError, match="priority"):
        Envelope(Ping()).with_(priority=priority)


@pytest.mark.parametrize("attempt", [0, -1, 1.0, "2", True])
def test_attempt_starts_at_one(attempt: Any) -> None:
    with pytest.raises(ConfigurationError, match="attempt"):
        Envelope(Ping(), attempt=attempt)
    with pytest.raises(ConfigurationError, match="attempt"):
        Envelope(Ping()).with_(attempt=attempt)


def test_negative_durations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="negative"):
        Envelope(Ping(), delay=-1)
    with pytest.raises(ConfigurationError, match="negative"):
        Envelope(Ping(), ttr=timedelta(seconds=-5))
    with pytest.raises(ConfigurationError, match="negative"):
        Envelope(Ping()).with_(delay=-0.5)


def test_with_converts_durations_as_the_constructor_does() -> None:
    envelope = Envelope(Ping()).with_(delay=timedelta(seconds=3), ttr=timedelta(seconds=30))
    assert envelope.delay == 3.0
    assert envelope.ttr == 30.0
    assert isinstance(envelope.ttr, float)


@pytest.mark.parametrize(
    "headers",
    [{"a": 1}, {1: "a"}, {"a": None}, {"a": b"bytes"}],
    ids=["int-value", "int-key", "none-value", "bytes-value"],
)
def test_headers_are_strings_to_strings(headers: dict[Any, Any]) -> None:
    with pytest.raises(ConfigurationError, match="strings"):
        Envelope(Ping(), headers=headers)
    with pytest.raises(ConfigurationError, match="strings"):
        Envelope(Ping()).with_(headers=headers)


def test_headers_are_immutable_and_detached_from_the_caller() -> None:
    given = {"x-tenant": "acme"}
    envelope = Envelope(Ping(), headers=given)
    given["x-tenant"] = "changed"
    assert envelope.headers["x-tenant"] == "acme"
    with pytest.raises(TypeError):
        envelope.headers["x-tenant"] = "other"  # type: ignore[index]
    assert dict(Envelope(Ping()).headers) == {}
    with pytest.raises(TypeError):
        Envelope(Ping()).headers["a"] = "b"  # type: ignore[index]


def test_equality_ignores_received() -> None:
    envelope = Envelope(Ping(n=1))
    transport = MemoryTransport(serializer=None)  # type: ignore[arg-type]
    received = Received(transport, handle=1, queue="default")
    delivered = envelope.with_(received=received)
    assert delivered.received is received
    assert delivered == envelope
    assert delivered == envelope
    assert hash(delivered) == hash(envelope)


def test_equality_sees_every_other_field() -> None:
    envelope = Envelope(Ping(n=1))
    assert envelope != envelope.with_(attempt=2)
    assert envelope != envelope.with_(message=Ping(n=2))
    assert envelope != envelope.with_(headers={"a": "b"})
    assert envelope != envelope.with_(id="other")
    assert envelope != Envelope(Ping(n=1))  # another id
    assert envelope != ("not", "an", "envelope")


def test_repr_is_short_and_names_what_matters() -> None:
    envelope = Envelope(Ping(n=123456), id="abc", priority=4, delay=2)
    text = repr(envelope)
    assert text == "Envelope(test.envelope.ping, id=abc, attempt=1, delay=2, priority=4)"
    assert "123456" not in text


def test_error_details_are_bounded() -> None:
    def recurse(depth: int) -> None:
        if depth == 0:
            raise RuntimeError("x" * 10_000)
        recurse(depth - 1)

    try:
        recurse(200)
    except RuntimeError as error:
        details = ErrorDetails.from_exception(error, transport="jobs", queue="q")
    assert details.error_class == "RuntimeError"
    assert details.short_class == "RuntimeError"
    assert details.message.endswith("... (truncated)")
    assert len(details.message) <= 2_000 + len("... (truncated)")
    trace = details.traceback
    assert len(trace) <= 8_000 + len("... (truncated)\n")
    # The tail kept still says what was raised and where, despite the huge text.
    assert "RuntimeError: xxx" in trace
    assert 'in recurse\n    raise RuntimeError("x" * 10_000)' in trace
    assert trace.count("in recurse") <= 30
    assert (details.transport, details.queue) == ("jobs", "q")
    assert ErrorDetails.from_dict(details.to_dict()) == details


def test_error_class_is_qualified_outside_builtins() -> None:
    details = ErrorDetails.from_exception(ConfigurationError("bad"))
    assert details.error_class == "courier.errors.ConfigurationError"
    assert details.short_class == "ConfigurationError"


def test_message_ids_are_128_bits_in_hex_and_an_application_seed_cannot_repeat_them() -> None:
    random.seed(7)
    first = new_message_id()
    random.seed(7)
    second = new_message_id()
    assert first != second
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert len({new_message_id() for _ in range(10_000)}) == 10_000


def test_a_forked_child_draws_other_message_ids_than_its_parent() -> None:
    # Without the reseed at fork, both would draw the same next id from the same state.
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(writing, new_message_id().encode())
        os._exit(0)
    os.close(writing)
    os.waitpid(pid, 0)
    child = os.read(reading, 64).decode()
    os.close(reading)
    assert re.fullmatch(r"[0-9a-f]{32}", child)
    assert child != new_message_id()
