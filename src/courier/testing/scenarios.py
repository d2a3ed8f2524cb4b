"""Real-process scenarios an adapter's tests run on their broker: `courier consume` as users run it.

:class:`Project` writes a small app (``app.py``, ``courier.toml``) into a
folder, with a ledger file that the handler appends each message's number
to, one unbuffered write per message, so a SIGKILL loses no line of a
handled message and lost or duplicated messages are counted, not guessed.
:class:`Supervisor` keeps N ``courier consume`` processes running and
restarts the ones that die, as systemd or supervisord would.

The poison scenario, on any transport::

    project = Project(tmp_path, dsn="amqp://guest:guest@127.0.0.1/%2f?queue=jobs")
    project.dispatch(range(300), kill={150})       # job 150's handler calls os._exit(1)
    with Supervisor(project, workers=2) as supervisor:
        supervisor.wait_until(lambda: project.handled() >= set(range(300)) - {150}
                              and project.failed_ids())
    assert project.failure_reasons() == [...]
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from types import TracebackType

__all__ = ["Project", "Supervisor", "interrupt_twice", "peak_rss_mib"]

APP = '''
"""A scenario app: jobs whose handler records them, or kills its worker."""

import os
import time
from pathlib import Path
from typing import ClassVar

from courier import Bus, Message

HERE = Path(__file__).parent
LEDGER = os.open(HERE / "ledger.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
STARTED = os.open(HERE / "started.txt", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


class Job(Message):
    message_name: ClassVar[str] = "scenario.job"

    n: int
    kill: bool = False
    sleep: float = 0.0
    fail: bool = False


bus = Bus.from_config()


@bus.handler(Job)
def handle(job: Job) -> None:
    os.write(STARTED, f"{job.n}\\n".encode())
    if job.kill:
        os._exit(1)
    if job.sleep:
        time.sleep(job.sleep)
    if job.fail:
        raise RuntimeError(f"job {job.n} fails")
    os.write(LEDGER, f"{job.n}\\n".encode())
'''


class Project:
    """An app folder: ``app.py``, ``courier.toml``, the ledger and courier.db."""

    def __init__(self, root: Path, *, dsn: str, settings: str = "", app_extra: str = "") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        (root / "app.py").write_text(APP + textwrap.dedent(app_extra))
        (root / "courier.toml").write_text(
            textwrap.dedent(
                f"""\
                app = "app:bus"
                {settings}

                [transports]
                jobs = {json.dumps(dsn)}

                [routing]
                "scenario.job" = "jobs"
                """
            )
        )
        self.ledger = root / "ledger.txt"

    @property
    def database(self) -> Path:
        """The SQLite file of the default failure store and status store."""
        return self.root / "courier.db"

    def courier(
        self, *args: str, input_text: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``courier`` command in the project folder."""
        return subprocess.run(  # noqa: S603 - our own courier command
            [*courier_command(), *args],
            cwd=self.root,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.environment(),
            check=False,
        )

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("COURIER_CONFIG", None)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def dispatch(
        self,
        numbers: Iterable[int],
        *,
        kill: Iterable[int] = (),
        fail: Iterable[int] = (),
        sleep: float = 0.0,
    ) -> None:
        """Dispatch jobs from a separate process (the producer), in one batch."""
        killers, failing = set(kill), set(fail)
        lines = "\n".join(
            json.dumps({"n": n, "kill": n in killers, "fail": n in failing, "sleep": sleep})
            for n in numbers
        )
        result = self.courier("dispatch", "scenario.job", "-", input_text=lines)
        if result.returncode != 0:
            raise AssertionError(f"courier dispatch failed: {result.stderr}")

    def started(self) -> Counter[int]:
        """How often each job's handler started, from ``started.txt``."""
        path = self.root / "started.txt"
        if not path.exists():
            return Counter()
        return Counter(int(line) for line in path.read_text().split())

    def handled(self) -> Counter[int]:
        """How often each job's handler finished, from the ledger."""
        if not self.ledger.exists():
            return Counter()
        return Counter(int(line) for line in self.ledger.read_text().split())

    def failed_records(self) -> list[dict[str, object]]:
        """``courier failed list --json`` rows."""
        result = self.courier("failed", "list", "--json")
        if result.returncode != 0:
            raise AssertionError(f"courier failed list failed: {result.stderr}")
        rows: list[dict[str, object]] = json.loads(result.stdout or "[]")
        return rows

    def stored_count(self, queue: str = "failed") -> int:
        """Rows waiting in a queue of courier.db, without starting a process."""
        if not self.database.exists():
            return 0
        with closing(sqlite3.connect(self.database, timeout=10)) as connection:
            try:
                row = connection.execute(
                    "SELECT count(*) FROM courier_messages WHERE queue = ? AND state IN (0, 1)",
                    (queue,),
                ).fetchone()
            except sqlite3.OperationalError:
                return 0
        return int(row[0])


