"""The options of an ``sqs://`` DSN, with their defaults.

``sqs://KEY:SECRET@127.0.0.1:4566/email?region=us-east-1&sslmode=disable&lease=60``

Where the queue and the endpoint come from (the DSN's host, path, or a full
queue URL) is :mod:`courier_sqs.address`'s job. Every option below is a
query parameter; an unknown one is an error. docs/transports/sqs.md
explains each in prose.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, SecretStr

from courier.transports.dsn import TransportOptions

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_DELAY",
    "MAX_MESSAGE_SIZE",
    "MAX_VISIBILITY",
    "SqsOptions",
]

#: SQS's default MaximumMessageSize for a queue whose attributes were not read yet.
DEFAULT_MAX_MESSAGE_SIZE = 256 * 1024
#: The largest message SQS accepts at all (MaximumMessageSize's upper bound).
MAX_MESSAGE_SIZE = 1024 * 1024
#: The longest DelaySeconds SQS takes; longer delays go in hops.
MAX_DELAY = 900
#: The longest visibility timeout SQS takes (12 hours).
MAX_VISIBILITY = 43_200


class SqsOptions(TransportOptions):
    """DSN options; every default is written here and in docs/transports/sqs.md."""

    #: The default queue: a name, or a full queue URL. The DSN's path is an alias.
    queue: str | None = None
    #: AWS region; default: the one in the host or queue URL, else boto3's
    #: (AWS_DEFAULT_REGION, ~/.aws/config), else us-east-1 for an emulator.
    region: str | None = None
    #: ``disable``: plain HTTP to the DSN's host (an emulator); ``require``: HTTPS.
    sslmode: Literal["disable", "require"] = "require"
    #: Seconds a received message stays invisible to other workers (the
    #: visibility timeout): a dead worker's messages come back after it.
    #: SQS counts whole seconds, so it is rounded up.
    lease: float = Field(default=30.0, gt=0, le=MAX_VISIBILITY)
    #: Longest long poll, in seconds (0 to 20); a receive never waits longer
    #: than its caller's timeout either.
    wait_time: float = Field(default=20.0, ge=0, le=20)
    #: Bodies (with their attributes) larger than this many bytes are
    #: refused before sending; default: each queue's MaximumMessageSize.
    max_message_size: int | None = Field(default=None, ge=1, le=MAX_MESSAGE_SIZE)
    #: Create missing queues (and SNS topics, subscriptions) on first use;
    #: ``courier setup`` always does.
    auto_setup: bool = True
    #: Queue ``q`` dead-letters into ``q<suffix>`` (``q<suffix>.fifo`` for FIFO queues).
    dead_letter_suffix: str = Field(default="-dead", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    #: The redrive policy moves a message received more often than this to the
    #: dead-letter queue; keep it above the bus's ``max_deliveries`` (10).
    max_receive_count: int = Field(default=20, ge=1, le=1000)
    #: FIFO queues: the MessageGroupId of messages without a
    #: ``sqs-message-group-id`` header (one group: one message at a time, in order).
    message_group: str = Field(default="courier", min_length=1, max_length=128)
    #: SendMessageBatch requests ``send_many`` keeps in flight at once (FIFO: one).
    batches_in_flight: int = Field(default=8, ge=1, le=32)
    #: Publish events through one SNS topic per courier topic, subscribed by
    #: every subscription queue with raw message delivery.
    sns: bool = False
    #: SNS topic names are ``<topic_prefix><topic>``.
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,100}$")
    #: Seconds a producer remembers the subscriptions recorded for a topic.
    subscription_ttl: float = Field(default=60.0, ge=0)
    #: Temporary credentials: the session token that goes with the DSN's key pair.
    session_token: SecretStr | None = None
    #: A profile of ~/.aws/config to take credentials and region from.
    profile: str | None = None
    #: Seconds to open an HTTP connection to the endpoint.
    connect_timeout: float = Field(default=10.0, gt=0)
    #: Attempts per request (botocore's standard retries, with backoff) before
    #: a connection error or throttling reaches courier.
    max_attempts: int = Field(default=3, ge=1, le=20)

    @property
    def visibility(self) -> int:
        """The lease as SQS takes it: whole seconds, at least one."""
        return max(1, math.ceil(self.lease))
