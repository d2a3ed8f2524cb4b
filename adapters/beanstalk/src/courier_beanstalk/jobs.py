"""What a courier job looks like in beanstalkd, which has no headers.

A job's body is courier's body and headers packed into one JSON object by
:func:`courier.serializer.pack` (the body kept as a string when it is
UTF-8), so the job stays readable in beanstalkd's tools. Reading it back,
anything that is not such an object gets a reason precise enough to act on
(an empty job, not UTF-8, malformed JSON, a foreign shape), and is kept as
evidence by the invalid-message transport, never retried.

courier's priorities (0-9, 9 most urgent) become beanstalkd's (an unsigned
32-bit number, lower served first) as ``priority_base - priority``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic_core import from_json, to_json

from courier.errors import MessageDecodingFailed
from courier.serializer import INVALID_MESSAGE_TYPE, pack, unpack
from courier.transports.base import Received, Transport, body_limit

if TYPE_CHECKING:
    from courier_beanstalk.reserving import Reserved

__all__ = [
    "JOB_ID_HEADER",
    "beanstalk_priority",
    "courier_priority",
    "decode_job",
    "pack_job",
    "unpack_job",
]

#: Passed to a serializer that reads foreign jobs (format=php): the
#: beanstalkd job id, from which a job without an id of its own gets one
#: that is the same on every delivery.
JOB_ID_HEADER = "beanstalk-job-id"

#: Room for courier's headers around the largest body it keeps.
_HEADERS_ALLOWANCE = 65_536


def beanstalk_priority(priority: int, base: int) -> int:
    """courier's 0-9 (9 most urgent) as beanstalkd's number (lower first)."""
    return base - priority


def courier_priority(number: int, base: int) -> int:
    """The courier priority a beanstalkd number stands for (clamped to 0-9)."""
    return min(9, max(0, base - number))


def pack_job(body: bytes, headers: Mapping[str, str]) -> bytes:
    """:func:`courier.serializer.pack`'s format, written compactly (a quarter of its cost)."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return pack(body, headers)  # the body goes hex-encoded
    return to_json({"headers": headers, "body": text})


def unpack_job(blob: bytes) -> tuple[bytes, dict[str, str]]:
    """Body and headers of a courier job; MessageDecodingFailed says why not."""
    try:
        return unpack(blob)
    except MessageDecodingFailed:
        raise MessageDecodingFailed(_why_not(blob), blob) from None


def _why_not(blob: bytes) -> str:
    """The reason ``blob`` is not a courier job, worked out only when it is not."""
    if not blob.strip():
        return "empty job"
    try:
        blob.decode()
    except UnicodeDecodeError:
        return "the job is not UTF-8 text, so not JSON"
    try:
        data = from_json(blob)
    except ValueError as error:
        return f"malformed JSON: {error}"
    if not isinstance(data, dict):
        return "the job is not a JSON object"
    if "headers" not in data:
        shape = " (a PHP-style job? see format=php)" if "job" in data else ""
        return f"not a courier job: no 'headers'{shape}"
    return "not a courier job: malformed 'headers' or 'body'"


def decode_job(
    transport: Transport, job: Reserved, count: int, generation: int, *, packed: bool
) -> Received:
    """A Received for a reserved job: decoded, or carrying why it could not be.

    ``packed``: courier's format (unpack, then the transport's serializer);
    otherwise the serializer reads the job's bytes itself (format=php).
    """
    job_id = job.job_id
    if not packed:
        return transport.decoded(
            job.body,
            {JOB_ID_HEADER: str(job_id)},
            job_id,
            job.tube,
            delivery_count=count,
            transport_message_id=str(job_id),
            generation=generation,
        )
    # Refused unparsed past the largest record courier keeps, hex-encoded at worst.
    limit = 2 * body_limit(transport.serializer, INVALID_MESSAGE_TYPE) + _HEADERS_ALLOWANCE
    try:
        if len(job.body) > limit:
            raise MessageDecodingFailed(
                f"job of {len(job.body)} bytes exceeds the limit of {limit} bytes"
            )
        body, headers = unpack_job(job.body)
    except MessageDecodingFailed as error:
        received = Received(transport, job_id, job.tube, count, generation)
        received.raw = job.body
        received.raw_headers = {}
        received.error = MessageDecodingFailed(error.reason)
        return received
    return transport.decoded(
        body,
        headers,
        job_id,
        job.tube,
        delivery_count=count,
        transport_message_id=str(job_id),
        generation=generation,
    )