def courier_command() -> list[str]:
    """The ``courier`` executable next to this Python, or ``python -m courier.cli``."""
    executable = Path(sys.executable).with_name("courier")
    if executable.exists():
        return [str(executable)]
    return [sys.executable, "-m", "courier.cli"]


class Supervisor:
    """Keeps ``workers`` ``courier consume`` processes alive, restarting the dead."""

    def __init__(
        self,
        project: Project,
        *,
        workers: int = 2,
        args: Iterable[str] = ("jobs", "--no-progress"),
    ) -> None:
        self.project = project
        self.count = workers
        self.args = list(args)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.restarts = 0
        self.exit_codes: list[int] = []
        self._logs: list[Path] = []

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        log = self.project.root / f"worker-{slot}-{len(self._logs)}.log"
        self._logs.append(log)
        with log.open("wb") as output:
            return subprocess.Popen(  # noqa: S603 - our own courier command
                [*courier_command(), "consume", *self.args],
                cwd=self.project.root,
                env=self.project.environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def __enter__(self) -> Supervisor:
        self.processes = [self._spawn(slot) for slot in range(self.count)]
        return self

    def tend(self) -> None:
        """Restart every worker that exited."""
        for slot, process in enumerate(self.processes):
            code = process.poll()
            if code is not None:
                self.exit_codes.append(code)
                self.restarts += 1
                self.processes[slot] = self._spawn(slot)

    def wait_until(self, done: Callable[[], bool], timeout: float = 180.0) -> None:
        """Tend the workers until ``done()``; fail with the workers' logs on timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"scenario did not finish in {timeout:g}s\n{self.logs()}")
            self.tend()
            time.sleep(0.1)

    def logs(self, tail: int = 4000) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-tail:]}"
            for log in self._logs
            if log.exists()
        )

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every worker and wait; SIGKILL what does not stop."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def peak_rss_mib(pid: int) -> float:
    """The highest resident memory a live process has had, in MiB (Linux's VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def interrupt_twice(project: Project, *, timeout: float = 60.0) -> tuple[int, str]:
    """Ctrl-C a worker during a long handler, then again: its exit code and output.

    Dispatches job 1 with a 10-second handler, waits for the handler to
    start, sends SIGINT, checks the worker is still there a moment later,
    then sends SIGINT again.
    """
    project.dispatch([1], sleep=10.0)
    log = project.root / "interrupted.log"
    with log.open("wb") as output:
        worker = subprocess.Popen(  # noqa: S603 - our own courier command
            [*courier_command(), "consume", "jobs"],
            cwd=project.root,
            env=project.environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not project.started():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the handler never started:\n{log.read_text()}")
            time.sleep(0.05)
        worker.send_signal(signal.SIGINT)
        time.sleep(1.0)
        if worker.poll() is not None:
            raise AssertionError(f"one Ctrl-C stopped the worker at once:\n{log.read_text()}")
        worker.send_signal(signal.SIGINT)
        code = worker.wait(timeout)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    return code, log.read_text(errors="replace")
