"""Messages a broker buried: its own dead letters, outside courier's failure store.

courier keeps a message that failed for good in the failure transport, with
its error. Some brokers keep one themselves as a backstop: ``reject`` puts it
there when no failure transport is configured, or when the store could not
take the record (too large for it); another program sharing the queue may put
messages there too. Those never reach the failure store, so ``courier failed``
would not show them and an operator would not know they are waiting.

:class:`HoldsBuried` is the small, optional capability that lets the CLI show
them next to the stored ones, put one back in its queue, or delete it, without
knowing the broker: a transport that has such a place implements these four
methods (beanstalkd's buried jobs do), every other transport is left alone.
Each buried message is named by a ``key`` of the broker's own (beanstalkd's
job id), which the CLI prefixes with ``buried:`` and the transport's name, so
it can never be taken for a failure-store id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from courier.envelope import Envelope

__all__ = ["BuriedListing", "BuriedMessage", "HoldsBuried"]


@dataclass(frozen=True)
class BuriedMessage:
    """One buried message, decoded where courier can read it."""

    #: The broker's name for it, unique within the transport; never contains ``:``.
    key: str
    queue: str
    #: The bytes exactly as the broker keeps them.
    body: bytes
    #: The message, if courier can decode it; else ``error`` says why not.
    envelope: Envelope | None
    error: str | None
    #: Why it is there, as far as the broker can tell (it keeps no reason).
    reason: str
    #: When it was sent (Unix time; beanstalkd knows it to the second). Brokers do
    #: not record when a message was buried.
    sent_at: float
    #: How often the broker handed it out, where it counts.
    deliveries: int | None = None


@dataclass(frozen=True)
class BuriedListing:
    """The buried messages of one queue, perhaps not all of them."""

    queue: str
    messages: list[BuriedMessage]
    #: How many the queue has buried, listed or not.
    total: int
    #: False when the broker could not be asked about every one (a scan limit).
    complete: bool = True


@runtime_checkable
class HoldsBuried(Protocol):
    """A transport with dead letters of its own that can be listed, put back and deleted."""

    def buried_messages(self, queue: str | None = None, *, limit: int = 100) -> BuriedListing:
        """Up to ``limit`` buried messages of ``queue`` (the default queue), oldest first."""
        ...

    def buried_message(self, key: str, queue: str | None = None) -> BuriedMessage | None:
        """The buried message ``key`` (in ``queue``, if given), or None."""
        ...

    def kick_buried(self, key: str, queue: str | None = None) -> bool:
        """Make the buried message ``key`` ready in its queue again, unchanged.

        Only that message: nothing else waiting (a delayed message above all)
        may be woken by it. False if ``key`` names no buried message (in
        ``queue``, if given).
        """
        ...

    def delete_buried(self, key: str, queue: str | None = None) -> bool:
        """Delete the buried message ``key``; False if there is no such buried message."""
        ...
