"""``courier_broker``: a real broker's DSN from the environment, a local service, or testcontainers.

The first two paths are tested for real against the local RabbitMQ (and
Redis, which has no adapter yet: a PING shows the DSN's address answers).
This machine has no Docker engine and no testcontainers, so the third is
tested with stand-ins for both, and the no-Docker path's message for real.
"""

from __future__ import annotations

import socket
import sys
import types
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from courier.envelope import Envelope
from courier.message import Message
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer
from courier.testing import brokers
from courier.testing.brokers import BROKERS, Brokers, BrokerUnavailable
from courier.testing.services import require_tcp
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport


class Ping(Message):
    n: int


def round_trip(dsn: str) -> None:
    """Send one message through ``dsn`` and receive it back: the broker is really there."""
    registry = MessageRegistry()
    registry.register(Ping)
    transport = open_transport(Dsn.parse(dsn), name="probe", serializer=JsonSerializer(registry))
    try:
        transport.setup()
        transport.send(Envelope(Ping(n=7)))
        received = transport.receive(max=1, timeout=10.0)
        assert [r.envelope.message for r in received if r.envelope is not None] == [Ping(n=7)]
        transport.ack_many(received)
    finally:
        transport.close()


@pytest.fixture
def session_brokers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Brokers]:
    for spec in BROKERS.values():
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.delenv(brokers.SQLITE_ENV, raising=False)
    found = Brokers(tmp_path, startup_timeout=5)
    try:
        yield found
    finally:
        found.close()


def closed_port() -> int:
    """A local port nothing listens on (taken from the OS, then let go)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make SQS's default port one where nothing answers; returns the name to ask for."""
    monkeypatch.setitem(BROKERS, "sqs", replace(BROKERS["sqs"], port=closed_port()))
    return "sqs"


@pytest.mark.amqp
def test_the_environment_variable_wins(
    session_brokers: Brokers, monkeypatch: pytest.MonkeyPatch, amqp_janitor: Any
) -> None:
    url = amqp_janitor.url.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("COURIER_TEST_AMQP_URL", url)

    dsn = session_brokers.dsn("rabbitmq")

    assert dsn == url
    round_trip(Dsn.parse(dsn).with_options(queue=amqp_janitor.queue("env")).render(reveal=True))


@pytest.mark.amqp
def test_a_local_service_on_its_default_port_is_found(
    session_brokers: Brokers, amqp_janitor: Any
) -> None:
    require_tcp("RabbitMQ", "127.0.0.1", 5672)

    dsn = session_brokers.dsn("amqp")  # another name for rabbitmq

    assert dsn == "amqp://guest:guest@127.0.0.1:5672/%2f"
    assert session_brokers.dsn("rabbitmq") == dsn
    round_trip(Dsn.parse(dsn).with_options(queue=amqp_janitor.queue("local")).render(reveal=True))


@pytest.mark.redis
def test_a_local_redis_is_found(session_brokers: Brokers) -> None:
    require_tcp("Redis", "127.0.0.1", 6379)

    dsn = Dsn.parse(session_brokers.dsn("redis"))

    assert (dsn.scheme, dsn.host, dsn.port) == ("redis", "127.0.0.1", 6379)
    with socket.create_connection((dsn.host, dsn.port), timeout=5) as connection:
        connection.sendall(b"PING\r\n")
        assert connection.recv(16) == b"+PONG\r\n"


def test_sqlite_needs_no_service(session_brokers: Brokers, tmp_path: Path) -> None:
    dsn = session_brokers.dsn("sqlite")

    assert dsn == f"sqlite:///{tmp_path / 'courier.db'}"
    round_trip(f"{dsn}?queue=probe")


def test_without_docker_the_failure_names_the_three_ways(
    session_brokers: Brokers, nowhere: str
) -> None:
    assert "testcontainers" not in sys.modules  # not installed here

    with pytest.raises(BrokerUnavailable) as unavailable:
        session_brokers.dsn(nowhere)

    port = BROKERS["sqs"].port
    assert str(unavailable.value) == (
        f"courier_broker('sqs'): SQS (LocalStack) not found: set COURIER_TEST_SQS_URL, "
        f"start it on 127.0.0.1:{port}, or install testcontainers with a Docker engine "
        "running (testcontainers is not installed)"
    )


