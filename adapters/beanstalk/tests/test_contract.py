"""The transport contract, on a real beanstalkd; again with the delivery count on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from courier.serializer import Serializer, pack
from courier.testing.contract import TransportContract
from courier.transports.base import Transport

pytestmark = pytest.mark.beanstalk


class TestBeanstalkContract(TransportContract):
    #: beanstalkd delays in whole seconds.
    delay = 1.0
    receive_timeout = 5.0
    redelivery_wait = 0.5
    #: The TTR the dead-holder and ttr cases set (beanstalkd's shortest).
    lease = 1.0
    options: dict[str, str] = {}  # noqa: RUF012 - read only

    @pytest.fixture(autouse=True)
    def _broker(self, janitor: Any) -> None:
        self.janitor = janitor

    def make_transport(self, queue: str, serializer: Serializer, **options: str) -> Transport:
        return self.janitor.transport(  # type: ignore[no-any-return]
            queue, serializer, **{**self.options, **options}
        )

    def inject_raw(
        self, transport: Transport, queue: str, body: bytes, headers: Mapping[str, str]
    ) -> None:
        # beanstalkd has no headers: a foreign producer writing courier's
        # format packs them into the job, as courier does.
        self.janitor.put_raw(queue, pack(body, headers))


class TestBeanstalkContractCountingDeliveries(TestBeanstalkContract):
    """The same contract with ``delivery_count=true`` (stats-job per job)."""

    options = {"delivery_count": "true"}  # noqa: RUF012 - read only
