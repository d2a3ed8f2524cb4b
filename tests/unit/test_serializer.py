"""The JSON serializer: round trips, and every way bytes can fail to become a message."""

from __future__ import annotations

import json
from typing import ClassVar

import pytest
from pydantic import Field

from courier import (
    Envelope,
    ErrorDetails,
    InvalidMessage,
    Message,
    MessageDecodingFailed,
    ValidationFailed,
)
from courier.registry import MessageRegistry
from courier.serializer import DEFAULT_MAX_BODY, JSON, Headers, JsonSerializer, pack, unpack


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"

    to: str
    subject: str = ""


class Attachment(Message):
    message_name: ClassVar[str] = "email.attachment"

    name: str
    size: int


class Batch(Message):
    """Fields typed as the Message base, holding concrete subclasses."""

    message_name: ClassVar[str] = "email.batch"

    first: Message
    rest: list[Message] = Field(default_factory=list)


@pytest.fixture
def serializer() -> JsonSerializer:
    registry = MessageRegistry()
    for cls in (SendEmail, Attachment, Batch):
        registry.register(cls)
    return JsonSerializer(registry)


def good_headers(**extra: str) -> dict[str, str]:
    return {Headers.TYPE: "email.send", Headers.ID: "id-1", **extra}


def test_encode_writes_the_message_as_json_and_metadata_as_headers(
    serializer: JsonSerializer,
) -> None:
    envelope = Envelope(SendEmail(to="ada@example.com", subject="Hi"), id="m-1")
    body, headers = serializer.encode(envelope)
    assert json.loads(body) == {"to": "ada@example.com", "subject": "Hi"}
    assert headers == {
        "content-type": JSON,
        "courier-type": "email.send",
        "courier-id": "m-1",
        "courier-created": repr(envelope.timestamp),
    }


def test_round_trip_of_a_first_attempt(serializer: JsonSerializer) -> None:
    envelope = Envelope(SendEmail(to="a@example.com"))
    decoded = serializer.decode(*serializer.encode(envelope))
    assert decoded == envelope
    assert type(decoded.message) is SendEmail


def test_round_trip_of_every_header(serializer: JsonSerializer) -> None:
    error = ErrorDetails("app.Boom", "it broke", "Traceback ...", 1700000000.25, "jobs", "q")
    envelope = Envelope(
        SendEmail(to="a@example.com"),
        attempt=4,
        priority=7,
        ttr=12.5,
        correlation_id="conv-1",
        causation_id="cause-1",
        error=error,
        headers={"x-tenant": "acme", "traceparent": "00-abc-def-01"},
    )
    body, headers = serializer.encode(envelope)
    assert headers[Headers.ATTEMPT] == "4"
    assert headers[Headers.PRIORITY] == "7"
    decoded = serializer.decode(body, headers)
    assert decoded == envelope
    assert decoded.error == error
    assert dict(decoded.headers) == {"x-tenant": "acme", "traceparent": "00-abc-def-01"}


def test_delay_does_not_travel(serializer: JsonSerializer) -> None:
    # The transport delays delivery; the consumer sees a message due now.
    decoded = serializer.decode(*serializer.encode(Envelope(SendEmail(to="a"), delay=30)))
    assert decoded.delay == 0.0


def test_fields_typed_as_the_message_base_serialize_through_the_concrete_class(
    serializer: JsonSerializer,
) -> None:
    batch = Batch(
        first=SendEmail(to="a@example.com", subject="s"),
        rest=[Attachment(name="cv.pdf", size=10)],
    )
    body, _ = serializer.encode(Envelope(batch))
    assert json.loads(body) == {
        "first": {"to": "a@example.com", "subject": "s"},
        "rest": [{"name": "cv.pdf", "size": 10}],
    }


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "Application/JSON", None],
)
def test_json_content_types_are_accepted(
    serializer: JsonSerializer, content_type: str | None
) -> None:
    headers = (
        good_headers() if content_type is None else good_headers(**{"content-type": content_type})
    )
    assert serializer.decode(b'{"to": "a"}', headers).message == SendEmail(to="a")


BAD_BODIES = [
    pytest.param(b'{"to": "a"', "malformed JSON", id="truncated"),
    pytest.param(b'{"to": "\xff\xfe"}', "malformed JSON", id="invalid-utf8-in-string"),
    pytest.param(b"\xff\xfe\xfd", "malformed JSON", id="invalid-utf8"),
    pytest.param(b"[" * 10_000 + b"]" * 10_000, "malformed JSON", id="deep-array"),
    pytest.param(
        b'{"to": "a", "x": ' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_001,
        "malformed JSON",
        id="deep-object",
    ),
    pytest.param(b'["to", "a"]', "not a JSON object", id="array"),
    pytest.param(b'"to a"', "not a JSON object", id="string"),
    pytest.param(b"42", "not a JSON object", id="number"),
    pytest.param(b"null", "not a JSON object", id="null"),
    pytest.param(b"", "malformed JSON", id="empty"),
    pytest.param(b"   ", "malformed JSON", id="blank"),
]


