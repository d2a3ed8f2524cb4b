"""``sync://``: handle messages in the dispatching process, at once.

For messages that should stay synchronous in one environment (tests, a CLI
script) while another routes them to a broker: the routing does not change,
only the DSN. ``dispatch`` returns after the handler ran and raises what it
raised; there is nothing to receive, so there are no retries and no dead
letters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from courier.envelope import Envelope
from courier.errors import ConfigurationError
from courier.serializer import Serializer
from courier.transports.base import Capabilities, Received, Transport
from courier.transports.dsn import Dsn, TransportOptions

__all__ = ["SyncTransport"]


class SyncOptions(TransportOptions):
    queue: str = "sync"


class SyncTransport(Transport):
    """Sending is handling: the bus binds its in-process handler here."""

    capabilities = Capabilities(durable=False, in_process=True)

    def __init__(self, *, name: str = "sync", queue: str = "sync", serializer: Serializer) -> None:
        super().__init__(name=name, queue=queue, serializer=serializer)
        self._deliver: Callable[[Envelope], object] | None = None

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> SyncTransport:
        options = dsn.option_model(SyncOptions)
        return cls(name=name, queue=options.queue, serializer=serializer)

    def bind(self, deliver: Callable[[Envelope], object]) -> None:
        """Called by the bus: ``deliver`` runs the handlers of one envelope."""
        self._deliver = deliver

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        if self._deliver is None:
            raise ConfigurationError(f"transport {self.name!r} (sync://) is not attached to a bus")
        self._deliver(envelope)
        return envelope

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        raise ConfigurationError(
            f"transport {self.name!r} is sync://: its messages are handled when dispatched, "
            "there is nothing to consume"
        )

    def _never(self, verb: str) -> ConfigurationError:
        return ConfigurationError(f"sync:// never receives, so it cannot {verb}")

    def ack(self, received: Received) -> None:
        raise self._never("acknowledge")

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        raise self._never("retry")

    def reject(self, received: Received, reason: str) -> None:
        raise self._never("reject")

    def release(self, received: Received) -> None:
        raise self._never("release")
