"""Envelope <-> (body bytes, string headers).

The body is the message's own JSON; everything else about the envelope
travels in headers, so a broker's UI shows a readable payload and a foreign
consumer can read it without knowing courier. Brokers without native
headers carry them inside the body with :func:`pack` / :func:`unpack`.

Decoding is where untrusted bytes meet the application, so it is strict and
cheap to refuse: size first, then the content type, then the type name
(looked up in the registry, never imported), and only then the JSON, parsed
by pydantic-core straight into the registered class.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json, to_json

from courier.envelope import _EMPTY_HEADERS, Envelope, ErrorDetails
from courier.errors import MessageDecodingFailed, ValidationFailed
from courier.message import Message, valid_message_name
from courier.registry import MessageRegistry

if TYPE_CHECKING:
    from courier.transports.base import Received

__all__ = [
    "DEFAULT_MAX_BODY",
    "INVALID_MESSAGE_TYPE",
    "JSON",
    "RESERVED_TYPES",
    "Headers",
    "JsonSerializer",
    "Serializer",
    "pack",
    "unpack",
]

JSON = "application/json"

#: Bodies larger than this are refused without being parsed.
DEFAULT_MAX_BODY = 4 * 1024 * 1024

#: The wire name of :class:`courier.dead_letters.InvalidMessage`.
INVALID_MESSAGE_TYPE = "courier.invalid-message"

#: Types only courier writes, and only to its failure and invalid-message
#: transports: anywhere else, a message claiming one is itself invalid.
RESERVED_TYPES = frozenset({INVALID_MESSAGE_TYPE})

_new_tuple = tuple.__new__


class Headers:
    """The names of the headers courier writes; everything else is free-form."""

    CONTENT_TYPE = "content-type"
    TYPE = "courier-type"
    ID = "courier-id"
    ATTEMPT = "courier-attempt"
    CREATED = "courier-created"
    PRIORITY = "courier-priority"
    TTR = "courier-ttr"
    CORRELATION_ID = "courier-correlation-id"
    CAUSATION_ID = "courier-causation-id"
    ERROR = "courier-error"
    #: How many times a failure store kept this envelope id (see Listable.keep).
    KEPT = "courier-kept"

    KNOWN = frozenset(
        {
            CONTENT_TYPE,
            TYPE,
            ID,
            ATTEMPT,
            CREATED,
            PRIORITY,
            TTR,
            CORRELATION_ID,
            CAUSATION_ID,
            ERROR,
        }
    )


@runtime_checkable
class Serializer(Protocol):
    """Turns envelopes into bytes and headers and back.

    ``decode`` raises :class:`MessageDecodingFailed` for anything that is not
    a message at all and :class:`ValidationFailed` for a known type whose
    fields are wrong; both carry enough for the caller to dead-letter the
    raw bytes.
    """

    content_type: str
    max_body: int

    def encode(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]: ...

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Envelope: ...


class JsonSerializer:
    """courier's default: the message as JSON, metadata as headers."""

    content_type = JSON

    def __init__(
        self, registry: MessageRegistry, *, max_body: int = DEFAULT_MAX_BODY, internal: bool = False
    ) -> None:
        self.registry = registry
        self.max_body = max_body
        #: Whether courier's own record types decode here (the failure and
        #: invalid-message transports only; see RESERVED_TYPES).
        self.internal = internal
        self._nested: dict[type[Message], bool] = {}

    def encode(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]:
        message = envelope.message
        cls = type(message)
        nested = self._nested.get(cls)
        if nested is None:
            nested = self._nested[cls] = _has_nested_models(cls)
        # Serialize through the concrete classes: a field typed as the Message
        # base would serialize a subclass as {} in pydantic v2 without
        # ``serialize_as_any`` (which costs a third more, so only when needed).
        body = message.__pydantic_serializer__.to_json(message, serialize_as_any=nested)
        headers = {
            Headers.CONTENT_TYPE: JSON,
            Headers.TYPE: message.message_name,
            Headers.ID: envelope.id,
            Headers.CREATED: repr(envelope.timestamp),
        }
        if envelope.attempt != 1:
            headers[Headers.ATTEMPT] = str(envelope.attempt)
        if envelope.priority:
            headers[Headers.PRIORITY] = str(envelope.priority)
        if envelope.ttr is not None:
            headers[Headers.TTR] = repr(envelope.ttr)
        if envelope.correlation_id is not None:
            headers[Headers.CORRELATION_ID] = envelope.correlation_id
        if envelope.causation_id is not None:
            headers[Headers.CAUSATION_ID] = envelope.causation_id
        if envelope.error is not None:
            headers[Headers.ERROR] = to_json(envelope.error.to_dict()).decode()
        if envelope.headers:
            headers.update(envelope.headers)
        return body, headers

    def limit_for(self, message_type: str | None) -> int:
        """The largest body decoded (and so sent) for ``message_type``.

        courier's own record of refused bytes holds them base64-encoded, a
        third larger: it gets room for a body up to half again over the
        limit, so the record of an oversized body can still be read back.
        """
        if message_type == INVALID_MESSAGE_TYPE and self.internal:
            return 2 * self.max_body + 65_536
        return self.max_body

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Envelope:
        return self.decode_for(body, headers, None)

    def decode_for(
        self, body: bytes, headers: Mapping[str, str], received: Received | None
    ) -> Envelope:
        """:meth:`decode`, with ``received`` set on the envelope built (one tuple, not two)."""
        get = headers.get
        name = get(Headers.TYPE)
        content_type = get(Headers.CONTENT_TYPE)
        # The common case first: a known, non-reserved type under the plain limit.
        cls = self.registry.resolve(name) if name else None
        if cls is None or name in RESERVED_TYPES or len(body) > self.max_body:
            cls = self._refuse(body, headers, name, cls)
        elif content_type is not None and content_type != JSON:
            self._check_content_type(body, headers, content_type)
        try:
            message = cls.__pydantic_validator__.validate_json(body)
        except ValidationError as error:
            first = error.errors(include_input=False, include_url=False)[0]
            if first["type"] == "json_invalid":
                raise MessageDecodingFailed(
                    f"malformed JSON: {first['msg']}", body, headers
                ) from None
            if first["type"] == "model_type" and not first["loc"]:
                raise MessageDecodingFailed(
                    "the body is not a JSON object", body, headers
                ) from None
            raise ValidationFailed.from_pydantic(cls.message_name, error) from None
        message_id = get(Headers.ID)
        if not message_id:
            raise MessageDecodingFailed("no courier-id header", body, headers)
        created = get(Headers.CREATED)
        if created is not None and len(headers) == 4 and content_type is not None:
            # The common case, a first attempt with no extras: nothing else to read.
            try:
                timestamp = float(created)
            except (ValueError, TypeError):
                raise MessageDecodingFailed("malformed courier header", body, headers) from None
            return _new_tuple(
                Envelope,
                (
                    message,
                    message_id,
                    1,
                    timestamp,
                    0.0,
                    0,
                    None,
                    None,
                    None,
                    None,
                    None,
                    _EMPTY_HEADERS,
                    received,
                ),
            )
        return self._envelope(message, message_id, body, headers, received)

    def _refuse(
        self,
        body: bytes,
        headers: Mapping[str, str],
        name: str | None,
        cls: type[Message] | None,
    ) -> type[Message]:
        """Off the fast path: raise in the documented order, or return the class after all."""
        limit = self.limit_for(name)
        if len(body) > limit:
            raise MessageDecodingFailed(
                f"body of {len(body)} bytes exceeds the limit of {limit} bytes",
                body,
                headers,
            )
        content_type = headers.get(Headers.CONTENT_TYPE)
        if content_type is not None and content_type != JSON:
            self._check_content_type(body, headers, content_type)
        if not name:
            raise MessageDecodingFailed("no courier-type header", body, headers)
        if name in RESERVED_TYPES and not self.internal:
            raise MessageDecodingFailed(
                f"reserved type {name!r}: only courier writes it, and only to its failure and "
                "invalid-message transports",
                body,
                headers,
            )
        if cls is None:
            shape = "unknown" if valid_message_name(name) else "invalid"
            raise MessageDecodingFailed(f"{shape} message type {_shown(name)}", body, headers)
        return cls

    @staticmethod
    def _check_content_type(body: bytes, headers: Mapping[str, str], content_type: str) -> None:
        if content_type.split(";", 1)[0].strip().lower() != JSON:
            raise MessageDecodingFailed(
                f"content type {_shown(content_type)} is not {JSON}", body, headers
            )

    def _envelope(
        self,
        message: Message,
        message_id: str,
        body: bytes,
        headers: Mapping[str, str],
        received: Received | None,
    ) -> Envelope:
        get = headers.get
        try:
            attempt_text = get(Headers.ATTEMPT)
            attempt = 1 if attempt_text is None else int(attempt_text)
            created_text = get(Headers.CREATED)
            created = 0.0 if created_text is None else float(created_text)
            priority_text = get(Headers.PRIORITY)
            priority = 0 if priority_text is None else int(priority_text)
            ttr_text = get(Headers.TTR)
            ttr = None if ttr_text is None else float(ttr_text)
            error_text = get(Headers.ERROR)
            error = None if error_text is None else ErrorDetails.from_dict(from_json(error_text))
        except (ValueError, TypeError, AttributeError):
            raise MessageDecodingFailed("malformed courier header", body, headers) from None
        if attempt < 1 or not 0 <= priority <= 9:
            raise MessageDecodingFailed("courier header out of range", body, headers)
        extra = {key: value for key, value in headers.items() if key not in Headers.KNOWN}
        return _new_tuple(
            Envelope,
            (
                message,
                message_id,
                attempt,
                created,
                0.0,
                priority,
                ttr,
                get(Headers.CORRELATION_ID),
                get(Headers.CAUSATION_ID),
                error,
                None,
                MappingProxyType(extra) if extra else _EMPTY_HEADERS,
                received,
            ),
        )


