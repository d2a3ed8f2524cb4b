"""A topic's subscriptions, remembered by beanstalkd itself.

beanstalkd keeps tubes and jobs and nothing else, and a tube exists only
while something is in it or watches it. So courier keeps each topic's
subscriptions as one job in the tube ``courier-subscriptions.<topic>``,
put with the longest delay beanstalkd allows (about 136 years), which no
worker ever reserves; ``peek-delayed`` reads it. ``setup`` writes it;
``publish`` reads it, so a producer that does not import the subscribers'
handlers still reaches every subscription queue that a consumer's
``setup`` declared.

Records only grow (the union of every ``setup``), like SQLite's table.
``setup`` calls at once may leave several records for a moment, oldest
first (``peek-delayed`` shows the one put first). Each call merges the
leading record into what it wants, puts the union behind it, and retires
the one it merged (or its own older one), until its own newest record
leads or the leading one holds everything it wants. A call retires a
record only on a round after which it goes on, so it ends only when the
leading record holds all it ever read: none is lost, though a race may
leave redundant records behind the leading one.

Retiring is ``kick-job`` (the record becomes ready), and only then are
ready records reserved and deleted. beanstalkd 1.12 can answer a
``peek-*`` with another job's bytes when the job it found is deleted
before the answer is written; a record that readers may be peeking is
therefore never deleted, only moved out of the delayed state they peek.
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
_ROUNDS = 200


def registry_tube(topic: str) -> str:
    return check_tube(PREFIX + topic)


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


def _put(connection: Connection, tube: str, topic: str, names: set[str]) -> int:
    body = to_json({"topic": topic, "subscriptions": sorted(names)})
    return connection.put(tube, body, priority=0, delay=MAX_DELAY, ttr=1)


def read(connection: Connection, topic: str) -> list[str]:
    """The subscriptions recorded for ``topic`` (none if there is no record)."""
    first = connection.peek_first(registry_tube(topic), "delayed")
    return sorted(_parse(topic, first[1])) if first is not None else []


def record(connection: Connection, topic: str, subscriptions: Iterable[str]) -> None:
    """Add ``subscriptions`` to ``topic``'s record."""
    tube = registry_tube(topic)
    wanted = set(subscriptions)
    mine: list[int] = []
    try:
        for _ in range(_ROUNDS):
            first = connection.peek_first(tube, "delayed")
            if first is None:
                mine.append(_put(connection, tube, topic, wanted))
                continue
            if first[0] in mine:
                if first[0] == mine[-1]:
                    return  # our newest record leads, with everything we saw
                connection.kick_job(first[0])  # one of ours, superseded
                continue
            recorded = _parse(topic, first[1])
            if wanted <= recorded:
                # The leading record has it all. Ours, behind it, stay: a call
                # that retires a record goes on until the leading one has all
                # it saw; a call about to return retires nothing.
                return
            wanted |= recorded
            mine.append(_put(connection, tube, topic, wanted))
            connection.kick_job(first[0])
        logger.warning("the subscription record of topic %r is still being rewritten", topic)
    finally:
        connection.delete_ready(tube)
