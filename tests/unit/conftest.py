"""Fixtures shared by the unit tests: buses on ``memory://`` and fast workers.

Test modules cannot import each other (``--import-mode=importlib``), so
what several of them need lives here as fixtures. Message classes and
transport subclasses stay in the module that uses them: each module is
one concern and reads on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from courier.bus import Bus
from courier.middleware.retry import RetryStrategy
from courier.transports.memory import MemoryTransport
from courier.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from courier.events import WorkerEvent

#: Retries that come back at once, so a whole retry schedule runs in milliseconds.
IMMEDIATE_RETRY = RetryStrategy(max_retries=3, delay=0.0, jitter=0.0)


@pytest.fixture
def make_bus() -> Iterator[Callable[..., Bus]]:
    """A Bus factory whose buses are closed after the test.

    Retries are immediate unless ``retry=`` says otherwise, and the dead
    letters are left unconfigured (pass ``failure_transport=`` to name one).
    """
    buses: list[Bus] = []

    def make(**options: Any) -> Bus:
        options.setdefault("retry", IMMEDIATE_RETRY)
        bus = Bus(**options)
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        bus.close()


@pytest.fixture
def add_memory() -> Callable[..., MemoryTransport]:
    """Add a ``memory://`` transport to a bus: ``add_memory(bus, "jobs", cls=Spy)``.

    The transport shares the bus's serializer and, by default, sends every
    message through it (``serialize=True``), as a real broker would; its
    queue is named after the transport unless ``queue=`` says otherwise.
    """

    def add(
        bus: Bus,
        name: str,
        *,
        cls: type[MemoryTransport] = MemoryTransport,
        queue: str | None = None,
        serialize: bool = True,
        **options: Any,
    ) -> MemoryTransport:
        transport = cls(
            name=name,
            queue=queue or name,
            serializer=bus.serializer,
            serialize=serialize,
            **options,
        )
        bus.add_transport(name, transport)
        return transport

    return add


@pytest.fixture
def dead_letter_bus(
    make_bus: Callable[..., Bus], add_memory: Callable[..., MemoryTransport]
) -> Bus:
    """A bus with ``jobs`` (serializing) plus ``failed`` and ``invalid`` stores."""
    bus = make_bus(failure_transport="failed", invalid_transport="invalid")
    add_memory(bus, "jobs")
    add_memory(bus, "failed")
    add_memory(bus, "invalid")
    return bus


def worker_options(**options: Any) -> WorkerOptions:
    """Options for a worker that stops when its queues are empty and never dawdles."""
    options.setdefault("stop_when_idle", True)
    options.setdefault("sleep", 0.01)
    options.setdefault("reconnect_delay", 0.001)
    options.setdefault("reconnect_max_delay", 0.005)
    return WorkerOptions(**options)


@pytest.fixture
def run_worker() -> Callable[..., Worker]:
    """Build a fast worker, run it to its stop, and return it.

    ``run_worker(bus, ["jobs"], subscriptions=[...], listeners=[...], limit=3)``:
    keyword arguments other than ``subscriptions``, ``listeners`` and
    ``worker_id`` are :class:`WorkerOptions`; ``worker.stop_reason`` says
    why it stopped.
    """

    def run(
        bus: Bus,
        transports: Sequence[str],
        *,
        subscriptions: Sequence[str] = (),
        listeners: Sequence[Callable[[WorkerEvent], None]] = (),
        worker_id: str | None = None,
        **options: Any,
    ) -> Worker:
        worker = Worker(
            bus,
            transports,
            subscriptions=subscriptions,
            options=worker_options(**options),
            listeners=listeners,
            worker_id=worker_id,
        )
        reason = worker.run()
        assert worker.stop_reason is reason
        return worker

    return run


@pytest.fixture
def make_worker() -> Callable[..., Worker]:
    """A fast worker, built but not run (for tests that drive ``run`` themselves)."""

    def make(
        bus: Bus,
        transports: Sequence[str],
        *,
        subscriptions: Sequence[str] = (),
        listeners: Sequence[Callable[[WorkerEvent], None]] = (),
        **options: Any,
    ) -> Worker:
        return Worker(
            bus,
            transports,
            subscriptions=subscriptions,
            options=worker_options(**options),
            listeners=listeners,
        )

    return make
