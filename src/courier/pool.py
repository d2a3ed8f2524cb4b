"""A pool of worker processes: ``courier consume --processes N``.

One worker handles one message at a time, so concurrency comes from
processes. The pool is the supervisor a small deployment would otherwise
need: it starts N copies of the same ``courier consume`` command, each
with a stable id (``<base>.<n>``, so logs and heartbeats name the same
worker across restarts), and keeps them running:

- a child that exits for any reason the pool did not ask for is started
  again: an exit 0 (it reached ``--limit``, ``--time-limit`` or
  ``--memory-limit``, which is how limits recycle workers) at once, a
  failure after an exponential backoff for its slot;
- a slot that fails ``crash_limit`` times within ``crash_window`` seconds
  is a crash loop (bad configuration, an app that no longer imports, a
  broker that refuses us): restarting it forever would only fill the logs,
  so the whole pool stops and exits with :data:`CRASH_LOOP`;
- ``--time-limit`` and ``--memory-limit`` get a little jitter per child and
  per start, so children started together do not all recycle together;
- SIGTERM, SIGINT and SIGQUIT are forwarded to every child, which finishes
  the message in hand; a second signal is forwarded again, so the children
  stop at once, as a single worker does. ``should_stop`` (polled about once
  a second) stops the pool the same graceful way.

Children run in process groups of their own, so a Ctrl-C on a terminal
reaches them once, through the pool, not twice (which would mean "stop at
once"); on Linux each child also gets SIGTERM if the pool dies without
stopping them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from courier.stop_signals import STOP_SIGNALS

__all__ = [
    "CRASH_LOOP",
    "INTERRUPTED",
    "OK",
    "Pool",
    "PoolOptions",
    "describe_exit",
    "jittered_memory_limit",
    "jittered_time_limit",
]

#: The pool stopped as asked (a signal, ``should_stop``) or every child finished.
OK = 0
#: One slot failed ``crash_limit`` times within ``crash_window`` seconds.
CRASH_LOOP = 7
#: A second stop signal: the children were told to stop at once.
INTERRUPTED = 130

#: What a child's exit code means, for the pool's log lines.
_EXIT_MEANINGS = {
    0: "stopped on a limit",
    1: "crashed",
    2: "bad usage or configuration",
    3: "failure limit reached",
    4: "something named does not exist",
    5: "broker unreachable",
    130: "stopped at once",
}


def describe_exit(code: int) -> str:
    """``exit 3 (failure limit reached)``, ``killed by SIGKILL``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    meaning = _EXIT_MEANINGS.get(code)
    return f"exit {code} ({meaning})" if meaning else f"exit {code}"


def jittered_time_limit(seconds: float, jitter: float) -> float:
    """``seconds`` ± ``jitter`` (a fraction): children started together recycle apart."""
    return seconds * random.uniform(1 - jitter, 1 + jitter)


