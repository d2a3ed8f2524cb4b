"""Worker metrics: what each event counts, queue depths at scrape time, StatsD packets.

Events are built by hand from real Received deliveries on ``memory://``,
the way the worker emits them, and the Prometheus side is read back
through its own text format, as a scrape would see it.
"""

from __future__ import annotations

import io
import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, ClassVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from courier.cli.context import CliContext
from courier.cli.observe import MetricsChoice, worker_metrics
from courier.envelope import Envelope
from courier.errors import MessageDecodingFailed, TransportError
from courier.events import MessageFailed, MessageHandled, MessageRetried, WorkerEvent
from courier.message import Message
from courier.metrics import INVALID
from courier.metrics.prometheus import PrometheusListener, register_queue_depths
from courier.metrics.statsd import StatsdListener, parse_address, stat_part
from courier.transports.base import Outcome, QueueStats, Received

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from courier.bus import Bus
    from courier.transports.base import Transport


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str


@pytest.fixture
def bus(make_bus: Callable[..., Bus]) -> Bus:
    bus = make_bus()
    bus.add_transport("jobs", "memory://operator:hunter2-secret@metrics-test?queue=jobs")
    return bus


def received(bus: Bus, *, decodable: bool = True) -> Received:
    delivery = Received(bus.transport("jobs"), None, "jobs")
    if decodable:
        delivery.envelope = Envelope(SendEmail(to="ada@example.com"))
    else:
        delivery.raw = b"\xff not json"
        delivery.error = MessageDecodingFailed("not JSON", delivery.raw, {})
    return delivery


def handled(delivery: Received, seconds: float = 0.25) -> MessageHandled:
    return MessageHandled("w.1", "i", delivery, seconds)


def failed(delivery: Received, outcome: Outcome, *, will_retry: bool) -> MessageFailed:
    return MessageFailed("w.1", "i", delivery, RuntimeError("smtp down"), outcome, will_retry)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


EMAIL = (("transport", "jobs"), ("type", "email.send"))


def test_each_event_counts_once_in_its_own_counter(bus: Bus) -> None:
    registry = CollectorRegistry()
    listener = PrometheusListener(registry)
    events: list[WorkerEvent] = [
        handled(received(bus)),
        handled(received(bus)),
        failed(received(bus), Outcome.RETRIED, will_retry=True),
        MessageRetried("w.1", "i", received(bus)),  # the same retry, told again: not counted
        failed(received(bus), Outcome.RELEASED, will_retry=True),
        failed(received(bus), Outcome.DEAD_LETTERED, will_retry=False),
        failed(received(bus), Outcome.REJECTED, will_retry=False),
    ]
    for event in events:
        listener(event)
    found = samples(registry)
    assert found[("courier_messages_handled_total", EMAIL)] == 2
    assert found[("courier_messages_retried_total", EMAIL)] == 2
    assert found[("courier_messages_failed_total", EMAIL)] == 2
    assert found[("courier_messages_dead_lettered_total", EMAIL)] == 1
    assert found[("courier_message_handling_seconds_count", EMAIL)] == 2
    assert found[("courier_message_handling_seconds_sum", EMAIL)] == pytest.approx(0.5)
    assert found[("courier_last_message_handled_timestamp_seconds", (("transport", "jobs"),))] > 0


def test_undecodable_messages_share_one_label(bus: Bus) -> None:
    registry = CollectorRegistry()
    listener = PrometheusListener(registry)
    listener(failed(received(bus, decodable=False), Outcome.DEAD_LETTERED, will_retry=False))
    found = samples(registry)
    invalid = (("transport", "jobs"), ("type", INVALID))
    assert found[("courier_messages_dead_lettered_total", invalid)] == 1


class Stats:
    """A transport's ``stats``, as the collector calls it; raises while ``broken``."""

    def __init__(self, name: str, counts: Sequence[QueueStats]) -> None:
        self.name = name
        self.counts = list(counts)
        self.broken = False
        self.asked: list[list[str]] = []

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        self.asked.append(list(queues or []))
        if self.broken:
            raise TransportError("amqp://guest:***@rabbit: connection refused")
        return self.counts


def depth_registry(*sources: tuple[Stats, list[str]]) -> CollectorRegistry:
    registry = CollectorRegistry()
    transports: dict[str, tuple[Transport, Sequence[str]]] = {
        stats.name: (stats, queues)  # type: ignore[misc]
        for stats, queues in sources
    }
    register_queue_depths(registry, transports)
    return registry


