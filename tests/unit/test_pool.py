"""The pool's supervising, with small Python children instead of workers.

Each child is ``python -c SCRIPT`` and receives what the pool appends
(``--id <base>.<n>`` and the jittered limits) as its arguments; it writes
what it saw to a file in ``tmp_path``, so the tests read the children's
side, not the pool's own account of it.
"""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING

import pytest

from courier.cli import exit_codes
from courier.pool import (
    CRASH_LOOP,
    INTERRUPTED,
    OK,
    Pool,
    PoolOptions,
    describe_exit,
    jittered_memory_limit,
    jittered_time_limit,
)
from courier.testing.waiting import wait_for

if TYPE_CHECKING:
    from pathlib import Path

#: A child that records its start, then waits for signals: the first is
#: written down and, with a second within 5 seconds, it exits 130; else 0.
PATIENT = """
import os, signal, sys, time
from pathlib import Path
here = Path(sys.argv[1])
worker_id = sys.argv[sys.argv.index("--id") + 1]
signals = []
signal.signal(signal.SIGTERM, lambda number, frame: signals.append(number))
with (here / "starts").open("a") as starts:
    starts.write(f"{worker_id} {os.getpid()} {' '.join(sys.argv[2:])}\\n")
while not signals:
    time.sleep(0.01)
deadline = time.monotonic() + float(sys.argv[2])
while len(signals) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
with (here / "signals").open("a") as seen:
    seen.write(f"{worker_id} {len(signals)}\\n")
sys.exit(130 if len(signals) > 1 else 0)
"""


def patient(tmp_path: Path, linger: float = 0.2) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(PATIENT), str(tmp_path), str(linger)]


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_pool_exit_codes_are_the_cli_s() -> None:
    assert (OK, CRASH_LOOP, INTERRUPTED) == (
        exit_codes.OK,
        exit_codes.CRASH_LOOP,
        exit_codes.INTERRUPTED,
    )


def test_jitter_stays_within_its_bounds() -> None:
    times = [jittered_time_limit(100.0, 0.1) for _ in range(500)]
    memory = [jittered_memory_limit(200.0, 0.1) for _ in range(500)]
    assert 90.0 <= min(times) < 95.0
    assert 105.0 < max(times) <= 110.0
    assert min(memory) >= 180.0
    assert max(memory) <= 200.0
    assert len(set(times)) > 400  # children started together recycle apart


def test_each_slot_has_a_stable_id_and_its_own_limits(tmp_path: Path) -> None:
    options = PoolOptions(2, "box", time_limit=60.0, memory_limit=100.0)
    pool = Pool(["courier", "consume", "jobs"], options)
    first, second = (pool.child_command(slot) for slot in pool.slots)
    assert first[:5] == ["courier", "consume", "jobs", "--id", "box.1"]
    assert second[3:5] == ["--id", "box.2"]
    time_limits = {float(command[command.index("--time-limit") + 1]) for command in (first, second)}
    assert all(54.0 <= limit <= 66.0 for limit in time_limits)
    assert float(first[first.index("--memory-limit") + 1]) <= 100.0


def test_a_clean_exit_is_replaced_at_once_under_the_same_id(tmp_path: Path) -> None:
    """A child that stopped on a limit (exit 0) is how limits recycle workers."""
    script = f"import sys; open({str(tmp_path / 'starts')!r}, 'a').write(sys.argv[-1] + '\\n')"
    command = [sys.executable, "-c", script]
    said: list[str] = []
    pool = Pool(
        command,
        PoolOptions(1, "w", stop_check_interval=0.02, tick=0.02),
        should_stop=lambda: len(lines(tmp_path / "starts")) >= 3,
        say=said.append,
    )
    assert pool.run() == OK
    assert lines(tmp_path / "starts")[:3] == ["w.1", "w.1", "w.1"]
    assert any("exit 0 (stopped on a limit), starting a fresh one" in line for line in said)


def test_without_restarting_clean_exits_the_pool_ends_when_every_child_has(
    tmp_path: Path,
) -> None:
    """--stop-when-empty: a child that drained its queues is done, not replaced."""
    script = f"import sys; open({str(tmp_path / 'starts')!r}, 'a').write(sys.argv[-1] + '\\n')"
    said: list[str] = []
    pool = Pool(
        [sys.executable, "-c", script],
        PoolOptions(2, "w", restart_clean_exits=False, tick=0.02),
        say=said.append,
    )
    assert pool.run() == OK
    assert sorted(lines(tmp_path / "starts")) == ["w.1", "w.2"]
    assert said[-1] == f"courier pool[{os.getpid()}]: stopped (every child finished)"


