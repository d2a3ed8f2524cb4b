"""Jobs in the shape PHP workers commonly put on beanstalkd, read by courier.

A PHP application's producer puts ``{"job": "send_email", "data": {...}}``
on a tube. With ``format=php`` a courier worker drains that tube: the job
name picks the message type (``jobs=send_email:email.send,...``; a name
not listed is taken as the wire name itself), and ``data`` becomes the
message, validated like any other. Only types the bus registered are ever
built; a name nobody registered, a shape that is not a job, or data that
does not fit the type raises MessageDecodingFailed / ValidationFailed, so
the job is kept in the invalid-message transport, never retried.

What courier itself writes to such a tube (a dispatch, or a retry of a PHP
job) has the same shape, so PHP workers still sharing the tube can read
it, plus a ``"courier"`` object with courier's headers (id, attempt,
error), which PHP code ignores and courier needs to count attempts::

    {"job": "send_email", "data": {"to": "..."}, "courier": {"courier-id": "...", ...}}

Jobs packed in courier's own format (``{"headers": ..., "body": ...}``) are
read too, so a tube may carry both while a migration is under way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from pydantic_core import from_json, to_json

from courier.envelope import Envelope
from courier.errors import ConfigurationError, MessageDecodingFailed
from courier.serializer import INVALID_MESSAGE_TYPE, JSON, Headers, Serializer
from courier.transports.base import body_limit
from courier_beanstalk.jobs import JOB_ID_HEADER, unpack_job

__all__ = ["JOB_ID_HEADER", "PhpJobSerializer"]

#: Room for the job's wrapper and courier's headers around the data.
_WRAPPER_ALLOWANCE = 65_536

_IMPLIED = frozenset({Headers.CONTENT_TYPE, Headers.TYPE})


class PhpJobSerializer:
    """Wraps the bus's (JSON) serializer to read and write PHP-shaped jobs."""

    content_type = JSON

    def __init__(self, inner: Serializer, jobs: Mapping[str, str] | None = None) -> None:
        if inner.content_type != JSON:
            raise ConfigurationError(
                f"format=php needs a JSON serializer, not {inner.content_type!r}"
            )
        self.inner = inner
        self.max_body = inner.max_body
        #: PHP job name -> courier message type.
        self.jobs = dict(jobs or {})
        #: Message type -> the job name written for it (the first one listed).
        self._names: dict[str, str] = {}
        for job, message_type in self.jobs.items():
            self._names.setdefault(message_type, job)

    def limit_for(self, message_type: str | None) -> int:
        return body_limit(self.inner, message_type or "")

    def job_name(self, message_type: str) -> str:
        """The PHP job name courier writes for ``message_type``."""
        return self._names.get(message_type, message_type)

    # -- writing -------------------------------------------------------------

    def encode(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]:
        body, headers = self.inner.encode(envelope)
        extra = {key: value for key, value in headers.items() if key not in _IMPLIED}
        job = (
            b'{"job":'
            + to_json(self.job_name(envelope.type))
            + b',"data":'
            + body
            + b',"courier":'
            + to_json(extra)
            + b"}"
        )
        return job, {}

    # -- reading -------------------------------------------------------------

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Envelope:
        limit = self.inner.max_body + _WRAPPER_ALLOWANCE
        if len(body) > limit:
            raise MessageDecodingFailed(
                f"job of {len(body)} bytes exceeds the limit of {limit} bytes", body, headers
            )
        try:
            job = from_json(body)
        except ValueError as error:
            raise MessageDecodingFailed(_malformed(body, error), body, headers) from None
        if not isinstance(job, dict):
            raise MessageDecodingFailed("the job is not a JSON object", body, headers)
        if "job" not in job:
            if "headers" in job:  # courier's own format, on a tube shared during a migration
                inner_body, inner_headers = unpack_job(body)
                return self.inner.decode(inner_body, inner_headers)
            raise MessageDecodingFailed("not a PHP job: it has no 'job' name", body, headers)
        name = job["job"]
        if not isinstance(name, str) or not name:
            raise MessageDecodingFailed("the 'job' name is not a non-empty string", body, headers)
        message_type = self.jobs.get(name, name)
        if message_type == INVALID_MESSAGE_TYPE:
            raise MessageDecodingFailed(f"job {_shown(name)} names a reserved type", body, headers)
        data = job.get("data", {})
        if not isinstance(data, dict):
            raise MessageDecodingFailed(
                f"job {_shown(name)}: 'data' is not a JSON object", body, headers
            )
        carried = job.get("courier") or {}
        if not isinstance(carried, dict) or not all(
            isinstance(key, str) and isinstance(value, str) for key, value in carried.items()
        ):
            raise MessageDecodingFailed(
                f"job {_shown(name)}: malformed 'courier' headers", body, headers
            )
        wanted = {**carried, Headers.CONTENT_TYPE: JSON, Headers.TYPE: message_type}
        if not wanted.get(Headers.ID):
            wanted[Headers.ID] = _job_id(job, body, headers)
        try:
            return self.inner.decode(to_json(data), wanted)
        except MessageDecodingFailed as error:
            raise MessageDecodingFailed(
                f"job {_shown(name)}: {error.reason}", body, headers
            ) from None


def _job_id(job: dict[str, object], body: bytes, headers: Mapping[str, str]) -> str:
    """The job's own ``id`` / ``uuid`` if it has one, else one derived from the job.

    Derived from the beanstalkd job id and the bytes, so every delivery of
    the same job has the same envelope id (the failure store keeps it once).
    """
    for key in ("id", "uuid"):
        value = job.get(key)
        if isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable():
            return value
    seed = headers.get(JOB_ID_HEADER, "").encode() + b":" + body
    return hashlib.sha256(seed).hexdigest()[:32]


def _malformed(body: bytes, error: ValueError) -> str:
    try:
        body.decode()
    except UnicodeDecodeError:
        return "the job is not UTF-8 text, so not JSON"
    if not body.strip():
        return "empty job"
    return f"malformed JSON: {error}"


def _shown(text: str) -> str:
    return repr(text[:80] + ("..." if len(text) > 80 else ""))
