"""What every broker benchmark sends, and how it runs a case: shared by the bench_* scripts.

The same message (about 200 bytes of JSON) on every broker, so the rates
of different transports can be set side by side; and each case in a fresh
process (``spawn``), so one case's allocations, threads and connections
never slow the next.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from typing import Any, ClassVar

from courier import Message

__all__ = ["SendEmail", "drop_amqp_queue", "in_fresh_process", "payload"]


class SendEmail(Message):
    message_name: ClassVar[str] = "bench.send-email"

    n: int
    to: str
    subject: str
    body: str


def payload(n: int) -> dict[str, Any]:
    """About 200 bytes of JSON."""
    return {
        "n": n,
        "to": f"customer{n:06d}@example.com",
        "subject": f"Your order {n:08d} has shipped",
        "body": "Hello, your parcel left our warehouse today and should arrive soon. "
        "Thanks for shopping with us!",
    }


def _child(target: Callable[..., Any], args: tuple[Any, ...], results: Any) -> None:
    results.put(target(*args))


def in_fresh_process(target: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    """``target(*args)`` run in a new interpreter; what it returned."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(target, args, results))
    process.start()
    result = results.get(timeout=timeout)
    process.join()
    return result


def drop_amqp_queue(url: str, queue: str) -> int:
    """Delete ``queue`` and its dead-letter queue from RabbitMQ; how many messages it still held."""
    import pika  # type: ignore[import-untyped]

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        left = int(channel.queue_declare(queue, passive=True).method.message_count)
        channel.queue_delete(queue)
        channel.queue_delete(f"{queue}.dead")
    finally:
        connection.close()
    return left
