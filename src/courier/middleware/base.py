"""The middleware protocol: one method, composed like an onion.

::

    class Timing:
        def handle(self, envelope: Envelope, next: Next) -> Envelope:
            started = time.perf_counter()
            try:
                return next(envelope)
            finally:
                metrics.observe(envelope.type, time.perf_counter() - started)

The same middleware runs when a message is dispatched and when it is
consumed; ``envelope.received`` is set only when consuming.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from courier.envelope import Envelope

__all__ = ["Middleware", "Next", "compose"]

Next = Callable[[Envelope], Envelope]


@runtime_checkable
class Middleware(Protocol):
    """Do something around the rest of the stack; call ``next`` to go on."""

    def handle(self, envelope: Envelope, next: Next) -> Envelope: ...


def compose(middleware: Sequence[Middleware], terminal: Next) -> Next:
    """One callable running ``middleware`` in order, ending at ``terminal``.

    Built once per stack, not per message: a layer costs one extra call.
    """
    call = terminal
    for layer in reversed(middleware):
        call = _link(layer.handle, call)
    return call


def _link(handle: Callable[[Envelope, Next], Envelope], following: Next) -> Next:
    def step(envelope: Envelope) -> Envelope:
        return handle(envelope, following)

    return step
