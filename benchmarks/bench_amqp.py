"""courier on RabbitMQ against raw pika doing the same work with the same safety.

    python benchmarks/bench_amqp.py [--messages 20000] [--runs 3] [--url amqp://...]

Every case moves ``--messages`` JSON messages of about 200 bytes through
a quorum queue (courier's default), persistent, with publisher confirms on
every publish and ``mandatory`` on both sides, and acknowledges on the
consume side only after the message was handled (decoded). Each case runs
in a fresh process, raw and courier alternating, and the table shows the
median of ``--runs`` runs, in messages per second, and courier / raw.

publish, one confirm each
    raw: BlockingConnection with confirm_delivery, each basic_publish waits
    for its confirm. courier: ``bus.dispatch`` one message at a time.
publish, confirms in flight
    raw: SelectConnection keeping 1,000 confirms in flight. courier: one
    ``bus.dispatch_many`` of every message (``send_many`` keeps up to
    ``confirm_window`` = 1,000 confirms in flight, as raw does). A second
    row calls ``dispatch_many`` per 1,000 messages: each call returns only
    once all of its confirms are in, so the pipeline drains between calls.
    A third calls ``bus.dispatch`` once per message on a transport with
    ``confirm=async`` (each returns once written, confirms in flight in the
    background) and ``bus.flush()`` at the end, inside the timing.
consume, ack after handling
    raw: basic_consume, prefetch 100, json.loads, basic_ack each. courier: a
    Worker (prefetch 100 per receive, acknowledgements batched by 100, DSN
    prefetch 1,000), the full consume stack, decoding into the pydantic model.
consume, raw's fastest at-least-once
    raw: prefetch 1,000, ack multiple after every 100 handled; courier: the
    same Worker as above. A second row has raw do what a typed consumer
    must instead of ``json.loads``: find the class the type header names and
    ``model_validate_json`` the body into it (pydantic's Rust parser is
    faster than ``json.loads`` into a dict, so on AMQP the message contract
    is not what costs).

The queue for each case is declared by courier (a quorum queue with its
dead-letter queue) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pika  # type: ignore[import-untyped]
from workload import SendEmail, drop_amqp_queue, in_fresh_process, payload

from courier import Bus
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions
from courier_amqp import AmqpOptions
from courier_amqp.topology import Topology

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
#: Shared with the spawned children through the environment.
TAG = os.environ.setdefault("COURIER_BENCH_TAG", f"bench-{uuid.uuid4().hex[:8]}")
OPTIONS = {"dead_letter_exchange": f"{TAG}.dlx", "delay_prefix": f"{TAG}.delay"}


def dsn(url: str, queue: str, **options: str) -> str:
    return Dsn.parse(url).with_options(queue=queue, **OPTIONS, **options).render(reveal=True)


def make_bus(url: str, queue: str, **options: str) -> Bus:
    bus = Bus(transports={"bench": dsn(url, queue, **options)})
    bus.route(SendEmail, "bench")
    return bus


# -- publishing ----------------------------------------------------------------


def raw_publish_each(url: str, queue: str, count: int) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    started = time.perf_counter()
    for n in range(count):
        properties = pika.BasicProperties(
            content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex
        )
        channel.basic_publish(
            "", queue, json.dumps(payload(n)).encode(), properties, mandatory=True
        )
    elapsed = time.perf_counter() - started
    connection.close()
    return count / elapsed


def courier_publish_each(url: str, queue: str, count: int) -> float:
    bus = make_bus(url, queue)
    bus.transport("bench").setup()
    started = time.perf_counter()
    for n in range(count):
        bus.dispatch(SendEmail(**payload(n)))
    elapsed = time.perf_counter() - started
    bus.close()
    return count / elapsed


def courier_publish_async(url: str, queue: str, count: int) -> float:
    """One ``bus.dispatch`` at a time with ``confirm=async``; the clock stops after ``flush``."""
    bus = make_bus(url, queue, confirm="async")
    bus.transport("bench").setup()
    started = time.perf_counter()
    for n in range(count):
        bus.dispatch(SendEmail(**payload(n)))
    bus.flush()
    elapsed = time.perf_counter() - started
    bus.close()
    return count / elapsed


def raw_publish_in_flight(url: str, queue: str, count: int, window: int = 1000) -> float:
    state = {"sent": 0, "confirmed": 0, "nacked": 0, "started": 0.0, "elapsed": 0.0}
    in_flight: list[int] = []

    def publish_more(channel: Any) -> None:
        while state["sent"] < count and state["sent"] - state["confirmed"] < window:
            n = int(state["sent"])
            properties = pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex
            )
            channel.basic_publish(
                "", queue, json.dumps(payload(n)).encode(), properties, mandatory=True
            )
            state["sent"] += 1
            in_flight.append(n + 1)

    def on_confirm(channel: Any, frame: Any) -> None:
        method = frame.method
        confirmed = method.delivery_tag - state["confirmed"] if method.multiple else 1
        state["confirmed"] += confirmed
        if not isinstance(method, pika.spec.Basic.Ack):
            state["nacked"] += confirmed
        if state["confirmed"] >= count:
            state["elapsed"] = time.perf_counter() - state["started"]
            channel.connection.close()
        else:
            publish_more(channel)

    def on_channel(channel: Any) -> None:
        def start(_: Any) -> None:
            state["started"] = time.perf_counter()
            publish_more(channel)

        channel.confirm_delivery(lambda frame: on_confirm(channel, frame), callback=start)

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda conn, reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    connection.ioloop.close()
    if state["nacked"] or state["confirmed"] != count:
        raise RuntimeError(f"raw publisher: {state}")
    return count / state["elapsed"]


def courier_publish_all(url: str, queue: str, count: int) -> float:
    return courier_publish_batches(url, queue, count, batch=count)


def courier_publish_batches(url: str, queue: str, count: int, batch: int = 1000) -> float:
    bus = make_bus(url, queue)
    bus.transport("bench").setup()
    started = time.perf_counter()
    for start in range(0, count, batch):
        bus.dispatch_many(
            [SendEmail(**payload(n)) for n in range(start, min(start + batch, count))]
        )
    elapsed = time.perf_counter() - started
    bus.close()
    return count / elapsed


# -- consuming -----------------------------------------------------------------


def raw_consume(
    url: str, queue: str, count: int, prefetch: int, ack_every: int, typed: bool = False
) -> float:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)
    classes: dict[str, type[SendEmail]] = {SendEmail.message_name: SendEmail}
    handled = 0

    def on_message(channel: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal handled
        if typed:
            # What a typed consumer must do: find the class, validate into it.
            name = (properties.headers or {}).get("courier-type") or properties.type
            classes[name].model_validate_json(body)
        else:
            json.loads(body)  # the handling
        handled += 1
        if ack_every == 1:
            channel.basic_ack(method.delivery_tag)
        elif handled % ack_every == 0 or handled == count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if handled == count:
            channel.stop_consuming()

    started = time.perf_counter()
    channel.basic_consume(queue, on_message)
    channel.start_consuming()
    elapsed = time.perf_counter() - started
    connection.close()
    return count / elapsed


def raw_consume_each(url: str, queue: str, count: int) -> float:
    return raw_consume(url, queue, count, prefetch=100, ack_every=1)


def raw_consume_fastest(url: str, queue: str, count: int) -> float:
    return raw_consume(url, queue, count, prefetch=1000, ack_every=100)


def raw_consume_fastest_typed(url: str, queue: str, count: int) -> float:
    return raw_consume(url, queue, count, prefetch=1000, ack_every=100, typed=True)


def courier_consume(url: str, queue: str, count: int) -> float:
    bus = make_bus(url, queue, prefetch="1000")
    handled = 0

    @bus.handler(SendEmail)
    def send_email(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    bus.transport("bench").setup()  # connected before the clock starts, as raw is
    worker = Worker(bus, ["bench"], options=WorkerOptions(limit=count, prefetch=100, ack_batch=100))
    started = time.perf_counter()
    worker.run()
    elapsed = time.perf_counter() - started
    bus.close()
    assert handled == count
    return count / elapsed


# -- the harness ---------------------------------------------------------------


def fill(url: str, queue: str, count: int) -> None:
    bus = make_bus(url, queue)
    for start in range(0, count, 1000):
        bus.dispatch_many([SendEmail(**payload(n)) for n in range(start, min(start + 1000, count))])
    bus.close()


def measure(url: str, case: Callable[..., float], count: int, prefill: bool) -> float:
    """Run ``case`` in a fresh process on a fresh queue; messages per second."""
    queue = f"{TAG}-{uuid.uuid4().hex[:6]}"
    setup = make_bus(url, queue)
    setup.transport("bench").setup()
    setup.close()
    if prefill:
        fill(url, queue, count)
    rate = float(in_fresh_process(case, (url, queue, count), timeout=600))
    left = drop_amqp_queue(url, queue)
    expected = 0 if prefill else count
    if left != expected:
        raise SystemExit(f"{case.__name__}: {left} messages left in the queue, expected {expected}")
    return rate


CASES: list[tuple[str, Callable[..., float], Callable[..., float], bool]] = [
    ("publish, one confirm each", raw_publish_each, courier_publish_each, False),
    ("publish, 1,000 confirms in flight", raw_publish_in_flight, courier_publish_all, False),
    (
        "  courier: dispatch_many per 1,000 messages",
        raw_publish_in_flight,
        courier_publish_batches,
        False,
    ),
    (
        "  courier: one dispatch at a time, confirm=async",
        raw_publish_in_flight,
        courier_publish_async,
        False,
    ),
    ("consume, ack each after handling", raw_consume_each, courier_consume, True),
    (
        "consume, raw fastest (prefetch 1000, ack multiple/100)",
        raw_consume_fastest,
        courier_consume,
        True,
    ),
    (
        "  the same, raw validating into the pydantic model",
        raw_consume_fastest_typed,
        courier_consume,
        True,
    ),
]


# -- a peer: dramatiq ------------------------------------------------------------


def dramatiq_send(url: str, queue: str, count: int, confirm: bool) -> float:
    """dramatiq's ``actor.send`` one message at a time (its queue declared before the clock)."""
    import dramatiq  # type: ignore[import-not-found]
    from dramatiq.brokers.rabbitmq import RabbitmqBroker  # type: ignore[import-not-found]

    broker = RabbitmqBroker(url=url, confirm_delivery=confirm)
    dramatiq.set_broker(broker)

    @dramatiq.actor(queue_name=queue, broker=broker)
    def send_email(n: int, to: str, subject: str, body: str) -> None: ...

    broker.declare_queue(queue)
    broker.channel  # noqa: B018 - connected before the clock starts
    started = time.perf_counter()
    for n in range(count):
        send_email.send(**payload(n))
    elapsed = time.perf_counter() - started
    # Without confirms the last messages may still be on their way: wait for them.
    deadline = time.monotonic() + 30
    left = broker.get_queue_message_counts(queue)[0]
    while left < count and time.monotonic() < deadline:
        time.sleep(0.1)
        left = broker.get_queue_message_counts(queue)[0]
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        broker.channel.queue_delete(name)
    broker.close()
    if left != count:
        raise SystemExit(f"dramatiq: {left} of {count} messages in the queue")
    return count / elapsed


