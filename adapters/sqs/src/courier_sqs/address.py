"""Where a DSN points: the endpoint, the region, and SQS's names for courier's queues.

The DSN's host decides the endpoint, as in Symfony's SQS DSN:

- ``sqs://orders?region=eu-west-1``: no path, so the host is the queue, on
  AWS's own endpoint;
- ``sqs://KEY:SECRET@127.0.0.1:4566/orders?sslmode=disable``: any host that
  is not AWS's is the endpoint (an emulator), over HTTP with ``sslmode=disable``;
- ``sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders``: an AWS host gives
  the region, the path an account and a queue; it is the queue URL with
  ``sqs://`` for ``https://``;
- ``sqs://?queue=https://sqs.eu-west-1.amazonaws.com/123456789012/orders``:
  the ``queue`` option may be a full queue URL.

SQS queue names allow ``[A-Za-z0-9_-]`` and 80 characters, FIFO queues end
in ``.fifo``. courier's subscription queues are ``<topic>.<subscription>``,
so a dot becomes ``_`` on SQS; any other character SQS refuses is an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from courier.errors import ConfigurationError
from courier.transports.dsn import Dsn
from courier_sqs.options import SqsOptions

__all__ = ["FIFO", "Address", "QueueNames", "locate", "parse_queue_url"]

FIFO = ".fifo"

_AWS_HOST = re.compile(
    r"^(?:sqs[.-](?P<region>[a-z0-9-]+)|(?P<legacy>[a-z0-9-]+)\.queue)\.amazonaws\.com(?:\.cn)?$"
)
_SQS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_NAME = 80


@dataclass(frozen=True, slots=True)
class Address:
    """The endpoint, region and default queue of one transport (no secrets here)."""

    #: None: boto3's endpoint for the region (AWS itself).
    endpoint_url: str | None
    region: str | None
    #: courier's name for the default queue.
    queue: str
    #: The default queue's URL where the DSN gave one, and its owner account.
    queue_url: str | None = None
    owner: str | None = None

    @property
    def fifo(self) -> bool:
        return self.queue.endswith(FIFO)


def parse_queue_url(url: str) -> tuple[str | None, str | None, str, str | None]:
    """``(endpoint_url or None, region or None, queue name, account)`` of a queue URL."""
    parts = urlsplit(url)
    segments = [segment for segment in parts.path.split("/") if segment]
    if parts.scheme not in ("http", "https") or not parts.hostname or not segments:
        raise ConfigurationError("a queue URL looks like https://HOST/ACCOUNT/QUEUE")
    name = segments[-1]
    account = segments[-2] if len(segments) > 1 else None
    aws = _AWS_HOST.match(parts.hostname)
    if aws is not None:
        return None, aws.group("region") or aws.group("legacy"), name, account
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}", None, name, account


def locate(dsn: Dsn, options: SqsOptions) -> Address:
    """The :class:`Address` a DSN names; see the module docstring."""
    host = dsn.host
    segments = [segment for segment in dsn.path.split("/") if segment]
    if len(segments) > 2:
        raise ConfigurationError(
            "the sqs:// DSN's path is /QUEUE or /ACCOUNT/QUEUE (URL-encode other slashes)"
        )
    path_queue = segments[-1] if segments else None
    owner = segments[0] if len(segments) == 2 else None
    if path_queue is not None and options.queue is not None:
        raise ConfigurationError("the sqs:// DSN names its queue twice: in the path and queue=")
    region = options.region
    endpoint: str | None = None
    queue_url: str | None = None
    if host is not None and path_queue is None and options.queue is None and dsn.port is None:
        # sqs://orders?region=...: the host is the queue, on AWS.
        path_queue, host = host, None
    if host is not None and host != "default":
        aws = _AWS_HOST.match(host)
        if aws is not None:
            region = region or aws.group("region") or aws.group("legacy")
        else:
            scheme = "http" if options.sslmode == "disable" else "https"
            shown = f"[{host}]" if ":" in host else host
            endpoint = f"{scheme}://{shown}" + (f":{dsn.port}" if dsn.port else "")
    queue = options.queue or path_queue or "default"
    if queue.startswith(("http://", "https://")):
        url_endpoint, url_region, queue, owner = parse_queue_url(queue)
        queue_url = options.queue
        endpoint = endpoint or url_endpoint
        region = region or url_region
    if queue_url is None and owner is not None and endpoint is None and region is not None:
        queue_url = f"https://sqs.{region}.amazonaws.com/{owner}/{queue}"
    QueueNames(queue.endswith(FIFO), options.dead_letter_suffix).sqs(queue)  # refuse bad names now
    return Address(endpoint, region, queue, queue_url, owner)


@dataclass(frozen=True, slots=True)
class QueueNames:
    """courier's queue names to SQS's, for one transport (FIFO or not)."""

    fifo: bool
    dead_letter_suffix: str = "-dead"

    def base(self, name: str) -> str:
        """The SQS name, less ``.fifo``; dots become ``_``, what else SQS refuses is an error."""
        stem = name[: -len(FIFO)] if name.endswith(FIFO) else name
        if name.endswith(FIFO) and not self.fifo:
            raise ConfigurationError(
                f"queue {name!r} is a FIFO queue: a transport uses FIFO queues only when its "
                "DSN's queue ends in .fifo, and then every queue it uses is one"
            )
        mapped = stem.replace(".", "_")
        if not mapped or not _SQS_NAME.match(mapped):
            raise ConfigurationError(
                f"queue name {name!r} is not possible on SQS: use letters, digits, '-', '_' "
                "(and '.', which becomes '_')"
            )
        return mapped

    def sqs(self, name: str) -> str:
        """The SQS queue name of courier's queue ``name``."""
        return self._checked(self.base(name), name)

    def dead_letter(self, name: str) -> str:
        """The SQS name of ``name``'s dead-letter queue."""
        return self._checked(self.base(name) + self.dead_letter_suffix, name)

    def _checked(self, stem: str, name: str) -> str:
        full = stem + (FIFO if self.fifo else "")
        if len(full) > _MAX_NAME:
            raise ConfigurationError(
                f"queue {name!r} would be {full!r} on SQS, over its {_MAX_NAME} characters"
            )
        return full
