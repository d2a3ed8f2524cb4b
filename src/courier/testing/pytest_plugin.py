"""courier's pytest plugin (entry point ``pytest11``): fixtures for apps that use courier.

``courier_bus``
    The app's bus with every transport swapped for memory (serializing, so
    the real codec runs), with ``dispatched()``, ``assert_dispatched()``
    and ``drain()``; see :mod:`courier.testing.harness`. The originals are
    back after the test.
``courier_app``
    Which bus that is. By default the ``courier_app`` ini option
    (``module:bus``), else ``app =`` in courier.toml / ``[tool.courier]``
    / ``COURIER_APP``, else a Django project's (``courier.contrib.django``,
    once Django is set up). Override the fixture to return the bus
    yourself.
``courier_serialize``
    Whether the memory transports serialize (the ``courier_serialize`` ini
    option, true by default); override it per module or per test.
``courier_broker``
    The DSN of a real broker, named by indirect parametrization
    (``@pytest.mark.parametrize("courier_broker", ["rabbitmq"],
    indirect=True)``) or a mark (``@pytest.mark.courier_broker("redis")``):
    from an environment variable, a local service, or testcontainers; see
    :mod:`courier.testing.brokers`.
``courier_brokers``
    The session's brokers: ``courier_brokers.dsn("rabbitmq")``, for
    fixtures of your own.

Nothing is imported until a test asks for one of them, so a session that
never does pays nothing, and no web framework is ever imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from courier.bus import Bus
    from courier.testing.brokers import Brokers
    from courier.testing.harness import CourierTestBus


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "courier_broker(name): the broker the courier_broker fixture gives this test "
        "(rabbitmq, redis, sqs, stomp, beanstalk, sqlite)",
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "courier_app",
        "courier: the app's bus for courier_bus, as 'module:bus' (default: app = in courier.toml)",
        default="",
    )
    parser.addini(
        "courier_serialize",
        "courier: courier_bus sends every message through the serializer (default: true)",
        type="bool",
        default=True,
    )


@pytest.fixture
def courier_app(request: pytest.FixtureRequest) -> Bus | str | None:
    """The bus ``courier_bus`` swaps: a Bus, ``"module:bus"``, or None for the configuration's."""
    value = str(request.config.getini("courier_app") or "").strip()
    return value or None


@pytest.fixture
def courier_serialize(request: pytest.FixtureRequest) -> bool:
    """Whether ``courier_bus``'s memory transports serialize every message."""
    return bool(request.config.getini("courier_serialize"))


@pytest.fixture
def courier_bus(courier_app: Bus | str | None, courier_serialize: bool) -> Iterator[CourierTestBus]:
    """The app's bus on memory for this test; see :mod:`courier.testing.harness`."""
    from courier.errors import ConfigurationError
    from courier.testing.harness import CourierTestBus, resolve_bus

    try:
        bus = resolve_bus(courier_app)
    except ConfigurationError as error:
        pytest.fail(f"courier_bus: {error}", pytrace=False)
    with CourierTestBus.swapped(bus, serialize=courier_serialize) as test_bus:
        yield test_bus


@pytest.fixture(scope="session")
def courier_brokers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Brokers]:
    """The brokers of this session; containers it started stop at its end."""
    from courier.testing.brokers import Brokers

    brokers = Brokers(tmp_path_factory.mktemp("courier-brokers"))
    try:
        yield brokers
    finally:
        brokers.close()


@pytest.fixture
def courier_broker(request: pytest.FixtureRequest, courier_brokers: Brokers, tmp_path: Path) -> str:
    """The DSN of the broker this test names; see :mod:`courier.testing.brokers`.

    ``sqlite`` is a new file in the test's own ``tmp_path``.
    """
    from courier.testing.brokers import BrokerUnavailable

    name = getattr(request, "param", None)
    if name is None:
        marker = request.node.get_closest_marker("courier_broker")
        name = marker.args[0] if marker is not None and marker.args else None
    if not isinstance(name, str):
        pytest.fail(
            "courier_broker: name the broker, e.g. @pytest.mark.courier_broker('rabbitmq') or "
            "@pytest.mark.parametrize('courier_broker', ['rabbitmq'], indirect=True)",
            pytrace=False,
        )
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'courier.db'}"
    try:
        return courier_brokers.dsn(name)
    except BrokerUnavailable as error:
        pytest.fail(str(error), pytrace=False)
