"""``courier_bus``: the app's bus on memory, with assertions and ``drain()``.

::

    def test_signup_sends_a_welcome(client, courier_bus):
        client.post("/signup", data={"email": "ada@example.com"})
        courier_bus.assert_dispatched(SendEmail, to="ada@example.com")
        courier_bus.drain()                     # runs send_email, retries included
        assert outbox == ["ada@example.com"]

``drain()`` is a worker in the test's own thread: it receives what this
app handles, runs the consume stack (retries, dead letters, pipelines:
what a handler returns is dispatched and drained too) and acknowledges,
until nothing is left. Retry delays and dispatch delays are not waited
for. A message that failed for good raises :class:`HandlingFailed` at the
end, with the handler's own exception as its cause, so the test shows the
traceback of the bug rather than a silent dead letter.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from courier.bus import Bus
from courier.envelope import Envelope
from courier.errors import HandlerFailed
from courier.message import Event, Message
from courier.testing.assertions import describe, find_matches
from courier.testing.recording import RecordingTransport, TransportSwap
from courier.transports.base import Listable, Outcome, Received

__all__ = ["CourierTestBus", "DrainResult", "Failure", "HandlingFailed", "resolve_bus"]

M = TypeVar("M", bound=Message)

#: Messages one ``drain()`` handles at most: a handler that dispatches itself forever stops here.
DRAIN_LIMIT = 10_000


@dataclass(frozen=True)
class Failure:
    """One failed attempt at handling a message during ``drain()``."""

    #: The envelope as delivered (None when the bytes could not be decoded).
    envelope: Envelope | None
    #: What the handler raised (unwrapped from courier's ``HandlerFailed``).
    error: BaseException
    #: How the attempt was settled: retried, dead-lettered, rejected, ...
    outcome: Outcome
    transport: str

    def __str__(self) -> str:
        what = repr(self.envelope.message) if self.envelope is not None else "undecodable message"
        attempt = f" (attempt {self.envelope.attempt})" if self.envelope is not None else ""
        error = f"{type(self.error).__name__}: {self.error}"
        return f"{what}{attempt} on {self.transport!r}: {error} -> {self.outcome.value}"


@dataclass
class DrainResult:
    """What one ``drain()`` did."""

    #: Envelopes whose handler succeeded, in order.
    handled: list[Envelope] = field(default_factory=list)
    #: Attempts that failed and were retried (or given back).
    retried: list[Failure] = field(default_factory=list)
    #: Messages that failed for good (dead-lettered, rejected, or acknowledged anyway).
    failed: list[Failure] = field(default_factory=list)


class HandlingFailed(AssertionError):
    """``drain()`` met messages that failed for good; the first one's error is the cause."""

    def __init__(self, failures: list[Failure]) -> None:
        lines = "\n".join(f"  {failure}" for failure in failures)
        count = "1 message" if len(failures) == 1 else f"{len(failures)} messages"
        super().__init__(f"{count} failed for good during drain():\n{lines}")
        self.failures = failures


def _inner(error: BaseException) -> BaseException:
    if isinstance(error, HandlerFailed) and error.errors:
        return error.errors[0]
    return error


