"""courier on SQS (moto's server) against raw boto3 doing the same work with the same safety.

    python benchmarks/bench_sqs.py [--messages 2000] [--runs 3] [--backlog 20]

The benchmark starts moto's server in a process of its own (so it does not
share the GIL with the measured client), on a free port of 127.0.0.1, and
stops it at the end. Every case moves ``--messages`` JSON messages of
about 200 bytes, each side in a fresh process, raw and courier
alternating; the table shows the median of ``--runs`` runs, in messages
per second, and courier / raw.

moto's server does work proportional to a queue's length on every send,
receive and delete (SQS does not): a backlog of a thousand makes it
crawl. So the messages are spread over ``messages / backlog`` queues, each
holding at most ``--backlog`` at a time, on both sides alike.

publish, batches of 10 (raw's fastest at-least-once pattern)
    raw: SendMessageBatch of ten, one after another, checking every entry of
    the answer. courier: ``bus.dispatch_many`` of each queue's share
    (``send_many``: SendMessageBatch of ten, entries checked, ids returned),
    with ``batches_in_flight=1`` (one request at a time, as raw), and with
    its default of 8 (here each share is four requests, sent at once).
publish, one at a time
    raw: SendMessage each. courier: ``bus.dispatch`` each.
consume, receive 10 + delete batch (raw's fastest at-least-once pattern)
    raw: ReceiveMessage of ten (long poll), json.loads each, then one
    DeleteMessageBatch of the ten, failures checked. courier: a Worker per
    queue (``--limit`` its share, prefetch 10), the full consume stack
    decoding into the pydantic model, acknowledgements by DeleteMessageBatch
    after handling.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from workload import SendEmail, in_fresh_process, payload

from courier import Bus
from courier.worker import Worker, WorkerOptions
from courier_sqs import SqsTransport

KEY, SECRET, REGION = "bench", "bench-secret", "us-east-1"
#: Shared with the spawned children through the environment.
TAG = os.environ.setdefault("COURIER_BENCH_TAG", f"bench{uuid.uuid4().hex[:8]}")


def raw_client(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )


def dsn(endpoint: str, queue: str, **options: str) -> str:
    address = endpoint.split("://", 1)[1]
    extra = "".join(f"&{name}={value}" for name, value in options.items())
    return (
        f"sqs://{KEY}:{SECRET}@{address}/{queue}?region={REGION}&sslmode=disable"
        f"&wait_time=1&lease=30{extra}"
    )


def buses(endpoint: str, queues: list[str], **options: str) -> list[Bus]:
    """A bus per queue, its transport's default queue, routing SendEmail there.

    Each queue is looked up before the clock starts (its URL and size limit),
    as raw looks up each queue's URL.
    """
    made = []
    for queue in queues:
        transport = SqsTransport(
            dsn(endpoint, queue, **options), name="bench", serializer=_serializer()
        )
        transport.info(queue)
        bus = Bus(transports={"bench": transport})
        bus.route(SendEmail, "bench")
        made.append(bus)
    return made


def close(made: list[Bus]) -> None:
    for bus in made:
        bus.close()


def _serializer() -> Any:
    from courier.registry import MessageRegistry
    from courier.serializer import JsonSerializer

    registry = MessageRegistry()
    registry.register(SendEmail)
    return JsonSerializer(registry)


def shares(queues: list[str], count: int) -> list[range]:
    per = count // len(queues)
    return [range(i * per, (i + 1) * per) for i in range(len(queues))]


# -- publishing ----------------------------------------------------------------


def raw_publish_batches(endpoint: str, queues: list[str], count: int) -> float:
    client = raw_client(endpoint)
    urls = [client.get_queue_url(QueueName=queue)["QueueUrl"] for queue in queues]
    started = time.perf_counter()
    for url, numbers in zip(urls, shares(queues, count), strict=True):
        for start in range(numbers.start, numbers.stop, 10):
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": json.dumps(payload(n)),
                    "MessageAttributes": {
                        "id": {"DataType": "String", "StringValue": uuid.uuid4().hex}
                    },
                }
                for i, n in enumerate(range(start, min(start + 10, numbers.stop)))
            ]
            answer = client.send_message_batch(QueueUrl=url, Entries=entries)
            if answer.get("Failed"):
                raise RuntimeError(f"raw publisher: {answer['Failed']}")
    return count / (time.perf_counter() - started)


def courier_publish_batches(endpoint: str, queues: list[str], count: int, **options: str) -> float:
    made = buses(endpoint, queues, **options)
    started = time.perf_counter()
    for bus, numbers in zip(made, shares(queues, count), strict=True):
        bus.dispatch_many([SendEmail(**payload(n)) for n in numbers])
    elapsed = time.perf_counter() - started
    close(made)
    return count / elapsed


def courier_publish_batches_in_turn(endpoint: str, queues: list[str], count: int) -> float:
    return courier_publish_batches(endpoint, queues, count, batches_in_flight="1")


def raw_publish_each(endpoint: str, queues: list[str], count: int) -> float:
    client = raw_client(endpoint)
    urls = [client.get_queue_url(QueueName=queue)["QueueUrl"] for queue in queues]
    started = time.perf_counter()
    for url, numbers in zip(urls, shares(queues, count), strict=True):
        for n in numbers:
            client.send_message(
                QueueUrl=url,
                MessageBody=json.dumps(payload(n)),
                MessageAttributes={"id": {"DataType": "String", "StringValue": uuid.uuid4().hex}},
            )
    return count / (time.perf_counter() - started)


def courier_publish_each(endpoint: str, queues: list[str], count: int) -> float:
    made = buses(endpoint, queues)
    started = time.perf_counter()
    for bus, numbers in zip(made, shares(queues, count), strict=True):
        for n in numbers:
            bus.dispatch(SendEmail(**payload(n)))
    elapsed = time.perf_counter() - started
    close(made)
    return count / elapsed


# -- consuming -----------------------------------------------------------------


def raw_consume(endpoint: str, queues: list[str], count: int) -> float:
    client = raw_client(endpoint)
    urls = [client.get_queue_url(QueueName=queue)["QueueUrl"] for queue in queues]
    started = time.perf_counter()
    for url, numbers in zip(urls, shares(queues, count), strict=True):
        handled = 0
        while handled < len(numbers):
            messages = client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,
                VisibilityTimeout=30,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            ).get("Messages", [])
            for message in messages:
                json.loads(message["Body"])  # the handling
            handled += len(messages)
            if messages:
                answer = client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                        for i, m in enumerate(messages)
                    ],
                )
                if answer.get("Failed"):
                    raise RuntimeError(f"raw consumer: {answer['Failed']}")
    return count / (time.perf_counter() - started)


def courier_consume(endpoint: str, queues: list[str], count: int) -> float:
    made = buses(endpoint, queues)
    handled = 0

    def send_email(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    workers = []
    for bus, numbers in zip(made, shares(queues, count), strict=True):
        bus.add_handler(send_email, SendEmail)
        workers.append(Worker(bus, ["bench"], options=WorkerOptions(limit=len(numbers))))
    started = time.perf_counter()
    for worker in workers:
        worker.run()
    elapsed = time.perf_counter() - started
    close(made)
    assert handled == count, handled
    return count / elapsed


# -- the harness ---------------------------------------------------------------


def fill(endpoint: str, queues: list[str], count: int) -> None:
    made = buses(endpoint, queues)
    for bus, numbers in zip(made, shares(queues, count), strict=True):
        bus.dispatch_many([SendEmail(**payload(n)) for n in numbers])
    close(made)


def measure(
    endpoint: str, case: Callable[..., float], count: int, backlog: int, prefill: bool
) -> float:
    """Run ``case`` in a fresh process on fresh queues; messages per second."""
    run = uuid.uuid4().hex[:6]
    queues = [f"{TAG}-{run}-{i}" for i in range(max(1, count // backlog))]
    client = raw_client(endpoint)
    urls = [client.create_queue(QueueName=queue)["QueueUrl"] for queue in queues]
    if prefill:
        fill(endpoint, queues, count)
    rate = float(in_fresh_process(case, (endpoint, queues, count), timeout=900))
    left = 0
    for url in urls:
        attributes = client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        left += sum(int(value) for value in attributes.values())
        client.delete_queue(QueueUrl=url)
    client.close()
    expected = 0 if prefill else count
    if left != expected:
        raise SystemExit(f"{case.__name__}: {left} messages left, expected {expected}")
    return rate


CASES: list[tuple[str, Callable[..., float], Callable[..., float], bool]] = [
    (
        "publish, batches of 10, one request at a time",
        raw_publish_batches,
        courier_publish_batches_in_turn,
        False,
    ),
    (
        "  courier keeping 8 batches in flight (its default)",
        raw_publish_batches,
        courier_publish_batches,
        False,
    ),
    ("publish, one at a time", raw_publish_each, courier_publish_each, False),
    (
        "consume, receive 10 + delete batch (raw's fastest)",
        raw_consume,
        courier_consume,
        True,
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("moto's server did not start") from None
            time.sleep(0.1)
    return server, f"http://127.0.0.1:{port}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=40, help="most messages per queue")
    args = parser.parse_args(argv)
    server, endpoint = start_server()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    try:
        print(
            f"{args.messages:,} messages of ~{len(json.dumps(payload(0)))} bytes over "
            f"{max(1, args.messages // args.backlog)} queues of {args.backlog}, moto's server, "
            f"median of {args.runs} run(s), messages/s\n"
        )
        header = f"{'case':<52} {'raw boto3':>10} {'courier':>10} {'ratio':>7}"
        print(header)
        print("-" * len(header))
        for title, raw, ours, prefill in CASES:
            raw_rates, our_rates = [], []
            for _ in range(args.runs):
                raw_rates.append(measure(endpoint, raw, args.messages, args.backlog, prefill))
                our_rates.append(measure(endpoint, ours, args.messages, args.backlog, prefill))
            raw_rate, our_rate = statistics.median(raw_rates), statistics.median(our_rates)
            print(f"{title:<52} {raw_rate:>10,.0f} {our_rate:>10,.0f} {our_rate / raw_rate:>6.0%}")
            sys.stdout.flush()
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