def test_a_crash_loop_stops_the_pool_with_a_clear_message(tmp_path: Path) -> None:
    said: list[str] = []
    pool = Pool(
        [sys.executable, "-c", "import sys; sys.exit(2)"],
        PoolOptions(1, "w", crash_limit=3, crash_window=30.0, backoff=0.01, tick=0.02),
        say=said.append,
    )
    started = time.monotonic()
    assert pool.run() == CRASH_LOOP
    assert time.monotonic() - started < 10
    restarts = [line for line in said if "restarting in" in line]
    assert len(restarts) == 2
    assert "exit 2 (bad usage or configuration)" in restarts[0]
    assert any("failed 3 times in 30s: a crash loop, stopping the pool" in line for line in said)


def test_backoff_doubles_for_each_recent_failure(tmp_path: Path) -> None:
    said: list[str] = []
    pool = Pool(
        [sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"],
        PoolOptions(1, "w", crash_limit=4, backoff=0.05, tick=0.01),
        say=said.append,
    )
    assert pool.run() == CRASH_LOOP
    delays = [line.rsplit("restarting in ", 1)[1] for line in said if "restarting in" in line]
    assert delays == ["0.1s", "0.1s", "0.2s"]  # 0.05, 0.1, 0.2, shown to a tenth
    assert all("killed by SIGKILL" in line for line in said if "restarting in" in line)


def test_should_stop_stops_every_child_gracefully_and_restarts_none(tmp_path: Path) -> None:
    flag = tmp_path / "stop-now"
    pool = Pool(
        patient(tmp_path),
        PoolOptions(3, "w", tick=0.02),
        should_stop=flag.exists,
        say=lambda line: None,
    )
    waiter = threading.Thread(
        target=lambda: wait_for(lambda: len(lines(tmp_path / "starts")) == 3, 10)
    )
    waiter.start()
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(pool.run()))
    runner.start()
    waiter.join()
    time.sleep(0.2)  # every child has its handler
    asked = time.monotonic()
    flag.touch()
    runner.join(timeout=10)
    took = time.monotonic() - asked
    assert result == [OK]
    assert took < 1.0 + 0.2 + 1.0  # the check interval, the children's linger, slack
    assert sorted(lines(tmp_path / "signals")) == ["w.1 1", "w.2 1", "w.3 1"]
    assert len(lines(tmp_path / "starts")) == 3  # nothing started again


def test_a_broken_stop_check_does_not_stop_the_pool(tmp_path: Path) -> None:
    calls: list[int] = []

    def should_stop() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("status store unreachable")
        return True

    said: list[str] = []
    pool = Pool(
        patient(tmp_path),
        PoolOptions(1, "w", tick=0.02, stop_check_interval=0.1),
        should_stop=should_stop,
        say=said.append,
    )
    assert pool.run() == OK
    assert sum("could not check for a stop request" in line for line in said) == 2


def test_signals_are_forwarded_and_a_second_one_stops_at_once(tmp_path: Path) -> None:
    """Run in the main thread, as the CLI does: the pool's handlers take the signals."""
    said: list[str] = []
    pool = Pool(patient(tmp_path, linger=5.0), PoolOptions(2, "w", tick=0.02), say=said.append)

    def signal_twice() -> None:
        wait_for(lambda: len(lines(tmp_path / "starts")) == 2, 10)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=signal_twice)
    sender.start()
    code = pool.run()
    sender.join()
    assert code == INTERRUPTED
    assert sorted(lines(tmp_path / "signals")) == ["w.1 2", "w.2 2"]
    assert any("SIGTERM again: stopping every child at once" in line for line in said)
    assert signal.getsignal(signal.SIGTERM) is not pool._on_signal  # handlers restored


def test_describe_exit_names_signals_and_codes() -> None:
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(3) == "exit 3 (failure limit reached)"
    assert describe_exit(42) == "exit 42"


@pytest.mark.parametrize("processes", [0, -1])
def test_a_pool_needs_a_process(processes: int) -> None:
    with pytest.raises(ValueError, match="at least one process"):
        Pool(["x"], PoolOptions(processes, "w"))
