"""What goes on the wire: a text body and at most ten message attributes.

Part of the connection. SQS message bodies are text (a subset of Unicode:
no control characters but tab, CR and LF, no lone surrogates, no U+FFFE or
U+FFFF), and a message carries at most ten attributes whose names and
values have rules of their own. courier's bodies are bytes and its headers
free-form, so:

- a body that is valid SQS text goes as it is (courier's JSON always is);
  any other body goes base64-encoded, marked ``courier-encoding: base64``;
- headers go as String attributes when all of them fit (ten at most with
  the markers, names and values SQS accepts); otherwise headers and body
  travel together in the body, packed by :func:`courier.serializer.pack`
  and marked ``courier-encoding: packed`` (``courier-type`` and
  ``courier-id`` stay visible as attributes too, for the console);
- a delay over SQS's 900 seconds is sent as 900 with ``courier-due`` (the
  Unix time it is due); the receiving transport sends it on again until due.

A foreign producer that writes a JSON body with ``courier-type`` and
``courier-id`` String attributes is understood; any attribute type comes
back as text.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from courier.errors import MessageDecodingFailed
from courier.serializer import Headers, pack, unpack
from courier_sqs.options import MAX_DELAY

__all__ = [
    "BASE64",
    "DUE",
    "ENCODING",
    "MAX_ATTRIBUTES",
    "PACKED",
    "Incoming",
    "Outgoing",
    "incoming",
    "outgoing",
    "sqs_text",
]

ENCODING = "courier-encoding"
DUE = "courier-due"
BASE64 = "base64"
PACKED = "packed"
#: SQS's limit of message attributes per message.
MAX_ATTRIBUTES = 10

_STRING = "String"
_MARKERS = frozenset({ENCODING, DUE})
#: Characters SQS refuses in a body or an attribute value.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_ATTRIBUTE_NAME = re.compile(r"^(?!\.)(?!.*\.\.)(?!.*\.$)[A-Za-z0-9_.-]{1,256}$")
_RESERVED_PREFIXES = ("aws.", "amazon.")
#: Names already checked, to keep the per-message work small.
_good_names: dict[str, bool] = {}


class Outgoing(NamedTuple):
    """One message as SQS takes it; ``size`` counts body and attributes as SQS does."""

    body: str
    attributes: dict[str, dict[str, str]]
    size: int
    delay_seconds: int


class Incoming(NamedTuple):
    """A received message's body and headers, and when it is due (hops of long delays)."""

    body: bytes
    headers: dict[str, str]
    due: float | None


def sqs_text(body: bytes) -> str | None:
    """``body`` as text SQS accepts, or None when it is not (binary, control characters)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    return None if _NOT_SQS_TEXT.search(text) else text


def _good_name(name: str) -> bool:
    good = _good_names.get(name)
    if good is None:
        good = bool(_ATTRIBUTE_NAME.match(name)) and not name.lower().startswith(_RESERVED_PREFIXES)
        if len(_good_names) < 1024:
            _good_names[name] = good
    return good


def _fits(headers: Mapping[str, str], room: int) -> bool:
    if len(headers) > room:
        return False
    for name, value in headers.items():
        if not value or not _good_name(name) or _NOT_SQS_TEXT.search(value) or name in _MARKERS:
            return False
    return True


def _size(body: str, attributes: Mapping[str, Mapping[str, str]]) -> int:
    size = len(body) if body.isascii() else len(body.encode())
    for name, attribute in attributes.items():
        value = attribute["StringValue"]
        size += len(name) + len(_STRING) + (len(value) if value.isascii() else len(value.encode()))
    return size


def outgoing(body: bytes, headers: Mapping[str, str], delay: float, now: float) -> Outgoing:
    """``body`` and ``headers`` as an SQS message due ``delay`` seconds after ``now``."""
    markers: dict[str, str] = {}
    delay_seconds = 0
    if delay > MAX_DELAY:
        markers[DUE] = repr(now + delay)
        delay_seconds = MAX_DELAY
    elif delay > 0:
        delay_seconds = math.ceil(delay)
    text = sqs_text(body)
    if text is None:
        text = base64.b64encode(body).decode("ascii")
        markers[ENCODING] = BASE64
    if _fits(headers, MAX_ATTRIBUTES - len(markers)):
        values = {**headers, **markers}
    else:
        # pack() writes ASCII JSON, binary bodies as hex: always valid SQS text.
        text = pack(body, headers).decode("ascii")
        markers[ENCODING] = PACKED
        shown = {
            name: headers[name]
            for name in (Headers.TYPE, Headers.ID)
            if _fits({name: headers.get(name, "")}, 1)
        }
        values = {**shown, **markers}
    attributes = {
        name: {"DataType": _STRING, "StringValue": value} for name, value in values.items()
    }
    return Outgoing(text, attributes, _size(text, attributes), delay_seconds)


def _text(attribute: Mapping[str, Any]) -> str:
    """An attribute's value as text, whatever its data type."""
    value = attribute.get("StringValue")
    if value is None:
        binary = attribute.get("BinaryValue")
        if isinstance(binary, bytes | bytearray):
            return bytes(binary).decode("utf-8", "replace")
        return ""
    return str(value)


def incoming(body: str, attributes: Mapping[str, Mapping[str, Any]] | None) -> Incoming:
    """Undo :func:`outgoing`; raises :class:`MessageDecodingFailed` with the evidence."""
    headers: dict[str, str] = {}
    encoding: str | None = None
    due: float | None = None
    for name, attribute in (attributes or {}).items():
        value = _text(attribute)
        if name == ENCODING:
            encoding = value
        elif name == DUE:
            try:
                due = float(value)
            except ValueError:
                due = None
            if due is not None and not math.isfinite(due):
                due = None
        else:
            headers[name] = value
    raw = body.encode("utf-8", "surrogatepass")
    if encoding is None:
        return Incoming(raw, headers, due)
    if encoding == BASE64:
        try:
            return Incoming(base64.b64decode(raw, validate=True), headers, due)
        except (binascii.Error, ValueError):
            raise MessageDecodingFailed(
                f"the body is marked {ENCODING}: {BASE64} but is not base64", raw, headers
            ) from None
    if encoding == PACKED:
        try:
            packed_body, packed_headers = unpack(raw)
        except MessageDecodingFailed as error:
            raise MessageDecodingFailed(error.reason, raw, headers) from None
        return Incoming(packed_body, packed_headers, due)
    shown = encoding[:40] + ("..." if len(encoding) > 40 else "")
    raise MessageDecodingFailed(f"unknown {ENCODING} {shown!r}", raw, headers)
