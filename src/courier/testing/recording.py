"""An app's transports swapped for ``memory://`` for one test, recording what was dispatched.

The app's own :class:`~courier.bus.Bus` object is kept (the app's code
holds it: ``from myapp import bus``); only its transports are replaced,
and put back after the test. Each stand-in is a memory transport that:

- serializes every message by default, so a test exercises the real codec
  (a field that cannot be encoded fails at dispatch, as on a broker);
- keeps the original's limits (delay and its maximum, priority, ttr, the
  size limit), so a dispatch the real broker would refuse is refused here;
- records each dispatched envelope once, in order across transports (an
  event once, not once per subscription), but not retries or dead letters;
- does not wait for delays: a delayed message or a retry is ready at once,
  with its ``delay`` still in the envelope, so a test never sleeps.

``sync://`` transports stay: they already handle messages in the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace

from courier.bus import Bus
from courier.envelope import Envelope
from courier.transports.base import Received, Transport
from courier.transports.memory import MemoryTransport

__all__ = ["Recorder", "RecordingTransport", "TransportSwap"]


class Recorder:
    """The envelopes dispatched to the swapped transports, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._envelopes: list[Envelope] = []

    def add(self, envelope: Envelope) -> None:
        with self._lock:
            self._envelopes.append(envelope)

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def clear(self) -> None:
        with self._lock:
            self._envelopes.clear()


class RecordingTransport(MemoryTransport):
    """``memory://`` standing in for ``original``; see the module docstring."""

    def __init__(
        self,
        original: Transport,
        *,
        serialize: bool = True,
        recorder: Recorder | None = None,
    ) -> None:
        limits = original.capabilities
        super().__init__(
            name=original.name,
            queue=original.queue,
            serializer=original.serializer,
            serialize=serialize,
            max_message_size=limits.max_message_size,
        )
        self.capabilities = replace(
            self.capabilities,
            delay=limits.delay,
            max_delay=limits.max_delay,
            priority=limits.priority,
            ttr=limits.ttr,
        )
        self.original = original
        self.recorder = recorder
        self._publishing = threading.local()

    def _record(self, envelope: Envelope) -> None:
        if self.recorder is not None and not getattr(self._publishing, "active", False):
            self.recorder.add(envelope)

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        self._record(envelope)
        super().send(envelope.with_(delay=0.0) if envelope.delay else envelope, queue)
        return envelope

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        self._record(envelope)
        self._publishing.active = True
        try:
            super().publish(envelope, topic, subscriptions)
        finally:
            self._publishing.active = False

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        super().retry(received, envelope, 0.0)

    def __repr__(self) -> str:
        return f"<RecordingTransport {self.name!r} standing in for {type(self.original).__name__}>"


class TransportSwap:
    """Replaces every transport of ``bus`` but ``sync://`` with a :class:`RecordingTransport`.

    The failure and invalid-message stores are swapped too, but what they
    keep is not recorded as dispatched. :meth:`restore` puts the originals
    back, untouched (never closed).
    """

    def __init__(self, bus: Bus, *, serialize: bool = True) -> None:
        self.bus = bus
        self.serialize = serialize
        self.recorder = Recorder()
        self.replaced: dict[str, Transport] = {}
        self.stand_ins: dict[str, RecordingTransport] = {}

    def apply(self) -> dict[str, RecordingTransport]:
        stores = {self.bus.failure_transport, self.bus.invalid_transport}
        for name, original in self.bus.transports.items():
            if original.capabilities.in_process:
                continue
            stand_in = RecordingTransport(
                original,
                serialize=self.serialize,
                recorder=None if name in stores else self.recorder,
            )
            self.replaced[name] = _replace_transport(self.bus, name, stand_in)
            self.stand_ins[name] = stand_in
        return dict(self.stand_ins)

    def restore(self) -> None:
        for name, original in self.replaced.items():
            _replace_transport(self.bus, name, original)
            self.stand_ins[name].close()
        self.replaced.clear()


def _replace_transport(bus: Bus, name: str, transport: Transport) -> Transport:
    """Put ``transport`` in ``bus`` under ``name``; return the one it replaces.

    The bus has no public verb for this (``add_transport`` refuses a name
    twice), so this reaches into it, in this one place: the transports by
    name, and the per-type senders that captured the old transport.
    """
    transports = bus._transports
    previous = transports[name]
    transport.name = name
    transports[name] = transport
    bus._senders.clear()
    return previous
