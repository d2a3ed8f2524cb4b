"""Worker metrics: Prometheus (:mod:`.prometheus`) and StatsD (:mod:`.statsd`).

Both are worker listeners (:mod:`courier.events`) that count the same
things under the same labels, chosen here once:

- ``transport``: the configured transport's name (never its DSN, so never
  a password);
- ``type``: the message's wire name, or :data:`INVALID` for bytes that
  could not be decoded. Only types the app registered decode, so the set of
  label values is bounded by the app, never by what a producer sends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from courier.transports.base import Received

__all__ = ["INVALID", "message_labels"]

#: The ``type`` label of a message whose bytes could not be decoded.
INVALID = "invalid"


def message_labels(received: Received) -> tuple[str, str]:
    """``(type, transport)`` for one delivery."""
    envelope = received.envelope
    kind = envelope.type if envelope is not None and received.error is None else INVALID
    return kind, received.transport.name
