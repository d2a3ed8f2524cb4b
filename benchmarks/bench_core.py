"""courier's own cost: dispatch + consume on memory:// against a bare pydantic loop.

The bare loop does the least any Python job queue must do per message:
build (validate) the message, serialize it, deserialize it, call the
handler, with pydantic's public API. courier does the same through the bus,
the middleware stacks, the memory transport and a worker that acknowledges
in batches. Both run in this process, in this run; the ratio is the figure.

Variants:

- ``serialized``: ``memory://?serialize=true`` — every message becomes bytes
  and back, as with a real broker (the like-for-like comparison);
- ``objects``: ``memory://`` — messages stay Python objects;
- ``chunked``: dispatch 1,000 then consume them, repeatedly (a producer and
  a worker taking turns); ``all at once``: dispatch everything, then consume
  (100k messages alive at once: the garbage collector's worst case).

The memory transport runs with ``history=0``: its record of the latest sent
and acknowledged envelopes exists for test assertions, and keeping 2,000
envelopes alive costs the garbage collector more than courier's own work.

Both sides are timed in CPU seconds of this process (``time.process_time``),
not wall-clock seconds: nothing here waits for I/O, and on a shared machine
wall-clock time mostly measures the other processes.

    python benchmarks/bench_core.py [--messages 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import ClassVar

from courier import Bus, Message
from courier.worker import Worker, WorkerOptions


class SendEmail(Message):
    """About 190 bytes of JSON, like PERFORMANCE.md's messages."""

    message_name: ClassVar[str] = "bench.send_email"

    to: str
    subject: str
    body: str
    template: str
    user_id: int


BODY = "Thanks for signing up. Your account is ready; click the link to confirm it."


def make(n: int) -> SendEmail:
    return SendEmail(
        to=f"user{n}@example.com",
        subject=f"Welcome to courier, user {n}",
        body=BODY,
        template="welcome-v2",
        user_id=n,
    )


def bare(messages: int) -> float:
    handled = 0

    def handler(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    started = time.process_time()
    for n in range(messages):
        data = make(n).model_dump_json()
        handler(SendEmail.model_validate_json(data))
    elapsed = time.process_time() - started
    assert handled == messages
    return messages / elapsed


def courier(messages: int, *, serialize: bool, chunk: int | None) -> float:
    # history=0: the memory transport's record of sent and acknowledged
    # envelopes is for test assertions; no broker keeps one in the process.
    dsn = f"memory://?serialize={str(serialize).lower()}&history=0"
    bus = Bus(transports={"bench": dsn})
    bus.route(SendEmail, "bench")
    handled = 0

    @bus.handler(SendEmail)
    def handler(message: SendEmail) -> None:
        nonlocal handled
        handled += 1

    options = WorkerOptions(stop_when_empty=True, sleep=0, prefetch=100, ack_batch=100)
    step = chunk or messages
    started = time.process_time()
    for first in range(0, messages, step):
        for n in range(first, min(first + step, messages)):
            bus.dispatch(make(n))
        Worker(bus, ["bench"], options=options).run()
    elapsed = time.process_time() - started
    assert handled == messages, (handled, messages)
    bus.close()
    return messages / elapsed


VARIANTS = [(serialize, chunk) for serialize in (True, False) for chunk in (1000, None)]


def label(serialize: bool, chunk: int | None) -> str:
    return (
        f"courier, {'serialized' if serialize else 'objects'}, "
        f"{'chunked' if chunk else 'all at once'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    count, runs = args.messages, args.runs

    # Each run measures the bare loop right before each courier variant and
    # keeps the ratio of the pair: on a shared machine the load changes from
    # second to second, and a ratio of two medians taken minutes apart would
    # mostly measure that.
    bare_rates: list[float] = []
    rates: dict[str, list[float]] = {label(*v): [] for v in VARIANTS}
    ratios: dict[str, list[float]] = {label(*v): [] for v in VARIANTS}
    for _ in range(runs):
        for serialize, chunk in VARIANTS:
            baseline = bare(count)
            rate = courier(count, serialize=serialize, chunk=chunk)
            bare_rates.append(baseline)
            rates[label(serialize, chunk)].append(rate)
            ratios[label(serialize, chunk)].append(rate / baseline)

    median = statistics.median
    print(f"{count:,} messages, median of {runs} runs, one process")
    print(f"{'':42} {'msgs/s':>10} {'ratio':>7}")
    print(f"{'bare pydantic loop':42} {median(bare_rates):>10,.0f} {1:>7.0%}")
    for name in rates:
        print(f"{name:42} {median(rates[name]):>10,.0f} {median(ratios[name]):>7.0%}")
    print("ratio: the median of each run's courier / the bare loop measured just before it")


if __name__ == "__main__":
    main()
