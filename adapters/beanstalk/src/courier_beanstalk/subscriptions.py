"""A topic's subscriptions, remembered by beanstalkd itself.

beanstalkd keeps tubes and jobs and nothing else, and a tube exists only
while something is in it or watches it. So courier keeps each topic's
subscriptions as one job in the tube ``courier-subscriptions.<topic>``,
put with the longest delay beanstalkd allows (about 136 years), which no
worker ever reserves; ``peek-delayed`` reads it (``peek-ready`` too, in
case an operator kicked it). ``setup`` writes it; ``publish`` reads it, so
a producer that does not import the subscribers' handlers still reaches
every subscription queue that a consumer's ``setup`` declared.

Records only grow (the union of every ``setup``), like SQLite's table. Two
``setup`` calls at once may leave two records for a moment: each keeps
putting the union of what it saw behind the oldest and deleting the older
ones until its own newest record is the one ``peek-delayed`` shows.
A server without a binlog (``-b``) forgets the record on restart, as it
forgets every job; run ``courier setup`` again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic_core import from_json, to_json

from courier_beanstalk.connection import Connection
from courier_beanstalk.options import MAX_DELAY, check_tube

__all__ = ["PREFIX", "read", "record", "registry_tube"]

logger = logging.getLogger("courier.beanstalk")

#: Tubes named ``<PREFIX><topic>`` hold the subscription records.
PREFIX = "courier-subscriptions."

#: How many times ``record`` goes round when other ``setup`` calls interleave.
_ROUNDS = 20


def registry_tube(topic: str) -> str:
    return check_tube(PREFIX + topic)


def _first(connection: Connection, tube: str) -> tuple[int, bytes] | None:
    return connection.peek_first(tube, "delayed") or connection.peek_first(tube, "ready")


def _parse(topic: str, body: bytes) -> set[str]:
    try:
        data = from_json(body)
        names = data["subscriptions"]
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise TypeError("subscriptions")
    except (ValueError, TypeError, KeyError):
        logger.warning("the subscription record of topic %r is malformed; ignoring it", topic)
        return set()
    return set(names)


def read(connection: Connection, topic: str) -> list[str]:
    """The subscriptions recorded for ``topic`` (none if there is no record)."""
    first = _first(connection, registry_tube(topic))
    return sorted(_parse(topic, first[1])) if first is not None else []


def record(connection: Connection, topic: str, subscriptions: Iterable[str]) -> None:
    """Add ``subscriptions`` to ``topic``'s record."""
    tube = registry_tube(topic)
    wanted = set(subscriptions)
    mine: list[int] = []
    for _ in range(_ROUNDS):
        first = _first(connection, tube)
        if first is not None and mine and first[0] == mine[-1]:
            return  # our newest record leads, with everything we saw
        if first is not None and first[0] in mine:
            connection.delete_any(first[0])  # one of ours, superseded
            continue
        recorded = _parse(topic, first[1]) if first is not None else set()
        if first is not None and not mine and wanted <= recorded:
            return  # nothing to add
        wanted |= recorded
        body = to_json({"topic": topic, "subscriptions": sorted(wanted)})
        mine.append(connection.put(tube, body, priority=0, delay=MAX_DELAY, ttr=1))
        if first is not None:
            connection.delete_any(first[0])
    logger.warning("the subscription record of topic %r is still being rewritten", topic)
