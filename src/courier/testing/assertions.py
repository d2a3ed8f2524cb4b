"""Matching dispatched messages against expected fields, and saying how they differ.

A failed ``assert_dispatched`` should answer the next question without a
debugger: what *was* dispatched, and which field of the nearest candidate
was different::

    no SendEmail with to='ada@example.com' was dispatched
      dispatched SendEmail (1):
        SendEmail(to='bob@example.com', subject='Welcome') -- to='bob@example.com'
      dispatched in all: SendEmail x1, UserRegistered x1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from courier.message import Message

__all__ = ["describe", "find_matches"]

_MISSING = object()


def find_matches(
    message_type: type[Message], messages: Sequence[Any], fields: Mapping[str, Any]
) -> list[Any]:
    """The messages whose ``fields`` all equal the given values."""
    known = message_type.model_fields
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise TypeError(
            f"{message_type.__name__} has no field {', '.join(map(repr, unknown))} "
            f"(its fields: {', '.join(known) or 'none'})"
        )
    return [
        message
        for message in messages
        if all(getattr(message, key, _MISSING) == value for key, value in fields.items())
    ]


def _wanted(message_type: type[Message], fields: Mapping[str, Any]) -> str:
    name = message_type.__name__
    if not fields:
        return name
    return f"{name} with " + ", ".join(f"{key}={value!r}" for key, value in fields.items())


def _differences(message: Any, fields: Mapping[str, Any]) -> str:
    differing = [
        f"{key}={getattr(message, key, _MISSING)!r}"
        for key, value in fields.items()
        if getattr(message, key, _MISSING) != value
    ]
    return f" -- {', '.join(differing)}" if differing else ""


def _census(messages: Sequence[Any]) -> str:
    if not messages:
        return "nothing"
    counts = Counter(type(message).__name__ for message in messages)
    return ", ".join(f"{name} x{count}" for name, count in counts.items())


def describe(
    message_type: type[Message],
    fields: Mapping[str, Any],
    candidates: Sequence[Any],
    everything: Sequence[Any],
    *,
    expected: bool,
) -> str:
    """The failure message of ``assert_dispatched`` (``expected``) or ``assert_not_dispatched``."""
    wanted = _wanted(message_type, fields)
    name = message_type.__name__
    if expected:
        lines = [f"no {wanted} was dispatched"]
        if candidates:
            lines.append(f"  dispatched {name} ({len(candidates)}):")
            lines += [f"    {message!r}{_differences(message, fields)}" for message in candidates]
        lines.append(f"  dispatched in all: {_census(everything)}")
    else:
        count = "once" if len(candidates) == 1 else f"{len(candidates)} times"
        lines = [f"{wanted} was dispatched {count}, expected never:"]
        lines += [f"    {message!r}" for message in candidates]
    return "\n".join(lines)