def test_queue_depths_are_asked_at_scrape_time() -> None:
    jobs = Stats("jobs", [QueueStats("jobs", ready=5, in_flight=2, delayed=1, dead=None)])
    registry = depth_registry((jobs, ["jobs"]))
    assert jobs.asked == []  # registering asks nothing
    found = samples(registry)
    assert jobs.asked == [["jobs"]]
    state = lambda name: (("queue", "jobs"), ("state", name), ("transport", "jobs"))  # noqa: E731
    assert found[("courier_queue_messages", state("ready"))] == 5
    assert found[("courier_queue_messages", state("in_flight"))] == 2
    assert found[("courier_queue_messages", state("delayed"))] == 1
    assert ("courier_queue_messages", state("dead")) not in found  # the broker cannot tell
    jobs.counts = [QueueStats("jobs", ready=0, in_flight=0, delayed=0)]
    assert samples(registry)[("courier_queue_messages", state("ready"))] == 0


def test_a_broker_that_cannot_answer_costs_its_series_not_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = Stats("rabbit", [])
    down.broken = True
    up = Stats("jobs", [QueueStats("jobs", ready=3)])
    registry = depth_registry((down, ["email"]), (up, ["jobs"]))
    found = samples(registry)
    assert found[("courier_queue_stats_up", (("transport", "rabbit"),))] == 0
    assert found[("courier_queue_stats_up", (("transport", "jobs"),))] == 1
    ready = (("queue", "jobs"), ("state", "ready"), ("transport", "jobs"))
    assert found[("courier_queue_messages", ready)] == 3
    assert "queue depths of 'rabbit' unavailable" in caplog.text


def test_no_password_reaches_a_label(bus: Bus) -> None:
    registry = CollectorRegistry()
    PrometheusListener(registry)(handled(received(bus)))
    transport = bus.transport("jobs")
    register_queue_depths(registry, {"jobs": (transport, ["jobs"])})
    text = generate_latest(registry).decode()
    assert "courier_queue_stats_up" in text
    assert "hunter2" not in text
    assert "operator" not in text


@pytest.fixture
def statsd_server() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(2.0)
    yield server
    server.close()


def packets(server: socket.socket, count: int) -> list[str]:
    return [server.recv(4096).decode() for _ in range(count)]


def test_statsd_receives_the_same_counts(
    bus: Bus, statsd_server: socket.socket, request: pytest.FixtureRequest
) -> None:
    port = statsd_server.getsockname()[1]
    listener = StatsdListener.to(f"127.0.0.1:{port}", prefix="shop")
    request.addfinalizer(listener.close)
    listener(handled(received(bus), seconds=0.125))
    listener(failed(received(bus), Outcome.RETRIED, will_retry=True))
    listener(failed(received(bus), Outcome.DEAD_LETTERED, will_retry=False))
    listener(failed(received(bus, decodable=False), Outcome.DEAD_LETTERED, will_retry=False))
    assert packets(statsd_server, 7) == [
        "shop.messages.handled.jobs.email_send:1|c",
        "shop.messages.handling.jobs.email_send:125.000000|ms",
        "shop.messages.retried.jobs.email_send:1|c",
        "shop.messages.failed.jobs.email_send:1|c",
        "shop.messages.dead_lettered.jobs.email_send:1|c",
        "shop.messages.failed.jobs.invalid:1|c",
        "shop.messages.dead_lettered.jobs.invalid:1|c",
    ]


def test_statsd_names_are_safe_parts() -> None:
    assert stat_part("email.send") == "email_send"
    assert stat_part("café:latte|c") == "caf__latte_c"
    assert parse_address("stats.internal:9125") == ("stats.internal", 9125)
    assert parse_address("localhost") == ("localhost", 8125)
    assert parse_address("[::1]:8125") == ("::1", 8125)
    with pytest.raises(ValueError, match="host:port"):
        parse_address("stats:notaport")


def test_consume_s_endpoint_serves_counts_and_depths_while_the_worker_runs(bus: Bus) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bus.route(SendEmail, "jobs")
    bus.dispatch(SendEmail(to="ada@example.com"))
    bus.dispatch(SendEmail(to="grace@example.com"))
    shown = io.StringIO()
    cli = CliContext(config=None, app=None, verbosity=0, console=Console(file=shown))
    choice = MetricsChoice(port=port)
    with worker_metrics(cli, bus, ["jobs"], [], choice) as listeners:
        for listener in listeners:
            listener(handled(received(bus)))
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    found = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert found[("courier_messages_handled_total", EMAIL)] == 1
    ready = (("queue", "jobs"), ("state", "ready"), ("transport", "jobs"))
    assert found[("courier_queue_messages", ready)] == 2
    assert "hunter2" not in text
    assert f"metrics on http://127.0.0.1:{port}/metrics" in shown.getvalue()
    with pytest.raises(urllib.error.URLError, match="refused"):  # closed with the worker
        urllib.request.urlopen(url, timeout=2)