class FakeContainer:
    """Stands in for testcontainers' DockerContainer: "runs" a port of this process."""

    started: ClassVar[list[FakeContainer]] = []

    def __init__(self, image: str) -> None:
        self.image = image
        self.env: dict[str, str] = {}
        self.command: list[str] | None = None
        self.server = socket.socket()
        self.stopped = False

    def with_exposed_ports(self, port: int) -> FakeContainer:
        self.exposed = port
        return self

    def with_env(self, key: str, value: str) -> FakeContainer:
        self.env[key] = value
        return self

    def with_command(self, command: list[str]) -> FakeContainer:
        self.command = command
        return self

    def start(self) -> None:
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        FakeContainer.started.append(self)

    def get_container_host_ip(self) -> str:
        return "127.0.0.1"

    def get_exposed_port(self, port: int) -> str:
        assert port == self.exposed
        return str(self.server.getsockname()[1])

    def stop(self) -> None:
        self.stopped = True
        self.server.close()


def install_fake_testcontainers(monkeypatch: pytest.MonkeyPatch, *, docker_answers: bool) -> None:
    package = types.ModuleType("testcontainers")
    core = types.ModuleType("testcontainers.core")
    container = types.ModuleType("testcontainers.core.container")
    container.DockerContainer = FakeContainer  # type: ignore[attr-defined]
    docker = types.ModuleType("docker")

    class Client:
        def ping(self) -> bool:
            if not docker_answers:
                raise ConnectionError("Error while fetching server API version")
            return True

    docker.from_env = lambda timeout: Client()  # type: ignore[attr-defined]
    for name, module in [
        ("testcontainers", package),
        ("testcontainers.core", core),
        ("testcontainers.core.container", container),
        ("docker", docker),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    FakeContainer.started = []


def test_with_testcontainers_but_no_docker_engine_the_failure_says_so(
    session_brokers: Brokers, nowhere: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_testcontainers(monkeypatch, docker_answers=False)

    with pytest.raises(BrokerUnavailable, match=r"no Docker engine answers: Error while fetching"):
        session_brokers.dsn(nowhere)


def test_with_testcontainers_and_docker_a_container_is_started_and_stopped(
    session_brokers: Brokers, nowhere: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_testcontainers(monkeypatch, docker_answers=True)

    dsn = session_brokers.dsn(nowhere)

    [container] = FakeContainer.started
    assert container.image == "localstack/localstack:3"
    assert container.env == {"SERVICES": "sqs"}
    assert dsn == f"sqs://test:test@127.0.0.1:{container.get_exposed_port(BROKERS['sqs'].port)}"
    assert session_brokers.dsn("sqs") == dsn  # one container per session and broker
    session_brokers.close()
    assert container.stopped


def test_an_unknown_broker_is_refused_with_the_known_names(session_brokers: Brokers) -> None:
    with pytest.raises(ValueError, match=r"no broker called 'kafka'; known: beanstalk, rabbitmq"):
        session_brokers.dsn("kafka")


def test_the_fixture_gives_a_test_the_dsn_it_names_or_fails_with_one_line(
    pytester: pytest.Pytester, nowhere: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COURIER_TEST_SQS_URL", raising=False)
    monkeypatch.setenv("COURIER_TEST_REDIS_URL", "redis://redis.test:6379/0")
    pytester.makepyfile(
        test_brokers="""
            import pytest

            @pytest.mark.courier_broker("sqs")
            def test_needs_sqs(courier_broker):
                pass

            @pytest.mark.parametrize("courier_broker", ["sqlite", "redis"], indirect=True)
            def test_parametrized(courier_broker, tmp_path):
                assert courier_broker in (
                    f"sqlite:///{tmp_path / 'courier.db'}",
                    "redis://redis.test:6379/0",
                )

            def test_unnamed(courier_broker):
                pass

            def test_factory(courier_brokers):
                assert courier_brokers.dsn("redis") == "redis://redis.test:6379/0"
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "courier_broker('sqs'): SQS (LocalStack) not found: set COURIER_TEST_SQS_URL, *",
            "courier_broker: name the broker, e.g. @pytest.mark.courier_broker('rabbitmq') or *",
        ],
        consecutive=False,
    )
    assert "def courier_broker" not in result.stdout.str()  # one line, no traceback