@pytest.mark.parametrize(("body", "reason"), BAD_BODIES)
def test_bad_bodies_fail_to_decode_with_the_raw_bytes(
    serializer: JsonSerializer, body: bytes, reason: str
) -> None:
    headers = good_headers()
    with pytest.raises(MessageDecodingFailed) as caught:
        serializer.decode(body, headers)
    assert reason in caught.value.reason
    assert caught.value.raw == body
    assert caught.value.headers == headers


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        pytest.param({Headers.TYPE: "email.unknown"}, "unknown message type", id="unknown"),
        pytest.param({Headers.TYPE: "os.system"}, "unknown message type", id="os.system"),
        pytest.param({Headers.TYPE: "../../x"}, "invalid message type", id="path"),
        pytest.param({}, "no courier-type header", id="no-type"),
        pytest.param({Headers.TYPE: ""}, "no courier-type header", id="empty-type"),
        pytest.param(
            {Headers.TYPE: "email.send", "content-type": "text/x-php"},
            "content type",
            id="php",
        ),
        pytest.param(
            {Headers.TYPE: "email.send", "content-type": "application/x-python-pickle"},
            "content type",
            id="pickle",
        ),
        pytest.param(
            {Headers.TYPE: "email.send", "content-type": "application/jsonx"},
            "content type",
            id="json-lookalike",
        ),
        pytest.param({Headers.TYPE: "email.send", Headers.ATTEMPT: "two"}, "header", id="attempt"),
        pytest.param({Headers.TYPE: "email.send", Headers.ATTEMPT: "0"}, "range", id="attempt-0"),
        pytest.param({Headers.TYPE: "email.send", Headers.PRIORITY: "10"}, "range", id="prio"),
        pytest.param({Headers.TYPE: "email.send", Headers.CREATED: "yesterday"}, "header", id="ts"),
        pytest.param({Headers.TYPE: "email.send", Headers.ERROR: "{"}, "header", id="error"),
        pytest.param({Headers.TYPE: "email.send", Headers.ERROR: "[1]"}, "header", id="error-list"),
    ],
)
def test_bad_headers_fail_to_decode_with_the_raw_bytes(
    serializer: JsonSerializer, headers: dict[str, str], reason: str
) -> None:
    body = b'{"to": "a@example.com"}'
    with pytest.raises(MessageDecodingFailed, match=reason) as caught:
        serializer.decode(body, {Headers.ID: "id-1", **headers})
    assert caught.value.raw == body


def test_missing_id_fails_to_decode(serializer: JsonSerializer) -> None:
    with pytest.raises(MessageDecodingFailed, match="no courier-id"):
        serializer.decode(b'{"to": "a"}', {Headers.TYPE: "email.send"})


def test_body_over_the_limit_is_refused_before_parsing() -> None:
    registry = MessageRegistry()
    registry.register(SendEmail)
    serializer = JsonSerializer(registry, max_body=64)
    fits = b'{"to": "' + b"a" * 54 + b'"}'
    assert len(fits) == 64
    assert serializer.decode(fits, good_headers()).message == SendEmail(to="a" * 54)
    # One byte more, and not even JSON: refused on its size alone.
    too_big = b"{" * 65
    with pytest.raises(MessageDecodingFailed, match="65 bytes exceeds the limit of 64") as caught:
        serializer.decode(too_big, good_headers())
    assert caught.value.raw == too_big


def test_the_record_of_an_oversized_body_can_be_read_back() -> None:
    # The invalid-message store holds refused bytes base64-encoded, a third
    # larger than they were: reading the record must not refuse it.
    registry = MessageRegistry()
    registry.register(InvalidMessage)
    serializer = JsonSerializer(registry, max_body=1024, internal=True)
    refused = b"\xff" + b"x" * 1500
    record = InvalidMessage(
        body=refused, headers={}, reason="too large", transport="jobs", queue="jobs"
    )
    body, headers = serializer.encode(Envelope(record))
    assert len(body) > 2000
    decoded = serializer.decode(body, headers)
    assert isinstance(decoded.message, InvalidMessage)
    assert decoded.message.body == refused
    # Still bounded: a huge body labelled as such a record is refused unparsed.
    with pytest.raises(MessageDecodingFailed, match="exceeds the limit"):
        serializer.decode(b"{" * (2 * 1024 + 65_537), headers)


def test_default_size_limit() -> None:
    assert DEFAULT_MAX_BODY == 4 * 1024 * 1024
    assert JsonSerializer(MessageRegistry()).max_body == DEFAULT_MAX_BODY


def test_size_is_checked_before_the_type_and_the_content_type(serializer: JsonSerializer) -> None:
    limited = JsonSerializer(serializer.registry, max_body=4)
    with pytest.raises(MessageDecodingFailed, match="exceeds"):
        limited.decode(b"12345", {Headers.TYPE: "os.system", "content-type": "text/plain"})


def test_schema_invalid_payload_raises_validation_failed(serializer: JsonSerializer) -> None:
    with pytest.raises(ValidationFailed) as caught:
        serializer.decode(b'{"subject": 5}', good_headers())
    error = caught.value
    assert error.message_type == "email.send"
    assert [(path, kind) for path, kind, _ in error.errors] == [
        ("to", "missing"),
        ("subject", "string_type"),
    ]


def test_unknown_fields_are_ignored(serializer: JsonSerializer) -> None:
    decoded = serializer.decode(b'{"to": "a", "added_later": 1}', good_headers())
    assert decoded.message == SendEmail(to="a")


def test_pack_and_unpack_carry_headers_inside_the_body() -> None:
    headers = {"courier-type": "email.send", "x": "y"}
    for body in (b'{"to": "a"}', b"\xff\x00binary"):
        blob = pack(body, headers)
        assert unpack(blob) == (body, headers)
    assert json.loads(pack(b'{"to": "a"}', headers))["body"] == '{"to": "a"}'


@pytest.mark.parametrize(
    "blob",
    [b"", b"[]", b'{"headers": {}}', b'{"headers": {"a": 1}, "body": ""}', b'{"body": "x"}', b"{"],
)
def test_unpack_refuses_anything_else(blob: bytes) -> None:
    with pytest.raises(MessageDecodingFailed, match="not a courier envelope") as caught:
        unpack(blob)
    assert caught.value.raw == blob