def _has_nested_models(cls: type[BaseModel]) -> bool:
    """Whether any field of ``cls`` can hold a pydantic model (possibly a subclass)."""

    def mentions_model(annotation: object) -> bool:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return True
        return any(mentions_model(argument) for argument in get_args(annotation))

    return any(mentions_model(field.annotation) for field in cls.model_fields.values())


def _shown(text: str) -> str:
    """A bounded, quoted rendition of untrusted text for an error message."""
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def pack(body: bytes, headers: Mapping[str, str]) -> bytes:
    """One blob holding body and headers, for brokers without headers.

    The body is kept as a string when it is UTF-8 (always, for JSON) so the
    blob stays readable in the broker's tools.
    """
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return json.dumps({"headers": dict(headers), "body_hex": body.hex()}).encode()
    return json.dumps({"headers": dict(headers), "body": text}).encode()


def unpack(blob: bytes) -> tuple[bytes, dict[str, str]]:
    """Undo :func:`pack`; raises :class:`MessageDecodingFailed` on anything else."""
    try:
        data = from_json(blob)
        headers = data["headers"]
        body = data["body"].encode() if "body" in data else bytes.fromhex(data["body_hex"])
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise TypeError("headers")
    except (ValueError, TypeError, KeyError, AttributeError):
        raise MessageDecodingFailed("not a courier envelope", blob) from None
    return body, headers
