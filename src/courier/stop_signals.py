"""SIGTERM, SIGINT and SIGQUIT as a worker answers them: the first one politely, the second now.

The first signal asks the worker to stop after the message in hand (it is
finished and acknowledged, what was prefetched goes back). A person at a
terminal who presses Ctrl-C during a long handler must also be able to stop
*now*: the second signal raises :class:`StopNow` inside whatever is running,
the handler included. The worker gives that message back to the broker
undamaged (redelivered, never dead-lettered, and no poison death, since the
handler ended by an exception, not by the process dying) and exits.

Signal handlers only set flags and raise; the one thing they print, a line
saying what the next press does, is written with ``os.write``, which is safe
wherever the main thread was interrupted.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

__all__ = ["STOP_SIGNALS", "StopNow", "StopSignals"]

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGQUIT") if hasattr(signal, name)
)


class StopNow(KeyboardInterrupt):
    """The second stop signal: stop now, whatever runs.

    A KeyboardInterrupt, so no ``except Exception`` in a handler or a
    middleware swallows it.
    """


class StopSignals:
    """Installs the handlers for one run of a worker and restores the old ones."""

    def __init__(self, on_first: Callable[[int], None]) -> None:
        self._on_first = on_first
        self._received = 0
        self._previous: dict[int, object] = {}
        #: Whether a second signal asked to stop now.
        self.stopped_now = False

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may handle signals; stop() still works
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._received += 1
        if self._received == 1:
            self._on_first(signum)
            return
        self.stopped_now = True
        raise StopNow(f"signal {signal.Signals(signum).name} again: stopping now")
