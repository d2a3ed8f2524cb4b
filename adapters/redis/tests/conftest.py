"""Fixtures for the Redis adapter's tests: the server's address, a cluster, a janitor.

Every test that touches Redis goes through the ``redis_url`` fixture, which
calls :func:`courier.testing.services.require_tcp`: skipped locally when
Redis is not running, a failure under ``CI=true``. The address comes from
``COURIER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).

``redis_cluster`` starts a real three-master cluster on free loopback ports
for the session and shuts it down at the end (:class:`LocalCluster`).

The ``janitor`` makes transports whose keys all start with a prefix of its
own, with small timings, and deletes every key under that prefix when the
test ends.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from courier.serializer import Serializer
from courier.testing.contract import contract_serializer
from courier.testing.services import env, in_ci, require_tcp
from courier.transports.dsn import Dsn
from courier_redis import RedisTransport
from courier_redis.keys import queue_keys

DEFAULT_URL = "redis://127.0.0.1:6379/0"

#: Small timings so the whole adapter suite stays well under two minutes.
FAST = {"lease": "2", "delay_check": "0.1", "connect_timeout": "2", "socket_timeout": "5"}


# -- a local cluster ----------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports P with P and P + 10000 (the cluster bus) both free."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < 55000 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


class LocalCluster:
    """Three masters, no replicas, in ``directory``."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.directory = directory
        self.ports = free_ports(masters)
        self.started: list[int] = []

    @staticmethod
    def available() -> str | None:
        """Why a cluster cannot be started here, or None."""
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                return f"{tool} is not installed"
        return None

    @property
    def seeds(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def cli(self, port: int, *args: str, timeout: float = 30) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(port), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return result.stdout + result.stderr

    def start(self) -> LocalCluster:
        for port in self.ports:
            settings = {
                "cluster-enabled": "yes",
                "port": str(port),
                "bind": "127.0.0.1",
                "cluster-config-file": str(self.directory / f"nodes-{port}.conf"),
                "daemonize": "yes",
                "save": "",
                "appendonly": "no",
                "dir": str(self.directory),
                "logfile": str(self.directory / f"redis-{port}.log"),
            }
            arguments = [part for name, value in settings.items() for part in (f"--{name}", value)]
            subprocess.run(["redis-server", *arguments], check=True, timeout=30)
            self.started.append(port)
        for port in self.ports:
            self._wait(lambda port=port: "PONG" in self.cli(port, "ping"), f"node {port} to start")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        create = ["--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"]
        created = subprocess.run(
            ["redis-cli", *create],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-2000:]}")
        for port in self.ports:
            self._wait(
                lambda port=port: "cluster_state:ok" in self.cli(port, "cluster", "info"),
                f"node {port} to report cluster_state:ok",
            )
        return self

    def _wait(self, ready: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        for port in self.started:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.cli(port, "shutdown", "nosave", timeout=10)
        self.started = []


# -- fixtures -----------------------------------------------------------------


def redis_address() -> str:
    return env("COURIER_TEST_REDIS_URL", DEFAULT_URL)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = redis_address()
    dsn = Dsn.parse(url)
    require_tcp("Redis", dsn.host or "127.0.0.1", dsn.port or 6379)
    return url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[str]:
    """``redis+cluster://`` seeds of a three-master cluster started for this session."""
    missing = LocalCluster.available()
    if missing is not None:
        message = f"cannot start a Redis Cluster: {missing}"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with tempfile.TemporaryDirectory(prefix="courier-redis-cluster-") as directory:
        cluster = LocalCluster(Path(directory))
        try:
            cluster.start()
            yield f"redis+cluster://{cluster.seeds}/0"
        finally:
            cluster.stop()


def raw_client(url: str) -> Any:
    """A plain redis-py client on ``url`` (a foreign producer, or a test's own look)."""
    dsn = Dsn.parse(url)
    if dsn.scheme.endswith("+cluster"):
        hosts = dsn.hosts or ((dsn.host or "127.0.0.1", dsn.port),)
        return RedisCluster(startup_nodes=[ClusterNode(h, p or 6379) for h, p in hosts])
    return redis.Redis(
        host=dsn.host or "127.0.0.1",
        port=dsn.port or 6379,
        db=int(dsn.path.strip("/") or 0),
        username=dsn.username,
        password=dsn.password,
    )


class Janitor:
    """Makes transports under a prefix of its own; deletes every key under it afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tag = uuid.uuid4().hex[:10]
        self.prefix = f"ct-{self.tag}:"
        self.transports: list[RedisTransport] = []
        self._raw: Any = None

    def name(self, what: str = "q") -> str:
        return f"{what}-{uuid.uuid4().hex[:8]}"

    def options(self, queue: str, **options: str) -> dict[str, str]:
        return {"queue": queue, "prefix": self.prefix, **FAST, **options}

    def dsn(self, queue: str, *, url: str | None = None, **options: str) -> str:
        dsn = Dsn.parse(url or self.url).with_options(**self.options(queue, **options))
        return dsn.render(reveal=True)

    def transport(
        self,
        queue: str | None = None,
        serializer: Serializer | None = None,
        *,
        url: str | None = None,
        name: str = "redis",
        **options: str,
    ) -> RedisTransport:
        queue = queue or self.name()
        dsn = Dsn.parse(self.dsn(queue, url=url, **options))
        transport = RedisTransport(dsn, name=name, serializer=serializer or contract_serializer())
        self.transports.append(transport)
        return transport

    @property
    def raw(self) -> Any:
        if self._raw is None:
            self._raw = raw_client(self.url)
        return self._raw

    def stream(self, queue: str) -> str:
        return queue_keys(self.prefix, queue).stream

    def xadd_raw(self, queue: str, fields: Mapping[Any, Any]) -> bytes:
        """An entry written by redis-py straight onto ``queue``'s stream."""
        return self.raw.xadd(self.stream(queue), dict(fields))  # type: ignore[no-any-return]

    def cleanup(self) -> None:
        for transport in self.transports:
            transport.close()
        raw = self.raw
        keys = list(raw.scan_iter(match=f"{self.prefix}*", count=1000))
        for key in keys:
            raw.delete(key)
        raw.close()


@pytest.fixture
def janitor(redis_url: str) -> Iterator[Janitor]:
    keeper = Janitor(redis_url)
    try:
        yield keeper
    finally:
        keeper.cleanup()


@pytest.fixture
def cluster_janitor(redis_cluster: str) -> Iterator[Janitor]:
    keeper = Janitor(redis_cluster)
    try:
        yield keeper
    finally:
        keeper.cleanup()


@pytest.fixture
def transport(janitor: Janitor) -> RedisTransport:
    transport = janitor.transport()
    transport.setup()
    return transport
