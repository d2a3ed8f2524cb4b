"""The options of a ``beanstalk://`` / ``beanstalkd://`` DSN, with their defaults.

``beanstalk://127.0.0.1:11300?queue=email&lease=2``

beanstalkd has no users, passwords or virtual hosts: the DSN is a host, a
port (11300 by default) and the options below. A password written in the
DSN anyway is masked like everywhere else and never sent. Every option is a
query parameter; an unknown one is an error. docs/transports/beanstalk.md
explains each in prose.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from courier.transports.dsn import TransportOptions

__all__ = [
    "DEFAULT_PRIORITY_BASE",
    "MAX_DELAY",
    "MAX_PRIORITY",
    "BeanstalkOptions",
    "check_tube",
]

#: beanstalkd's priorities, delays and TTRs are unsigned 32-bit integers.
MAX_PRIORITY = 2**32 - 1
#: The longest delay beanstalkd accepts, in whole seconds (about 136 years).
MAX_DELAY = 2**32 - 1
#: beanstalkd's (and Pheanstalk's) customary default priority: courier's 0.
DEFAULT_PRIORITY_BASE = 1024

#: Tube names: 1-200 bytes of these characters, not starting with a hyphen.
_TUBE = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9\-+/;.$_()]{0,199}")


def check_tube(name: str) -> str:
    """``name`` if beanstalkd accepts it as a tube name; ValueError otherwise."""
    if not _TUBE.fullmatch(name):
        raise ValueError(
            f"{name[:80]!r} is not a beanstalkd tube name (1-200 of A-Z a-z 0-9 - + / ; . $ _ "
            "( ), not starting with '-')"
        )
    return name


def _job_map(value: object) -> object:
    """``send_email:email.send,resize:image.resize`` -> a dict."""
    if not isinstance(value, str):
        return value
    mapping: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        job, sep, message = item.partition(":")
        if not sep or not job.strip() or not message.strip():
            raise ValueError(f"each jobs= entry is <job name>:<message type>, not {item[:80]!r}")
        if job.strip() in mapping:
            raise ValueError(f"job name {job.strip()[:80]!r} is mapped twice")
        mapping[job.strip()] = message.strip()
    return mapping


class BeanstalkOptions(TransportOptions):
    """DSN options; every default is written here and in docs/transports/beanstalk.md."""

    #: The default tube of this transport (``tube=`` is an alias).
    queue: str = "default"
    #: Seconds a job may be held before beanstalkd gives it to another worker:
    #: the time-to-run (TTR) of every job put without a ``ttr`` of its own.
    #: Rounded up to whole seconds, at least 1. A closed connection's jobs
    #: come back at once; the TTR is for a worker that hangs or vanishes.
    lease: float = Field(default=60.0, gt=0, le=MAX_DELAY)
    #: beanstalkd priority of courier's priority 0; courier's ``p`` (0-9, 9
    #: most urgent) is put as ``priority_base - p`` (lower is served first).
    priority_base: int = Field(default=DEFAULT_PRIORITY_BASE, ge=9, le=MAX_PRIORITY)
    #: Read each job's ``reserves`` (``stats-job``) as its delivery count: one
    #: more round trip per job, so off by default (see the docs).
    delivery_count: bool = False
    #: ``courier`` (headers and body packed as JSON) or ``php``: jobs shaped
    #: ``{"job": "send_email", "data": {...}}`` as PHP workers write them.
    format: Literal["courier", "php"] = "courier"
    #: ``format=php`` only: ``<job name>:<message type>,...``; a job name not
    #: listed is taken as the message type's wire name itself.
    jobs: Annotated[dict[str, str], BeforeValidator(_job_map)] = Field(default_factory=dict)
    #: Message bodies larger than this many bytes are refused before sending;
    #: default: the server's ``max-job-size``, read on connect. The job as put
    #: (body and courier's headers) must fit ``max-job-size`` too.
    max_message_size: int | None = Field(default=None, ge=1)
    #: Seconds to open the TCP connection.
    connect_timeout: float = Field(default=5.0, gt=0)
    #: Seconds to wait for any reply (beyond a reserve's own wait) before the
    #: connection counts as lost: how long a silent network goes unnoticed.
    io_timeout: float = Field(default=10.0, gt=0)
    #: Seconds between looks while ``receive`` waits less than a whole second
    #: (beanstalkd waits in whole seconds) or a held job is in its last second.
    poll_interval: float = Field(default=0.05, gt=0, le=1.0)

    @model_validator(mode="before")
    @classmethod
    def _tube_is_an_alias_of_queue(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "tube" in data:
            values = dict(data)
            tube = values.pop("tube")
            if "queue" in values and values["queue"] != tube:
                raise ValueError("tube= is an alias of queue=: give one of them")
            values["queue"] = tube
            return values
        return data

    @field_validator("queue")
    @classmethod
    def _check_queue(cls, queue: str) -> str:
        return check_tube(queue)

    @field_validator("jobs")
    @classmethod
    def _check_jobs(cls, jobs: dict[str, str]) -> dict[str, str]:
        for job, message in jobs.items():
            if len(job) > 200 or len(message) > 200:
                raise ValueError("job names and message types are at most 200 characters")
        return jobs

    @model_validator(mode="after")
    def _jobs_need_php(self) -> BeanstalkOptions:
        if self.jobs and self.format != "php":
            raise ValueError("jobs= maps PHP job names: it needs format=php")
        return self

    @property
    def ttr(self) -> int:
        """The default time-to-run in whole seconds, as beanstalkd takes it."""
        return whole_seconds(self.lease, at_least=1)


def whole_seconds(seconds: float, *, at_least: int = 0) -> int:
    """``seconds`` rounded up to beanstalkd's whole seconds (never early), clamped."""
    if not math.isfinite(seconds) or seconds <= 0:
        return at_least
    # A float a hair above a whole number (1.0000000001 from arithmetic) is that number.
    return max(at_least, min(MAX_DELAY, math.ceil(round(seconds, 6))))
