"""Key names: which Redis keys hold a queue, and why they share a hash tag.

A queue ``email`` is the stream ``courier:{email}``; its delayed messages
wait in the sorted set ``courier:delayed:{email}``, its rejected ones in the
stream ``courier:dead:{email}``, and the records ``keep`` wrote are indexed
by envelope id in the hash ``courier:kept:{email}``. The kind comes before
the brace, so no queue name can make one kind's key equal another's.

The hash tag (the part in braces, which alone decides the Redis Cluster
slot) is the queue name up to its first dot. So every key of one queue
lands in one slot, and so do all subscription queues of a topic: ``orders``
and its subscriptions ``orders.mail`` and ``orders.audit`` are
``courier:{orders}``, ``courier:{orders}.mail`` and ``courier:{orders}.audit``,
and one Lua script can write to all of them, in a cluster too. The cost:
queues named ``billing.a`` and ``billing.b`` share a slot (and a node), which
also lets one blocking XREADGROUP wait on both.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from courier.errors import ConfigurationError
from courier_redis.options import check_queue_name

__all__ = [
    "QueueKeys",
    "TopicKeys",
    "queue_from_stream",
    "queue_keys",
    "topic_from_subscriptions",
    "topic_keys",
]


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Every key of one queue; all in the slot of its hash tag."""

    queue: str
    stream: str
    delayed: str
    dead: str
    kept: str

    @property
    def tag(self) -> str:
        return self.stream[self.stream.index("{") + 1 : self.stream.index("}")]


def _tagged(name: str) -> str:
    """``{tag}rest``: the tag is ``name`` up to its first dot."""
    try:
        check_queue_name(name)
    except ValueError as error:
        raise ConfigurationError(f"queue {name[:80]!r}: {error}") from None
    tag, dot, rest = name.partition(".")
    return f"{{{tag}}}{dot}{rest}"


@lru_cache(maxsize=1024)
def queue_keys(prefix: str, queue: str) -> QueueKeys:
    tagged = _tagged(queue)
    return QueueKeys(
        queue=queue,
        stream=f"{prefix}{tagged}",
        delayed=f"{prefix}delayed:{tagged}",
        dead=f"{prefix}dead:{tagged}",
        kept=f"{prefix}kept:{tagged}",
    )


@dataclass(frozen=True, slots=True)
class TopicKeys:
    """A topic's recorded subscriptions, and the key prefixes of its subscription queues.

    The stream of subscription ``s`` is ``stream_prefix + s`` and its delay
    set ``delayed_prefix + s``: the same hash tag as the topic, so the publish
    script may build those names itself.
    """

    subscriptions: str
    stream_prefix: str
    delayed_prefix: str


def topic_keys(prefix: str, topic: str) -> TopicKeys:
    tagged = _tagged(topic)
    return TopicKeys(
        subscriptions=f"{prefix}subscriptions:{tagged}",
        stream_prefix=f"{prefix}{tagged}.",
        delayed_prefix=f"{prefix}delayed:{tagged}.",
    )


def _untagged(key: str, head: str) -> str | None:
    if not key.startswith(head + "{"):
        return None
    tagged = key[len(head) :]
    end = tagged.find("}")
    if end < 1:
        return None
    return tagged[1:end] + tagged[end + 1 :]


def queue_from_stream(prefix: str, key: str) -> str | None:
    """The queue a stream key belongs to, or None for any other key."""
    return _untagged(key, prefix)


def topic_from_subscriptions(prefix: str, key: str) -> str | None:
    """The topic a subscription-set key belongs to, or None for any other key."""
    return _untagged(key, prefix + "subscriptions:")
