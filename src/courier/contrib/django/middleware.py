"""Django's transactions and database connections, seen from the bus.

On dispatch: inside ``transaction.atomic()`` the message waits for the
commit (``transaction.on_commit``) and is dropped on rollback, so a worker
never handles a message about a row that does not exist. On consume: stale
database connections are closed before and after each message, as Django
does around each request, so a long-running worker survives a database
restart and honours ``CONN_MAX_AGE``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import (  # type: ignore[import-untyped]
    DEFAULT_DB_ALIAS,
    connections,
    transaction,
)

from courier.envelope import Envelope
from courier.middleware.base import Next

if TYPE_CHECKING:
    from courier.bus import Bus

__all__ = ["DjangoMiddleware", "dispatch_policy"]


@dataclass(frozen=True)
class _Policy:
    on_commit: bool = True
    using: str | None = None
    #: Set while a deferred message is sent at commit: it must not wait again.
    committing: bool = False


_DEFAULT = _Policy()
_policy: ContextVar[_Policy | None] = ContextVar("courier_django_policy", default=None)


@contextmanager
def dispatch_policy(
    *, on_commit: bool = True, using: str | None = None, committing: bool = False
) -> Iterator[None]:
    """Dispatches in this block follow (or ignore) the transaction of ``using``."""
    token = _policy.set(_Policy(on_commit, using, committing))
    try:
        yield
    finally:
        _policy.reset(token)


def _open_transaction(using: str | None) -> str | None:
    """The database alias whose atomic block a dispatch should wait for, if any."""
    if using is not None:
        return using if transaction.get_connection(using).in_atomic_block else None
    if transaction.get_connection(DEFAULT_DB_ALIAS).in_atomic_block:
        return str(DEFAULT_DB_ALIAS)
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            return str(connection.alias)
    return None


def _close_old_connections() -> None:
    """Django's ``close_old_connections``, leaving alone any connection inside a transaction.

    A worker run inside a test's transaction (Django's ``TestCase``) must
    not close it; Django's test client skips the same step for requests.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()


class DjangoMiddleware:
    """Defers dispatches to the commit; closes stale connections around handlers."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        if envelope.received is not None:
            _close_old_connections()
            try:
                return next(envelope)
            finally:
                _close_old_connections()
        policy = _policy.get() or _DEFAULT
        if policy.committing or not policy.on_commit:
            return next(envelope)
        alias = _open_transaction(policy.using)
        if alias is None:
            return next(envelope)
        transaction.on_commit(lambda: self._send(envelope), using=alias)
        return envelope

    def _send(self, envelope: Envelope) -> None:
        """Dispatch ``envelope`` again, now that its transaction committed.

        Again through ``bus.dispatch`` rather than the rest of this stack:
        ``dispatch_many`` batches what its stack returns right away, so a
        batch member deferred past that point must find its own way. The
        id, options and conversation ids are the same; only ``created_at``
        is the commit's.
        """
        with dispatch_policy(committing=True):
            self.bus.dispatch(
                envelope.message,
                id=envelope.id,
                delay=envelope.delay,
                priority=envelope.priority,
                ttr=envelope.ttr,
                headers=envelope.headers or None,
                correlation_id=envelope.correlation_id,
            )