class CourierTestBus:
    """The app's bus with its transports swapped for memory; see the module docstring."""

    def __init__(self, bus: Bus, swap: TransportSwap) -> None:
        self.bus = bus
        self._swap = swap
        self.transports: dict[str, RecordingTransport] = dict(swap.stand_ins)

    @classmethod
    @contextmanager
    def swapped(cls, bus: Bus, *, serialize: bool = True) -> Iterator[CourierTestBus]:
        """``bus`` on memory inside the block, its own transports again after it."""
        swap = TransportSwap(bus, serialize=serialize)
        try:
            swap.apply()
            yield cls(bus, swap)
        finally:
            swap.restore()

    # -- dispatching -----------------------------------------------------------

    def dispatch(self, message: Message, **options: Any) -> Envelope:
        """``bus.dispatch``, for tests that dispatch themselves."""
        return self.bus.dispatch(message, **options)

    def transport(self, name: str) -> RecordingTransport:
        """The memory transport standing in for ``name``."""
        return self.transports[name]

    # -- what was dispatched ---------------------------------------------------

    def envelopes(self, message_type: type[Message] | None = None) -> list[Envelope]:
        """Envelopes dispatched to a transport so far, in order (of ``message_type`` only)."""
        found = self._swap.recorder.envelopes()
        if message_type is None:
            return found
        return [envelope for envelope in found if isinstance(envelope.message, message_type)]

    def dispatched(self, message_type: type[M] | None = None) -> list[Any]:
        """Messages dispatched to a transport so far, in order (of ``message_type`` only).

        Handled in the process (``sync://``, or not routed) is not dispatched
        to a transport, so not listed; a deferred dispatch (Django's
        ``on_commit``) is listed once it is sent.
        """
        return [envelope.message for envelope in self.envelopes(message_type)]

    def assert_dispatched(self, message_type: type[M], /, **fields: Any) -> M:
        """The first dispatched ``message_type`` whose fields equal ``fields``; else fail.

        The failure lists what was dispatched instead, and how each
        candidate differs.
        """
        __tracebackhide__ = True
        messages = self.dispatched(message_type)
        matches = find_matches(message_type, messages, fields)
        if not matches:
            raise AssertionError(
                describe(message_type, fields, messages, self.dispatched(), expected=True)
            )
        message: M = matches[0]
        return message

    def assert_not_dispatched(self, message_type: type[Message], /, **fields: Any) -> None:
        """Fail if a dispatched ``message_type`` has these field values (any, without fields)."""
        __tracebackhide__ = True
        messages = self.dispatched(message_type)
        matches = find_matches(message_type, messages, fields)
        if matches:
            raise AssertionError(
                describe(message_type, fields, matches, self.dispatched(), expected=False)
            )

    def clear(self) -> None:
        """Forget what was dispatched so far (queued messages stay queued)."""
        self._swap.recorder.clear()

    def failed(self) -> list[Envelope]:
        """What the failure transport keeps, with each message's error details."""
        name = self.bus.failure_transport
        store = self.transports.get(name) if name is not None else None
        return store.list() if isinstance(store, Listable) else []

    # -- handling ----------------------------------------------------------------

    def drain(self, *, raise_on_failure: bool = True, limit: int = DRAIN_LIMIT) -> DrainResult:
        """Handle what was dispatched, and what that dispatched, until nothing is left.

        Raises :class:`HandlingFailed` if a message failed for good (after
        its retries), unless ``raise_on_failure=False``; the result lists
        every attempt either way.
        """
        __tracebackhide__ = True
        result = DrainResult()
        count = 0
        busy = True
        while busy:
            busy = False
            # Again each round: a handler may have registered a type (and so a queue).
            for transport, queues in self._sources():
                for received in transport.receive(queues, max=100, timeout=0.0):
                    busy = True
                    count += 1
                    if count > limit:
                        raise RuntimeError(
                            f"drain() handled {limit} messages and there are still more: "
                            "does a handler dispatch in a loop?"
                        )
                    self._handle(transport, received, result)
        if result.failed and raise_on_failure:
            raise HandlingFailed(result.failed) from result.failed[0].error
        return result

    def _handle(
        self, transport: RecordingTransport, received: Received, result: DrainResult
    ) -> None:
        outcome = self.bus.consume(received)
        if outcome.needs_ack:
            transport.ack(received)
        if received.failure is None:
            if received.envelope is not None:
                result.handled.append(received.envelope)
            return
        failure = Failure(received.envelope, _inner(received.failure), outcome, transport.name)
        if outcome in (Outcome.RETRIED, Outcome.RELEASED):
            result.retried.append(failure)
        else:
            result.failed.append(failure)

    def _sources(self) -> list[tuple[RecordingTransport, list[str]]]:
        """Each swapped transport with the queues whose messages this app handles.

        Commands routed here for another service (no handler in this
        process) are left alone: they stay dispatched, not failed.
        """
        bus = self.bus
        sources = []
        for name, transport in self.transports.items():
            consumed = bus.consumed_queues(name)
            commands = set(bus.layout(name)[0])
            handled: list[str] = []
            for message_type in list(bus.registry):
                route = bus.router.route_for(message_type)
                if route is None or route.transport != name or issubclass(message_type, Event):
                    continue
                if bus.handlers.command(message_type) is not None:
                    handled.append(route.queue or transport.queue)
            handled += [queue for queue in consumed if queue not in commands]
            if handled:
                sources.append((transport, list(dict.fromkeys(handled))))
        return sources


def resolve_bus(app: Bus | str | None) -> Bus:
    """The bus named by ``courier_app``: itself, an import string, or the project's.

    Without one: ``app =`` of courier.toml (``[tool.courier]``,
    ``COURIER_APP``), else a Django project's bus when
    ``courier.contrib.django`` is installed and Django is set up (looked
    up, never imported: the plugin imports no framework). An import string
    is resolved as ``app =`` is (a factory is called); a bus without
    transports gets the configuration's.
    """
    if isinstance(app, Bus):
        return app
    from courier.cli.context import load_app
    from courier.config import build_bus, load_settings
    from courier.errors import ConfigurationError

    settings, file = load_settings()
    target = app or settings.app
    if target is None:
        django_bus = _django_project_bus()
        if django_bus is not None:
            return django_bus
        raise ConfigurationError(
            "which bus is the app's? set app = 'module:bus' in courier.toml, "
            "courier_app = module:bus in pytest's ini options, or override the courier_app fixture"
        )
    bus = load_app(target, file.parent if file is not None else Path.cwd())
    if not bus.transports:
        build_bus(settings, bus)
    return bus


def _django_project_bus() -> Bus | None:
    """The Django project's bus, if courier.contrib.django is installed in a set-up Django."""
    project = sys.modules.get("courier.contrib.django.project")
    registry = getattr(sys.modules.get("django.apps"), "apps", None)
    if project is None or registry is None or not registry.ready:
        return None
    if not registry.is_installed("courier.contrib.django"):
        return None
    bus: Bus = project.get_bus()
    return bus