def dramatiq_send_default(url: str, queue: str, count: int) -> float:
    return dramatiq_send(url, queue, count, confirm=False)


def dramatiq_send_confirmed(url: str, queue: str, count: int) -> float:
    return dramatiq_send(url, queue, count, confirm=True)


def measure_peer(url: str, case: Callable[..., float], count: int) -> float:
    """A peer's case in a fresh process, on a queue of its own."""
    queue = f"{TAG}-peer-{uuid.uuid4().hex[:6]}"
    rate = float(in_fresh_process(case, (url, queue, count), timeout=600))
    return rate


PEERS: list[tuple[str, Callable[..., float], Callable[..., float]]] = [
    (
        "one dispatch at a time: dramatiq actor.send (no confirms) / courier confirm=async",
        dramatiq_send_default,
        courier_publish_async,
    ),
    (
        "one dispatch at a time: dramatiq confirm_delivery=True / courier confirm=each",
        dramatiq_send_confirmed,
        courier_publish_each,
    ),
]


def cleanup(url: str) -> None:
    """Delete the dead-letter exchange and the delay levels every case's setup declared."""
    delays = Topology(AmqpOptions.model_validate(OPTIONS)).delay_queues()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    for name in delays:
        channel.queue_delete(name)
        channel.exchange_delete(name)
    channel.exchange_delete(OPTIONS["dead_letter_exchange"])
    connection.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument(
        "--only", default="", help="run only the cases whose title contains this text"
    )
    args = parser.parse_args(argv)
    print(
        f"{args.messages:,} messages of ~{len(json.dumps(payload(0)))} bytes, "
        f"median of {args.runs} run(s), messages/s\n"
    )
    header = f"{'case':<56} {'raw pika':>10} {'courier':>10} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    try:
        for title, raw, ours, prefill in CASES:
            if args.only not in title:
                continue
            raw_rates, our_rates = [], []
            for _ in range(args.runs):
                raw_rates.append(measure(args.url, raw, args.messages, prefill))
                our_rates.append(measure(args.url, ours, args.messages, prefill))
            raw_rate, our_rate = statistics.median(raw_rates), statistics.median(our_rates)
            print(f"{title:<56} {raw_rate:>10,.0f} {our_rate:>10,.0f} {our_rate / raw_rate:>6.0%}")
            sys.stdout.flush()
        try:
            import dramatiq  # type: ignore[import-not-found]  # noqa: F401
        except ImportError:
            return
        print(f"\npeer (dramatiq, its RabbitMQ broker){'':<26} {'dramatiq':>10} {'courier':>10}")
        for title, peer, ours in PEERS:
            if args.only not in title:
                continue
            peer_rates, our_rates = [], []
            for _ in range(args.runs):
                peer_rates.append(measure_peer(args.url, peer, args.messages))
                our_rates.append(measure(args.url, ours, args.messages, False))
            peer_rate, our_rate = statistics.median(peer_rates), statistics.median(our_rates)
            print(f"{title}")
            print(f"{'':<56} {peer_rate:>10,.0f} {our_rate:>10,.0f} {our_rate / peer_rate:>6.0%}")
            sys.stdout.flush()
    finally:
        cleanup(args.url)


if __name__ == "__main__":
    main()
