"""``beanstalk://`` and ``beanstalkd://``: courier's verbs on beanstalkd.

::

    transport = BeanstalkTransport.from_dsn(
        Dsn.parse("beanstalk://127.0.0.1:11300?queue=email&lease=2"),
        name="email", serializer=serializer,
    )

Tubes are queues. A message is a job put with its priority, delay and TTR
always set (from the envelope, else the options); ``receive`` reserves,
``ack`` deletes, ``renew`` touches, ``reject`` buries, ``release`` releases.
A retry puts the new envelope (its attempt raised) with the delay and then
deletes the old job: beanstalkd cannot change a job's body, where courier's
headers live. Events go to one tube per subscription. Every greenstalk and
beanstalkd detail lives in :mod:`courier_beanstalk.connection` (how a
reserve waits, in :mod:`courier_beanstalk.reserving`; reconnects in
:mod:`courier_beanstalk.link`); the job format in
:mod:`courier_beanstalk.jobs`; the options and their defaults in
:mod:`courier_beanstalk.options`; the prose in docs/transports/beanstalk.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from courier.envelope import Envelope
from courier.errors import (
    ConfigurationError,
    ConnectionLost,
    MessageTooLarge,
    PublishNotConfirmed,
    TransportError,
)
from courier.serializer import Serializer
from courier.transports.base import (
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
    subscription_queue,
)
from courier.transports.buried import BuriedListing, BuriedMessage
from courier.transports.dsn import Dsn
from courier_beanstalk import buried as burial
from courier_beanstalk import subscriptions as registry
from courier_beanstalk.connection import Connection
from courier_beanstalk.jobs import decode_job, pack_job
from courier_beanstalk.link import Link
from courier_beanstalk.options import MAX_DELAY, BeanstalkOptions, check_tube, whole_seconds
from courier_beanstalk.php import PhpJobSerializer
from courier_beanstalk.reserving import Reserved

__all__ = ["BeanstalkTransport"]

logger = logging.getLogger("courier.beanstalk")

DEFAULT_PORT = 11300

#: Seconds a publisher trusts the subscriptions it read from a topic's record.
RECORD_TTL = 1.0

#: Where ``transport_message_id`` sits in an Envelope's fields.
_MESSAGE_ID = Envelope._fields.index("transport_message_id")


class BeanstalkTransport(Transport):
    """beanstalkd through one greenstalk connection, shared under a lock."""

    capabilities = Capabilities(
        delay=True,
        max_delay=float(MAX_DELAY),
        priority=True,
        lease=True,
        ttr=True,
        native_dead_letter=True,
        delivery_count=False,
        listable=False,
        durable=True,
        unacked_on_reconnect=Unacked.RETURNED,
    )

    def __init__(self, dsn: Dsn | str, *, name: str = "beanstalk", serializer: Serializer) -> None:
        self.dsn = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
        self.options = options = self.dsn.option_model(BeanstalkOptions)
        if self.dsn.path not in ("", "/"):
            raise ConfigurationError(
                f"a beanstalk:// DSN has no path; name the tube with queue= (DSN {self.dsn})"
            )
        if options.format == "php":
            serializer = PhpJobSerializer(serializer, options.jobs)
        super().__init__(name=name, queue=options.queue, serializer=serializer)
        self.capabilities = replace(
            type(self).capabilities,
            delivery_count=options.delivery_count,
            max_message_size=options.max_message_size,
        )
        self._packed = options.format == "courier"
        self._base = options.priority_base
        self._ttr = options.ttr
        self._count = options.delivery_count
        self._tubes = {self.queue}
        #: The tubes of each list of queues ``receive`` was asked for, checked.
        self._receiving: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._link = Link(
            name,
            self.dsn.host or "localhost",
            self.dsn.port or DEFAULT_PORT,
            options,
            self.dsn.mask,
            self._connected,
        )
        #: Subscription records read lately, by topic: (until, names).
        self._records: dict[str, tuple[float, list[str]]] = {}

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> BeanstalkTransport:
        return cls(dsn, name=name, serializer=serializer)

    # -- the connection --------------------------------------------------------

    def _live(self) -> Connection:
        return self._link.live()

    def _connected(self, connection: Connection) -> None:
        """A new connection: its generation, and the server's size limit."""
        limit = connection.max_job_size
        if self.options.max_message_size is not None:
            limit = min(limit, self.options.max_message_size)
        self.capabilities = replace(self.capabilities, max_message_size=limit)
        self.generation = connection.generation

    def _tube(self, name: str) -> str:
        if name not in self._tubes:
            try:
                check_tube(name)
            except ValueError as error:
                raise ConfigurationError(str(error)) from None
            self._tubes.add(name)
        return name

    def _same_server(self, received: Received, connection: Connection) -> bool:
        return self._link.same_server(received.generation, connection)

    # -- sending -----------------------------------------------------------

    def _job(self, envelope: Envelope) -> bytes:
        """The job's bytes; MessageTooLarge before any I/O for a body over a limit."""
        body, headers = self.encode(envelope)
        return pack_job(body, headers) if self._packed else body

    def _put(
        self, connection: Connection, tube: str, envelope: Envelope, job: bytes, delay: float
    ) -> int:
        if len(job) > connection.max_job_size:
            raise MessageTooLarge(len(job), connection.max_job_size)
        ttr = self._ttr if envelope.ttr is None else whole_seconds(envelope.ttr, at_least=1)
        return connection.put(
            tube,
            job,
            self._base - envelope.priority,  # beanstalk_priority(), inlined
            whole_seconds(delay) if delay else 0,
            ttr,
        )

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        tube = self.queue if queue is None else self._tube(queue)
        job = self._job(envelope)
        connection = self._link.live()
        job_id = self._put(connection, tube, envelope, job, envelope.delay)
        # envelope.with_(transport_message_id=...), without its checks: the hot path.
        return Envelope._build((*envelope[:_MESSAGE_ID], str(job_id), *envelope[_MESSAGE_ID + 1 :]))

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        """One put after another (beanstalkd has no batch); the failed ones named."""
        tube = self._tube(queue or self.queue)
        sent: list[Envelope] = []
        failed: list[str] = []
        last: Exception | None = None
        for index, envelope in enumerate(envelopes):
            try:
                job = self._job(envelope)
                job_id = self._put(self._live(), tube, envelope, job, envelope.delay)
            except (MessageTooLarge, PublishNotConfirmed) as error:
                failed.append(envelope.id)
                last = error
                continue
            except TransportError as error:
                # The connection is gone: this one and the rest were not sent.
                failed += [rest.id for rest in envelopes[index:]]
                last = error
                break
            sent.append(envelope.with_(transport_message_id=str(job_id)))
        if failed:
            raise PublishNotConfirmed(
                f"{len(failed)} of {len(envelopes)} messages were not sent: {last}", failed
            ) from last
        return sent

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        """A copy in each subscription's tube: those given and those ``setup`` recorded."""
        job = self._job(envelope)
        try:
            names = sorted({*subscriptions, *self._recorded(topic)})
        except TransportError as error:
            raise PublishNotConfirmed(
                f"event {envelope.id} to topic {topic!r} was not sent: {error}", [envelope.id]
            ) from error
        failures = 0
        last: Exception | None = None
        for name in names:
            tube = self._tube(subscription_queue(topic, name))
            try:
                self._put(self._live(), tube, envelope, job, envelope.delay)
            except (TransportError, MessageTooLarge) as error:
                failures += 1
                last = error
        if failures:
            raise PublishNotConfirmed(
                f"event {envelope.id} reached {len(names) - failures} of {len(names)} "
                f"subscriptions of {topic!r}: {last}",
                [envelope.id],
            ) from last

    def subscriptions(self, topic: str) -> list[str]:
        names = registry.read(self._live(), topic)
        self._records[topic] = (time.monotonic() + RECORD_TTL, names)
        return names

    def _recorded(self, topic: str) -> list[str]:
        """The recorded subscriptions, read again at most every RECORD_TTL seconds."""
        cached = self._records.get(topic)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return self.subscriptions(topic)

    # -- receiving and settling ----------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        if max < 1:
            return []
        tubes = self._receiving.get(tuple(queues) if queues else ())
        if tubes is None:
            names = dict.fromkeys(queues) if queues else [self.queue]
            tubes = self._receiving[tuple(queues) if queues else ()] = tuple(
                self._tube(name) for name in names
            )
        connection = self._link.live()
        # Counting deliveries, reserve one job at a time: a job reserved ahead
        # of the one being handled would be counted too if the handler killed
        # the worker, and blamed for a death it did not cause.
        most = 1 if self._count else max
        jobs = connection.reserve(tubes, most, timeout, count=self._count)
        generation = connection.generation
        return [self._received(job, generation) for job in jobs]

    def _received(self, job: Reserved, generation: int) -> Received:
        count = job.reserves if self._count and job.reserves > 0 else 1
        return decode_job(self, job, count, generation, packed=self._packed)

    def ack(self, received: Received) -> None:
        self.ack_many([received])

    def ack_many(self, received: Sequence[Received]) -> None:
        """Delete the jobs, those of an older connection too (see docs: "reconnects")."""
        if not received:
            return
        try:
            missing = self._delete(self._live(), received)
        except ConnectionLost:
            # Found dead on the way: its jobs are back in the ready queue, and
            # deleting them on a new connection keeps them from running twice.
            missing = self._delete(self._live(), received)
        for job_id, held in missing:
            self._log_missing(job_id, held, "acknowledged")

    def _delete(
        self, connection: Connection, received: Sequence[Received]
    ) -> list[tuple[int, bool]]:
        current = connection.generation
        job_ids: list[int] = []
        for item in received:
            if item.generation == current or self._same_server(item, connection):
                job_ids.append(item.handle)
            else:
                logger.debug("not deleting %r: it came from a beanstalkd since restarted", item)
        return connection.delete(job_ids)

    def _log_missing(self, job_id: int, held: bool, what: str) -> None:
        if held:
            logger.warning(
                "job %d of transport %r could not be %s: its TTR ran out first, so another "
                "worker may run it again (raise lease=, or dispatch it with a longer ttr)",
                job_id,
                self.name,
                what,
            )
        else:
            logger.debug(
                "job %d was not %s: beanstalkd gave it back when an older connection closed, "
                "and it has been taken since",
                job_id,
                what,
            )

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """Put the new attempt with its delay, then delete the old job."""
        job = self._job(envelope)
        connection = self._live()
        self._put(connection, self._tube(received.queue), envelope, job, delay)
        if received.generation == connection.generation or self._same_server(received, connection):
            for job_id, held in connection.delete([received.handle]):
                self._log_missing(job_id, held, "deleted after its retry was put")

    def reject(self, received: Received, reason: str) -> None:
        """Bury the job (beanstalkd keeps no reason: the log does)."""
        connection = self._live()
        if received.generation != connection.generation:
            logger.warning(
                "could not bury %r (%s): it came on a lost connection, and beanstalkd gave it "
                "back; it will be delivered again",
                received,
                reason,
            )
            return
        if connection.bury(received.handle):
            logger.warning(
                "buried job %d of tube %r (%s); kick_job(%d) puts it back",
                received.handle,
                received.queue,
                reason,
                received.handle,
            )
        else:
            self._log_missing(received.handle, True, "buried")

    def release(self, received: Received) -> None:
        connection = self._link.current
        if connection is None or received.generation != connection.generation:
            logger.debug("%r came on a lost connection: beanstalkd gave it back", received)
            return
        if not connection.release(received.handle):
            logger.debug("job %d was no longer reserved when released", received.handle)

    def renew(self, received: Received) -> None:
        """``touch``, on the connection that reserved the job (never a new one)."""
        connection = self._link.current
        if connection is None or received.generation != connection.generation:
            return  # given back when its connection closed: nothing to renew
        if connection.touch(received.handle) is False:
            logger.warning(
                "the TTR of job %d (%r) ran out before it was renewed: another worker may run "
                "it again",
                received.handle,
                received,
            )

    def message_key(self, received: Received) -> str | None:
        """The job id: it stays with the job through every reserve."""
        return f"job-{received.handle}" if isinstance(received.handle, int) else None

    def keepalive_interval(self) -> float:
        """Often enough for the shortest TTR beanstalkd allows (1 s) and then some."""
        return min(self._ttr, 2) / 4

    # -- administration ----------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """beanstalkd creates tubes on use: check the names, record the subscriptions."""
        for name in (self.queue, *queues):
            self._tube(name)
        for topic, names in (topics or {}).items():
            for name in names:
                self._tube(subscription_queue(topic, name))
        connection = self._live()
        for topic, names in (topics or {}).items():
            if names:
                registry.record(connection, topic, names)
                self._records.pop(topic, None)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """From ``stats-tube``: a tube beanstalkd does not have holds nothing."""
        connection = self._live()
        result = []
        for name in queues or [self.queue]:
            counts = connection.stats_tube(self._tube(name))
            if counts is None:
                result.append(QueueStats(name, ready=0, in_flight=0, delayed=0, dead=0))
                continue
            result.append(
                QueueStats(
                    name,
                    ready=int(counts["current-jobs-ready"]),
                    in_flight=int(counts["current-jobs-reserved"]),
                    delayed=int(counts["current-jobs-delayed"]),
                    dead=int(counts["current-jobs-buried"]),
                )
            )
        return result

    def queues(self) -> list[str]:
        """Every tube beanstalkd has now (one exists while it holds or watches something)."""
        return [
            tube
            for tube in self._live().tubes()
            if not tube.startswith(registry.PREFIX) and tube != burial.PROBE_TUBE
        ]

    def close(self) -> None:
        self._link.close()

    # -- buried jobs (beanstalkd's own dead letters) ---------------------------

    def buried(
        self, queue: str | None = None, *, limit: int = 100, scan_limit: int = 100_000
    ) -> burial.BuriedJobs:
        """Up to ``limit`` buried jobs of ``queue``; see :mod:`courier_beanstalk.buried`."""
        tube = self._tube(queue or self.queue)
        return burial.listing(
            self._live(), tube, self._decode_buried, limit=limit, scan_limit=scan_limit
        )

    def find_buried(self, job_id: int, queue: str | None = None) -> burial.BuriedJob | None:
        return burial.find(self._live(), job_id, self._decode_buried, queue)

    def kick_job(self, job_id: int, queue: str | None = None) -> bool:
        """Put buried job ``job_id`` back in its tube (``kick-job``, only if it is buried)."""
        kicked = burial.kick(self._live(), job_id, queue)
        if kicked:
            logger.info("kicked buried job %d back to its tube", job_id)
        return kicked

    def remove_buried(self, job_id: int, queue: str | None = None) -> bool:
        """Delete buried job ``job_id``; False if there is no such buried job."""
        return burial.remove(self._live(), job_id, queue)

    # -- courier.transports.buried.HoldsBuried: keys are job ids -------------

    def buried_messages(self, queue: str | None = None, *, limit: int = 100) -> BuriedListing:
        """:meth:`buried`, as ``courier failed`` lists every broker's buried messages."""
        return burial.generic_listing(self.buried(queue, limit=limit))

    def buried_message(self, key: str, queue: str | None = None) -> BuriedMessage | None:
        job_id = burial.job_id(key)
        job = None if job_id is None else self.find_buried(job_id, queue)
        return None if job is None else burial.generic(job)

    def kick_buried(self, key: str, queue: str | None = None) -> bool:
        """:meth:`kick_job`: ``kick-job`` on that job alone, never ``kick``."""
        job_id = burial.job_id(key)
        return job_id is not None and self.kick_job(job_id, queue)

    def delete_buried(self, key: str, queue: str | None = None) -> bool:
        job_id = burial.job_id(key)
        return job_id is not None and self.remove_buried(job_id, queue)

    def _decode_buried(
        self, body: bytes, tube: str, job_id: int
    ) -> tuple[Envelope | None, str | None]:
        received = self._received(Reserved(job_id, body, tube, 0), 0)
        if received.envelope is None:
            return None, str(received.error)
        return received.envelope.with_(received=None), None

    # -- for tests and diagnostics -------------------------------------------

    @property
    def connection(self) -> Connection | None:
        """The live connection (None before the first call, after a loss or close)."""
        return self._link.current

    def __repr__(self) -> str:
        return f"<BeanstalkTransport {self.name!r} {self.dsn} queue={self.queue!r}>"
