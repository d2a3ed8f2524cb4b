"""DSN scheme -> transport: the embedded ones, registered ones, and helpful errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from courier import Bus, ConfigurationError, Dsn
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer, Serializer
from courier.transports import registry as transport_registry
from courier.transports.memory import MemoryTransport
from courier.transports.registry import open_transport, register
from courier.transports.sync import SyncTransport

if TYPE_CHECKING:
    from collections.abc import Callable

    from courier.transports.base import Transport


@pytest.fixture
def serializer() -> JsonSerializer:
    return JsonSerializer(MessageRegistry())


@pytest.fixture
def no_installed_adapters(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if no adapter distribution were installed (the workspace installs some)."""
    monkeypatch.setattr(transport_registry, "_loaded", {})


def test_embedded_transports_open(serializer: JsonSerializer) -> None:
    memory = open_transport("memory://?queue=email", name="jobs", serializer=serializer)
    assert isinstance(memory, MemoryTransport)
    assert (memory.name, memory.queue) == ("jobs", "email")
    assert memory.serializer is serializer
    sync = open_transport(Dsn.parse("sync://"), name="now", serializer=serializer)
    assert isinstance(sync, SyncTransport)


@pytest.mark.parametrize(
    ("dsn", "package", "extra"),
    [
        ("amqp://guest:SeCrEt@localhost:5672/%2f", "courier-bus-amqp", "amqp"),
        ("amqps://guest:SeCrEt@localhost:5671/", "courier-bus-amqp", "amqp"),
        ("redis://:SeCrEt@localhost:6379/0", "courier-bus-redis", "redis"),
        ("sqs://key:SeCrEt@sqs.eu-west-1.amazonaws.com/123/email", "courier-bus-sqs", "sqs"),
        ("stomp://admin:SeCrEt@localhost:61613", "courier-bus-stomp", "stomp"),
        ("beanstalk://localhost:11300?tube=email", "courier-bus-beanstalk", "beanstalk"),
    ],
)
@pytest.mark.usefixtures("no_installed_adapters")
def test_missing_adapter_names_the_package(
    serializer: JsonSerializer, dsn: str, package: str, extra: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_transport(dsn, name="jobs", serializer=serializer)
    text = str(caught.value)
    assert package in text
    assert f'pip install "courier-bus[{extra}]"' in text
    assert "'jobs'" in text
    assert "SeCrEt" not in text


@pytest.mark.usefixtures("no_installed_adapters")
def test_unknown_scheme_lists_the_known_ones(serializer: JsonSerializer) -> None:
    with pytest.raises(ConfigurationError, match="no transport for scheme 'carrier-pigeon'") as e:
        open_transport("carrier-pigeon://u:SeCrEt@loft", name="jobs", serializer=serializer)
    assert "known: memory, sqlite, sync" in str(e.value)
    assert "SeCrEt" not in str(e.value)


@pytest.mark.usefixtures("no_installed_adapters")
def test_bus_reports_the_missing_adapter(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(ConfigurationError, match="courier-bus-redis"):
        make_bus(transports={"cache": "redis://localhost:6379/0"})


def test_registered_factories_are_used(
    serializer: JsonSerializer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_registry, "_registered", {})
    opened: list[tuple[Dsn, str]] = []

    def factory(dsn: Dsn, *, name: str, serializer: Serializer) -> Transport:
        opened.append((dsn, name))
        return MemoryTransport(name=name, serializer=serializer)

    register("Pigeon", factory)
    transport = open_transport("pigeon://loft?x=1", name="birds", serializer=serializer)
    assert isinstance(transport, MemoryTransport)
    assert [(dsn.host, dsn.options, name) for dsn, name in opened] == [
        ("loft", {"x": "1"}, "birds")
    ]


def test_a_factory_that_cannot_load_is_a_configuration_error(serializer: JsonSerializer) -> None:
    factory = transport_registry._lazy("broken", "courier_nonexistent_module:Factory")
    with pytest.raises(ConfigurationError, match=r"broken:// could not be loaded"):
        factory(Dsn.parse("broken://"), name="x", serializer=serializer)


def test_transport_names_are_unique_on_a_bus(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"jobs": "memory://"})
    with pytest.raises(ConfigurationError, match="'jobs' is configured twice"):
        bus.add_transport("jobs", "memory://")
    with pytest.raises(ConfigurationError, match=r"unknown transport 'nope' \(configured: jobs\)"):
        bus.transport("nope")


def test_a_transport_instance_takes_its_name_from_the_bus(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus()
    transport = MemoryTransport(name="whatever", queue="q", serializer=bus.serializer)
    assert bus.add_transport("jobs", transport) is transport
    assert transport.name == "jobs"
    assert bus.transport("jobs") is transport
