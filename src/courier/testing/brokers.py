"""Real brokers for a project's own tests: a DSN for each named broker.

The ``courier_broker`` fixture (``@pytest.mark.courier_broker("rabbitmq")``)
finds one, in this order:

1. the environment variable that names it (``COURIER_TEST_AMQP_URL``, ...),
   as courier's own tests do, so CI can point every test at its services;
2. the broker's local service on its default port (127.0.0.1:5672, ...);
3. a container, started with testcontainers if it is installed and a
   Docker engine answers, and stopped at the end of the session;
4. otherwise the test fails with one line naming the three ways.

========== ========================== ================ ============================
name       environment variable        default port     DSN (without a queue)
========== ========================== ================ ============================
rabbitmq   COURIER_TEST_AMQP_URL       5672             amqp://guest:guest@host:5672/%2f
redis      COURIER_TEST_REDIS_URL      6379             redis://host:6379/0
sqs        COURIER_TEST_SQS_URL        4566 (LocalStack) sqs://test:test@host:4566
stomp      COURIER_TEST_STOMP_URL      61613            stomp://guest:guest@host:61613
beanstalk  COURIER_TEST_BEANSTALK_URL  11300            beanstalk://host:11300
sqlite     COURIER_TEST_SQLITE_URL     (a file)         sqlite:///<session tmp>/courier.db
========== ========================== ================ ============================

``amqp`` is another name for ``rabbitmq``, ``beanstalkd`` for ``beanstalk``.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BROKERS", "BrokerSpec", "BrokerUnavailable", "Brokers"]

LOCALHOST = "127.0.0.1"


class BrokerUnavailable(Exception):
    """No broker of the requested kind could be found or started."""


@dataclass(frozen=True)
class BrokerSpec:
    """How to find, or start, one kind of broker."""

    name: str
    #: What to call it in messages.
    label: str
    env: str
    port: int
    #: The DSN, with ``{host}`` and ``{port}`` to fill in.
    dsn: str
    image: str
    container_env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = ()

    def at(self, host: str, port: int) -> str:
        return self.dsn.format(host=host, port=port)


BROKERS: dict[str, BrokerSpec] = {
    spec.name: spec
    for spec in (
        BrokerSpec(
            "rabbitmq",
            "RabbitMQ",
            "COURIER_TEST_AMQP_URL",
            5672,
            "amqp://guest:guest@{host}:{port}/%2f",
            "rabbitmq:3.13-alpine",
        ),
        BrokerSpec(
            "redis", "Redis", "COURIER_TEST_REDIS_URL", 6379, "redis://{host}:{port}/0", "redis:7"
        ),
        BrokerSpec(
            "sqs",
            "SQS (LocalStack)",
            "COURIER_TEST_SQS_URL",
            4566,
            "sqs://test:test@{host}:{port}",
            "localstack/localstack:3",
            container_env={"SERVICES": "sqs"},
        ),
        BrokerSpec(
            "stomp",
            "STOMP (RabbitMQ's plugin)",
            "COURIER_TEST_STOMP_URL",
            61613,
            "stomp://guest:guest@{host}:{port}",
            "rabbitmq:3.13-alpine",
            command=(
                "sh",
                "-c",
                "rabbitmq-plugins enable --offline rabbitmq_stomp && exec rabbitmq-server",
            ),
        ),
        BrokerSpec(
            "beanstalk",
            "beanstalkd",
            "COURIER_TEST_BEANSTALK_URL",
            11300,
            "beanstalk://{host}:{port}",
            "schickling/beanstalkd",
        ),
    )
}
ALIASES = {"amqp": "rabbitmq", "beanstalkd": "beanstalk"}
SQLITE_ENV = "COURIER_TEST_SQLITE_URL"
NAMES = sorted([*BROKERS, "sqlite"])


def _reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _docker_missing() -> str | None:
    """Why testcontainers cannot start a container here; None if it can."""
    try:
        importlib.import_module("testcontainers")
    except ImportError:
        return "testcontainers is not installed"
    try:
        docker = importlib.import_module("docker")
        docker.from_env(timeout=5).ping()
    except Exception as error:
        return f"no Docker engine answers: {error}"
    return None


class Brokers:
    """The brokers of one test session; containers it started stop with :meth:`close`."""

    def __init__(self, tmp: Path, *, startup_timeout: float = 120.0) -> None:
        self.tmp = tmp
        self.startup_timeout = startup_timeout
        self._found: dict[str, str] = {}
        self._containers: list[Any] = []

    def dsn(self, name: str) -> str:
        """The DSN of a broker called ``name``; see the module docstring."""
        key = ALIASES.get(name, name)
        if key not in self._found:
            self._found[key] = self._find(key, name)
        return self._found[key]

    def _find(self, key: str, asked: str) -> str:
        if key == "sqlite":
            return os.environ.get(SQLITE_ENV) or f"sqlite:///{self.tmp / 'courier.db'}"
        spec = BROKERS.get(key)
        if spec is None:
            raise ValueError(f"no broker called {asked!r}; known: {', '.join(NAMES)}")
        found = os.environ.get(spec.env)
        if found:
            return found
        if _reachable(LOCALHOST, spec.port):
            return spec.at(LOCALHOST, spec.port)
        missing = _docker_missing()
        if missing is not None:
            raise BrokerUnavailable(
                f"courier_broker({asked!r}): {spec.label} not found: set {spec.env}, "
                f"start it on {LOCALHOST}:{spec.port}, or install testcontainers "
                f"with a Docker engine running ({missing})"
            )
        return self._start(spec)

    def _start(self, spec: BrokerSpec) -> str:
        """Start ``spec``'s image and wait until its port answers."""
        module = importlib.import_module("testcontainers.core.container")
        container = module.DockerContainer(spec.image).with_exposed_ports(spec.port)
        for key, value in spec.container_env.items():
            container = container.with_env(key, value)
        if spec.command:
            container = container.with_command(list(spec.command))
        container.start()
        self._containers.append(container)
        host = str(container.get_container_host_ip())
        port = int(container.get_exposed_port(spec.port))
        deadline = time.monotonic() + self.startup_timeout
        while not _reachable(host, port):
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"courier_broker({spec.name!r}): the {spec.image} container did not "
                    f"answer on {host}:{port} within {self.startup_timeout:g}s"
                )
            time.sleep(0.5)
        return spec.at(host, port)

    def close(self) -> None:
        """Stop the containers this session started."""
        while self._containers:
            self._containers.pop().stop()
