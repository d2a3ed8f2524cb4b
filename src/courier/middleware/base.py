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
    A layer that also has ``wrap(next) -> Next`` (courier's own do) and does
    not override the ``handle`` defined beside it is bound with it instead:
    one frame per message rather than two.
    """
    call = terminal
    for layer in reversed(middleware):
        wrap = _wrapper(layer)
        call = wrap(call) if wrap is not None else _link(layer.handle, call)
    return call


def _wrapper(layer: Middleware) -> Callable[[Next], Next] | None:
    cls = type(layer)
    wrap = getattr(cls, "wrap", None)
    if wrap is None:
        return None
    # Only where ``handle`` and ``wrap`` come from the same class: a subclass
    # overriding ``handle`` alone is called through its ``handle``.
    for klass in cls.__mro__:
        if "handle" in klass.__dict__ or "wrap" in klass.__dict__:
            if "handle" in klass.__dict__ and "wrap" in klass.__dict__:
                bound: Callable[[Next], Next] = getattr(layer, "wrap")  # noqa: B009
                return bound
            return None
    return None


def _link(handle: Callable[[Envelope, Next], Envelope], following: Next) -> Next:
    def step(envelope: Envelope) -> Envelope:
        return handle(envelope, following)

    return step