def jittered_memory_limit(mib: float, jitter: float) -> float:
    """Up to ``jitter`` below ``mib``, never above: the operator's limit stays a ceiling."""
    return mib * random.uniform(1 - jitter, 1)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How many children, what they are called, and how the pool treats their exits."""

    processes: int
    #: Children are ``<base_id>.1`` ... ``<base_id>.N``.
    base_id: str
    time_limit: float | None = None
    memory_limit: float | None = None
    #: Fraction of jitter on the limits (0.1: time ±10%, memory up to 10% lower).
    jitter: float = 0.1
    #: Failures of one slot within ``crash_window`` seconds that stop the pool.
    crash_limit: int = 5
    crash_window: float = 60.0
    #: First restart delay after a failure; doubles with each recent failure.
    backoff: float = 0.5
    max_backoff: float = 30.0
    #: Start a child again after an exit 0. False for ``--stop-when-empty``
    #: and ``--stop-when-idle``: the pool ends when every child has drained.
    restart_clean_exits: bool = True
    #: How often children are polled, and ``should_stop`` (at most once a second).
    tick: float = 0.1
    stop_check_interval: float = 1.0


@dataclass(eq=False)
class _Slot:
    number: int
    worker_id: str
    process: subprocess.Popen[bytes] | None = None
    #: When the slot's failures happened (monotonic), the recent ones only.
    failures: deque[float] = field(default_factory=deque)
    #: When to start the next child; None while one runs or once the slot is done.
    start_at: float | None = 0.0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Pool:
    """Runs ``command`` (a ``courier consume`` line without ``--id``) in N slots.

    ``run()`` blocks until the pool stops and returns its exit code.
    ``on_exit(pid)`` is called for every child that ended (the metrics
    endpoint forgets its live gauges); ``say(line)`` receives the pool's
    own lines, each naming the pool's pid and the slot and pid it is about.
    """

    def __init__(
        self,
        command: Sequence[str],
        options: PoolOptions,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_exit: Callable[[int], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if options.processes < 1:
            raise ValueError("a pool needs at least one process")
        self.command = list(command)
        self.options = options
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.should_stop = should_stop
        self.on_exit = on_exit
        self.say = say or _to_stderr
        #: Starts every line the pool prints: ``courier pool[<pid>]``, one pool among others.
        self.name = f"courier pool[{os.getpid()}]"
        self.slots = [
            _Slot(number, f"{options.base_id}.{number}")
            for number in range(1, options.processes + 1)
        ]
        #: Why the pool is stopping ("signal", "requested", "crash loop"), None while running.
        self.stopping: str | None = None
        self.exit_code = OK
        self._signals: list[int] = []
        self._forwarded = 0
        self._next_stop_check = 0.0
        self._previous: dict[int, object] = {}

    # -- public ----------------------------------------------------------------

    def run(self) -> int:
        """Start the children, keep them running until told to stop; the exit code."""
        self._install_signals()
        try:
            self.say(
                f"{self.name}: {len(self.slots)} processes as "
                f"{self.slots[0].worker_id} ... {self.slots[-1].worker_id}"
            )
            while True:
                now = time.monotonic()
                self._take_signals()
                self._check_should_stop(now)
                self._reap(now)
                if self.stopping is None:
                    self._start_due(now)
                if not self._running() and (self.stopping is not None or self._all_done()):
                    break
                time.sleep(self.options.tick)
        finally:
            self._restore_signals()
            self._kill_leftovers()
        self.say(f"{self.name}: stopped ({self.stopping or 'every child finished'})")
        return self.exit_code

    def child_command(self, slot: _Slot) -> list[str]:
        """The slot's command line: its id, and its own jittered limits."""
        options = self.options
        args = [*self.command, "--id", slot.worker_id]
        if options.time_limit is not None:
            seconds = jittered_time_limit(options.time_limit, options.jitter)
            args += ["--time-limit", f"{seconds:.3f}"]
        if options.memory_limit is not None:
            mib = jittered_memory_limit(options.memory_limit, options.jitter)
            args += ["--memory-limit", f"{mib:.1f}"]
        return args

    def stop(self, why: str = "requested") -> None:
        """Stop every child after its message in hand; none is started again."""
        if self.stopping is not None:
            return
        self.stopping = why
        # The children's first stop signal: a signal to the pool now is their second.
        self._forwarded += 1
        self._send_all(signal.SIGTERM)

    # -- children --------------------------------------------------------------

    def _start_due(self, now: float) -> None:
        for slot in self.slots:
            if slot.process is None and slot.start_at is not None and slot.start_at <= now:
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        slot.process = subprocess.Popen(  # noqa: S603 - our own courier command
            self.child_command(slot),
            env=self.env,
            cwd=self.cwd,
            process_group=0,
            preexec_fn=_die_with_parent,
        )
        slot.start_at = None
        self.say(f"{self.name}: slot {slot.number} pid {slot.pid}: started as {slot.worker_id}")

    def _reap(self, now: float) -> None:
        for slot in self.slots:
            process = slot.process
            if process is None:
                continue
            code = process.poll()
            if code is None:
                continue
            slot.process = None
            if self.on_exit is not None:
                self.on_exit(process.pid)
            self._ended(slot, process.pid, code, now)

    def _ended(self, slot: _Slot, pid: int, code: int, now: float) -> None:
        where = f"{self.name}: slot {slot.number} pid {pid}"
        if self.stopping is not None:
            self.say(f"{where}: stopped ({'exit 0' if code == 0 else describe_exit(code)})")
            return
        if code == 0:
            # A clean exit may be a child obeying `courier stop-workers`: ask now,
            # before replacing it, rather than at the next periodic check.
            self._next_stop_check = 0.0
            self._check_should_stop(now)
            if self.stopping is not None:
                self.say(f"{where}: stopped (exit 0)")
                return
            if self.options.restart_clean_exits:
                self.say(f"{where}: {describe_exit(code)}, starting a fresh one")
                slot.start_at = now
            else:
                self.say(f"{where}: finished, {describe_exit(code)}")
            return
        window = self.options.crash_window
        slot.failures.append(now)
        while slot.failures and slot.failures[0] < now - window:
            slot.failures.popleft()
        recent = len(slot.failures)
        if recent >= self.options.crash_limit:
            self.say(
                f"{where}: {describe_exit(code)}; slot {slot.number} ({slot.worker_id}) failed "
                f"{recent} times in {window:g}s: a crash loop, stopping the pool "
                f"(look at the child's output above)"
            )
            self.exit_code = CRASH_LOOP
            self.stop("crash loop")
            return
        delay = min(self.options.max_backoff, self.options.backoff * 2 ** (recent - 1))
        self.say(f"{where}: {describe_exit(code)}, restarting in {delay:.1f}s")
        slot.start_at = now + delay

    def _running(self) -> bool:
        return any(slot.process is not None for slot in self.slots)

    def _all_done(self) -> bool:
        return all(slot.start_at is None for slot in self.slots)

    def _send_all(self, signum: int) -> None:
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signum)

    def _kill_leftovers(self) -> None:
        """Only when ``run`` is left by an exception: no child outlives its pool."""
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()

    # -- stopping --------------------------------------------------------------

    def _check_should_stop(self, now: float) -> None:
        if self.should_stop is None or self.stopping is not None:
            return
        if now < self._next_stop_check:
            return
        self._next_stop_check = now + self.options.stop_check_interval
        try:
            asked = self.should_stop()
        except Exception as error:  # a status store that cannot answer must not stop us
            self.say(f"{self.name}: could not check for a stop request ({error})")
            return
        if asked:
            self.say(f"{self.name}: a stop was requested; stopping every child gracefully")
            self.stop("requested")

    def _take_signals(self) -> None:
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            self._forwarded += 1
            if self._forwarded == 1:
                self.say(f"{self.name}: {name}: stopping every child after its message in hand")
                self.stopping = self.stopping or "signal"
            else:
                self.say(f"{self.name}: {name} again: stopping every child at once")
                self.exit_code = INTERRUPTED
            self._send_all(signum)

    def _install_signals(self) -> None:
        if not _in_main_thread():
            return
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


#: ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, loaded before any fork (Linux only).
_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None = None
if sys.platform == "linux":
    _libc_name = ctypes.util.find_library("c")
    if _libc_name is not None:
        _prctl = ctypes.CDLL(_libc_name, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the pool dies (a SIGKILLed pool leaves no orphan)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
