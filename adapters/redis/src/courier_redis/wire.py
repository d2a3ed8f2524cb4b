"""A message as a stream entry, and as a member of a delay set.

A stream entry is a flat list of field/value pairs. courier writes the body
under the field ``body`` and each header as a field of its own::

    XADD courier:{email} * body {"to":"a@b.c"} content-type application/json
        courier-type email.send courier-id 3f2a... courier-created 1717171717.5

so ``XRANGE`` shows a readable message and a foreign producer can write one
with any client. Field names and header values are text; the body stays
bytes end to end. A header named ``body`` cannot exist on Redis: ``send``
refuses it.

A delayed message waits in a sorted set scored by its due time. The member
is the entry's fields, length-prefixed (``<len>:<bytes>`` each, after a
random nonce that keeps two equal messages apart), so the Lua script that
moves it to the stream can split it back without a JSON decoder and
binary bodies survive.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain

from courier.serializer import Headers

__all__ = ["BODY", "entry_fields", "fields_of_member", "member", "split_fields"]

#: The field that holds the body.
BODY = "body"
_BODY = b"body"
_NONCE = 16
_CONTENT_TYPE, _TYPE, _ID, _CREATED = (
    Headers.CONTENT_TYPE,
    Headers.TYPE,
    Headers.ID,
    Headers.CREATED,
)
#: The field names of the usual entry, in the order the serializer writes them.
_USUAL = [_BODY, *(name.encode() for name in (_CONTENT_TYPE, _TYPE, _ID, _CREATED))]
#: Field names seen, decoded once (the same few names come on every entry).
_NAMES: dict[bytes, str] = {}
_KNOWN_NAMES = 256


def entry_fields(body: bytes, headers: Mapping[str, str]) -> list[bytes | str]:
    """The XADD field/value list of a message (body first)."""
    return [BODY, body, *chain.from_iterable(headers.items())]


def split_fields(
    fields: Mapping[bytes, bytes] | Sequence[bytes] | None,
) -> tuple[bytes | None, dict[str, str]]:
    """``(body, headers)`` of an entry as Redis returns it; body None if missing.

    ``fields`` is redis-py's dict, or the flat list a script or a raw reply
    holds. Names and values other than the body are text; bytes that are not
    UTF-8 are replaced, so they fail as an unknown type, not as a crash.
    """
    if fields is None:
        return None, {}
    if not isinstance(fields, Mapping) and fields[0::2] == _USUAL:
        # What courier writes for a first attempt without extra headers.
        try:
            return fields[1], {
                _CONTENT_TYPE: fields[3].decode(),
                _TYPE: fields[5].decode(),
                _ID: fields[7].decode(),
                _CREATED: fields[9].decode(),
            }
        except UnicodeDecodeError:
            pass  # a foreign producer's bytes: the general way below
    if isinstance(fields, Mapping):
        names: Iterable[bytes] = fields.keys()
        values: Iterable[bytes] = fields.values()
    else:
        names, values = fields[0::2], fields[1::2]
    body: bytes | None = None
    headers: dict[str, str] = {}
    known = _NAMES
    for name, value in zip(names, values, strict=False):
        if name == _BODY:
            body = value
            continue
        text = known.get(name)
        if text is None:
            text = name.decode("utf-8", "replace")
            if len(known) < _KNOWN_NAMES:
                known[name] = text
        headers[text] = value.decode("utf-8", "replace")
    return body, headers


def member(fields: Sequence[bytes | str]) -> bytes:
    """A delay-set member holding ``fields``; unique even for equal messages."""
    parts = [os.urandom(_NONCE // 2).hex().encode()]
    for field in fields:
        data = field.encode() if isinstance(field, str) else field
        parts.append(b"%d:" % len(data))
        parts.append(data)
    return b"".join(parts)


def fields_of_member(data: bytes) -> list[bytes] | None:
    """Undo :func:`member`; None if ``data`` is not one."""
    fields: list[bytes] = []
    position = _NONCE
    end = len(data)
    if end < _NONCE:
        return None
    while position < end:
        colon = data.find(b":", position)
        if colon < 0:
            return None
        try:
            length = int(data[position:colon])
        except ValueError:
            return None
        start = colon + 1
        if length < 0 or start + length > end:
            return None
        fields.append(data[start : start + length])
        position = start + length
    return fields if len(fields) % 2 == 0 else None
