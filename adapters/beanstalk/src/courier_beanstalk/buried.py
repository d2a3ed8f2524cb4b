"""Buried jobs: beanstalkd's own dead letters, listed and kicked one by one.

courier's failure transport is where failed messages go; a job is buried
only as the backstop (``reject`` with no failure transport configured, or
a record too large for it), or by another program sharing the tube. An
operator still needs to see those and put them back.

beanstalkd shows one buried job per tube: ``peek-buried`` gives the oldest,
and nothing gives the next. To list them all, courier walks job ids
downwards from the newest (``stats-job`` on each: its tube and state) until
it has found as many as ``stats-tube`` counts, has seen every job the
server holds, or has looked at ``scan_limit`` ids. Ids are never reused by
a running server, so the walk is exact; its cost grows with the number of
jobs put since the oldest buried one, hence the limit, and the listing says
whether it is complete. The newest id is learnt by putting (and at once
deleting) a delayed probe job in the tube ``courier-probe``.

A job is put back with ``kick-job`` after checking it is buried: never
``kick``, which, with nothing buried, wakes delayed jobs early, and
``kick-job`` itself would wake a delayed one.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from courier.envelope import Envelope
from courier.transports.buried import BuriedListing, BuriedMessage
from courier_beanstalk.connection import Connection
from courier_beanstalk.options import MAX_DELAY

__all__ = [
    "PROBE_TUBE",
    "REASON",
    "BuriedJob",
    "BuriedJobs",
    "find",
    "generic",
    "generic_listing",
    "job_id",
    "kick",
    "listing",
    "remove",
]

PROBE_TUBE = "courier-probe"

#: What a buried job says about itself: beanstalkd keeps no reason (another
#: program sharing the tube may have buried it too: the docs say so).
REASON = "buried by beanstalkd (the dead-letter write failed, or no failure transport)"

#: A job id as an operator types it: beanstalkd's ids are unsigned 64-bit numbers.
_JOB_ID = re.compile(r"[1-9][0-9]{0,19}")

#: Decodes a buried job's bytes: (envelope, None) or (None, why not).
Decode = Callable[[bytes, str, int], tuple[Envelope | None, str | None]]


@dataclass(frozen=True)
class BuriedJob:
    """One buried job, decoded where courier can read it."""

    job_id: int
    queue: str
    #: The job exactly as beanstalkd keeps it.
    body: bytes
    #: The message, if the job is one courier can decode; else ``error`` says why.
    envelope: Envelope | None
    error: str | None
    #: beanstalkd's priority number (lower first).
    priority: int
    #: Seconds since the job was put.
    age: int
    #: How often it was reserved, buried and kicked (``stats-job``).
    reserves: int
    buries: int
    kicks: int


@dataclass(frozen=True)
class BuriedJobs:
    """Buried jobs of one tube, by job id."""

    queue: str
    jobs: list[BuriedJob]
    #: How many jobs the tube has buried (``stats-tube``), listed or not.
    total: int
    #: False when the walk over job ids stopped at ``scan_limit`` first.
    complete: bool


def _buried(
    connection: Connection, job_id: int, stats: dict[str, Any], decode: Decode
) -> BuriedJob | None:
    body = connection.peek(job_id)
    if body is None:
        return None
    envelope, error = decode(body, str(stats["tube"]), job_id)
    return BuriedJob(
        job_id=job_id,
        queue=str(stats["tube"]),
        body=body,
        envelope=envelope,
        error=error,
        priority=int(stats["pri"]),
        age=int(stats["age"]),
        reserves=int(stats["reserves"]),
        buries=int(stats["buries"]),
        kicks=int(stats["kicks"]),
    )


def _newest_id(connection: Connection) -> int:
    """The id the next job would get: every existing job's id is below it."""
    probe = connection.put(PROBE_TUBE, b"courier probe", priority=0, delay=MAX_DELAY, ttr=1)
    connection.delete_any(probe)
    return probe


def listing(
    connection: Connection, tube: str, decode: Decode, *, limit: int, scan_limit: int
) -> BuriedJobs:
    stats = connection.stats_tube(tube)
    total = int(stats["current-jobs-buried"]) if stats else 0
    wanted = min(total, limit)
    found: dict[int, BuriedJob] = {}
    first = connection.peek_first(tube, "buried") if wanted else None
    if first is not None:
        job_stats = connection.stats_job(first[0])
        job = _buried(connection, first[0], job_stats, decode) if job_stats else None
        if job is not None:
            found[job.job_id] = job
    complete = True
    if len(found) < wanted:
        server = connection.stats()
        held = sum(
            int(server[f"current-jobs-{state}"])
            for state in ("ready", "reserved", "delayed", "buried")
        )
        newest = _newest_id(connection)
        seen = 0
        complete = False
        for job_id in range(newest - 1, max(0, newest - 1 - scan_limit), -1):
            job_stats = connection.stats_job(job_id)
            if job_stats is None:
                continue
            seen += 1
            if (
                job_stats["tube"] == tube
                and job_stats["state"] == "buried"
                and job_id not in found
                and (job := _buried(connection, job_id, job_stats, decode)) is not None
            ):
                found[job_id] = job
            if len(found) >= wanted or seen >= held:
                complete = True
                break
        else:
            complete = newest - 1 <= scan_limit
    return BuriedJobs(tube, [found[key] for key in sorted(found)], total, complete)


def find(
    connection: Connection, job_id: int, decode: Decode, tube: str | None = None
) -> BuriedJob | None:
    """The buried job ``job_id`` (in ``tube``, if given), or None."""
    stats = connection.stats_job(job_id)
    if stats is None or stats["state"] != "buried" or (tube and stats["tube"] != tube):
        return None
    return _buried(connection, job_id, stats, decode)


def kick(connection: Connection, job_id: int, tube: str | None = None) -> bool:
    """Put the buried job ``job_id`` back in its tube's ready queue; False if not buried."""
    stats = connection.stats_job(job_id)
    if stats is None or stats["state"] != "buried" or (tube and stats["tube"] != tube):
        return False
    return connection.kick_job(job_id)


def remove(connection: Connection, job_id: int, tube: str | None = None) -> bool:
    """Delete the buried job ``job_id``; False if there is no such buried job."""
    stats = connection.stats_job(job_id)
    if stats is None or stats["state"] != "buried" or (tube and stats["tube"] != tube):
        return False
    return connection.delete_any(job_id)


def job_id(key: str) -> int | None:
    """The job id ``key`` names, or None for anything that is not one (no round trip)."""
    if not _JOB_ID.fullmatch(key):
        return None
    number = int(key)
    return number if number < 2**64 else None


def generic(job: BuriedJob, now: float | None = None) -> BuriedMessage:
    """``job`` as :class:`courier.transports.buried.BuriedMessage`, keyed by its job id."""
    now = time.time() if now is None else now
    return BuriedMessage(
        key=str(job.job_id),
        queue=job.queue,
        body=job.body,
        envelope=job.envelope,
        error=job.error,
        reason=REASON,
        sent_at=now - job.age,
        deliveries=job.reserves,
    )


def generic_listing(jobs: BuriedJobs) -> BuriedListing:
    now = time.time()
    return BuriedListing(
        jobs.queue, [generic(job, now) for job in jobs.jobs], jobs.total, jobs.complete
    )
