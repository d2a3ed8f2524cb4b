"""Fixtures for the beanstalkd adapter's tests: the server's address and a janitor.

Every test that touches beanstalkd goes through the ``beanstalk_url``
fixture, which calls :func:`courier.testing.services.require_tcp`: skipped
locally when beanstalkd is not running, a failure under ``CI=true``. The
address comes from ``COURIER_TEST_BEANSTALK_URL``
(default ``beanstalk://127.0.0.1:11300``).

The ``janitor`` makes transports on uniquely named tubes with small
timings, gives raw greenstalk access (a foreign producer, or a test's own
look at the server), and empties every tube whose name carries its tag
when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import greenstalk
import pytest

from courier import Bus
from courier.serializer import Serializer
from courier.testing.contract import contract_serializer
from courier.testing.services import env, require_tcp
from courier.transports.dsn import Dsn
from courier.transports.sqlite import SqliteTransport
from courier_beanstalk import BeanstalkTransport

DEFAULT_URL = "beanstalk://127.0.0.1:11300"

SCRIPT = Path(__file__).with_name("worker_process.py")

#: Small timings so the whole adapter suite stays well under two minutes.
FAST = {"lease": "2", "poll_interval": "0.02", "connect_timeout": "2", "io_timeout": "5"}


def beanstalk_address() -> str:
    return env("COURIER_TEST_BEANSTALK_URL", DEFAULT_URL)


def host_port(url: str) -> tuple[str, int]:
    dsn = Dsn.parse(url)
    return dsn.host or "127.0.0.1", dsn.port or 11300


@pytest.fixture(scope="session")
def beanstalk_url() -> str:
    url = beanstalk_address()
    require_tcp("beanstalkd", *host_port(url))
    return url


class Janitor:
    """Makes uniquely named transports and raw clients; empties their tubes afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tag = f"t{uuid.uuid4().hex[:10]}"
        self.transports: list[BeanstalkTransport] = []
        self._client: greenstalk.Client[bytes] | None = None

    def name(self, what: str = "q") -> str:
        return f"{self.tag}-{what}-{uuid.uuid4().hex[:6]}"

    def dsn(self, queue: str, *, url: str | None = None, **options: str) -> str:
        return (
            Dsn.parse(url or self.url)
            .with_options(**{"queue": queue, **FAST, **options})
            .render(reveal=True)
        )

    def transport(
        self,
        queue: str | None = None,
        serializer: Serializer | None = None,
        *,
        url: str | None = None,
        name: str = "beanstalk",
        **options: str,
    ) -> BeanstalkTransport:
        transport = BeanstalkTransport(
            self.dsn(queue or self.name(), url=url, **options),
            name=name,
            serializer=serializer or contract_serializer(),
        )
        self.transports.append(transport)
        return transport

    def client(self) -> greenstalk.Client[bytes]:
        """A raw greenstalk client, bodies as bytes, as a foreign program would use."""
        if self._client is None:
            self._client = greenstalk.Client(host_port(self.url), encoding=None)
        return self._client

    def put_raw(self, tube: str, body: bytes, **kw: Any) -> int:
        client = self.client()
        client.use(tube)
        return client.put(body, **kw)

    def counts(self, tube: str) -> dict[str, int]:
        """ready / reserved / delayed / buried of ``tube`` (zeros if it does not exist)."""
        try:
            stats = self.client().stats_tube(tube)
        except greenstalk.NotFoundError:
            return {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}
        return {
            state: int(stats[f"current-jobs-{state}"])  # type: ignore[literal-required]
            for state in ("ready", "reserved", "delayed", "buried")
        }

    def job(self, job_id: int) -> dict[str, Any] | None:
        try:
            return dict(self.client().stats_job(job_id))
        except greenstalk.NotFoundError:
            return None

    def empty(self, tube: str) -> None:
        client = self.client()
        client.use(tube)
        for peek in (client.peek_ready, client.peek_delayed, client.peek_buried):
            while True:
                try:
                    job = peek()
                except greenstalk.NotFoundError:
                    break
                with contextlib.suppress(greenstalk.NotFoundError):
                    client.delete(job)

    def cleanup(self) -> None:
        for transport in self.transports:
            transport.close()
        try:
            for tube in self.client().tubes():
                if self.tag in tube:
                    self.empty(tube)
        finally:
            if self._client is not None:
                self._client.close()


@pytest.fixture
def janitor(beanstalk_url: str) -> Iterator[Janitor]:
    keeper = Janitor(beanstalk_url)
    try:
        yield keeper
    finally:
        keeper.cleanup()


@pytest.fixture
def transport(janitor: Janitor) -> BeanstalkTransport:
    transport = janitor.transport()
    transport.setup()
    return transport


class Workers:
    """Starts worker_process.py processes sharing one ledger and one failure store."""

    def __init__(self, tmp_path: Path, dsn: str) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.ledger = tmp_path / "ledger"
        self.ledger.touch()
        self.store = tmp_path / "store.db"
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []
        #: Types the failure store's records are decoded as.
        self.message_types: list[type[Any]] = []

    def start(self, **settings: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "COURIER_TEST_WORKER_DSN": self.dsn,
            "COURIER_TEST_STORE": str(self.store),
            "COURIER_TEST_LEDGER": str(self.ledger),
            **{f"COURIER_TEST_{key.upper()}": value for key, value in settings.items()},
        }
        stderr = (self.tmp_path / f"stderr-{len(self.processes)}").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        stderr.close()
        self.processes.append(process)
        return process

    def stderr(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.tmp_path.glob("stderr-*"))
        )

    def lines(self, kind: str = "job") -> list[list[str]]:
        lines = self.ledger.read_text().splitlines()
        return [line.split()[1:] for line in lines if line.startswith(kind + " ")]

    def jobs(self) -> list[int]:
        return [int(fields[0]) for fields in self.lines("job")]

    def store_records(self, queue: str) -> list[Any]:
        reader = Bus()
        for message_type in self.message_types:
            reader.register_messages(message_type)
        store = SqliteTransport.from_dsn(
            Dsn.parse(f"sqlite:///{self.store}?queue={queue}"),
            name=queue,
            serializer=reader.store_serializer,
        )
        try:
            return store.list()
        finally:
            store.close()

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str], Workers]]:
    """``spawn(dsn)``: worker processes on ``dsn``, all stopped when the test ends."""
    made: list[Workers] = []

    def make(dsn: str) -> Workers:
        keeper = Workers(tmp_path / f"w{len(made)}", dsn)
        made.append(keeper)
        return keeper

    try:
        yield make
    finally:
        for keeper in made:
            keeper.stop_all()
