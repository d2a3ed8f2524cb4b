"""courier's headers as STOMP headers, and back.

Part of the connection (:mod:`courier_stomp.connection`). STOMP has
headers, so courier's travel as STOMP headers, readable by any STOMP
client: ``content-type``, ``courier-type``, ``courier-id``,
``courier-created`` and the rest, and the application's own. stomp.py
escapes ``\\``, ``:``, newlines and carriage returns in values (STOMP 1.2).
What cannot travel as a header of its own travels JSON-packed in the one
header ``courier-headers``:

- a name the broker or STOMP reserves (``destination``, ``receipt``,
  ``persistent``, ``x-message-ttl``... see :mod:`courier_stomp.flavors`),
  which would change what the broker does or be dropped;
- a name STOMP cannot carry (``:``, ``\\``, control characters, non-ASCII,
  over 128 characters: RabbitMQ turns headers into AMQP table keys);
- a value with a NUL byte, which ends a frame.

On the way in, the broker's own headers (delivery counts, dead-lettering
history, the frame's bookkeeping) are taken out before decoding: they are
not courier's, and a foreign producer's headers are kept as they came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from courier_stomp.flavors import Flavor

__all__ = ["PACKED", "incoming", "outgoing"]

#: The header that carries, as a JSON object, what cannot be a header of its own.
PACKED = "courier-headers"

_SAFE_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")


def outgoing(headers: Mapping[str, str], flavor: Flavor) -> dict[str, str]:
    """STOMP headers for courier's ``headers`` (the serializer's output)."""
    native: dict[str, str] = {}
    packed: dict[str, str] = {}
    verdicts = flavor.native_names
    for name, value in headers.items():
        fits = verdicts.get(name)
        if fits is None:
            fits = _SAFE_NAME.fullmatch(name) is not None and not (
                flavor.is_reserved(name) or name == PACKED
            )
            if len(verdicts) < 4096:
                verdicts[name] = fits
        if fits and "\x00" not in value:
            native[name] = value
        else:
            packed[name] = value
    if packed:
        native[PACKED] = json.dumps(packed, separators=(",", ":"))
    return native


def incoming(frame_headers: Mapping[str, str], flavor: Flavor) -> tuple[dict[str, str], str | None]:
    """courier's headers of a delivery, and why they are malformed (None if they are not).

    The broker's headers are dropped; ``courier-headers`` is unpacked into
    the rest. A ``courier-headers`` that is not a JSON object of strings is
    reported, so the message goes to the invalid-message transport whole.
    """
    verdicts = flavor.broker_names
    headers: dict[str, str] = {}
    for name, value in frame_headers.items():
        theirs = verdicts.get(name)
        if theirs is None:
            theirs = flavor.is_reserved(name)
            if len(verdicts) < 4096:
                verdicts[name] = theirs
        if not theirs:
            headers[name] = value
    blob = headers.pop(PACKED, None)
    if blob is None:
        return headers, None
    try:
        packed = json.loads(blob)
    except ValueError:
        headers[PACKED] = blob
        return headers, f"the {PACKED} header is not JSON"
    if not isinstance(packed, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in packed.items()
    ):
        headers[PACKED] = blob
        return headers, f"the {PACKED} header is not an object of strings"
    headers.update(packed)
    return headers, None
