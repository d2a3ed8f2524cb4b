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
    redelivery_wait = 0.3
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
    """The cases that receive and settle, again with ``delivery_count=true``.

    Counting reads ``stats-job`` after each reserve and reserves one job at a
    time; the cases that only put, encode or configure are the same as
    above, so they are not run twice (the suite's time is shared).
    """

    options = {"delivery_count": "true"}  # noqa: RUF012 - read only

    test_publish_with_no_subscription_is_not_an_error = None  # type: ignore[assignment]
    test_delayed_send = None  # type: ignore[assignment]
    test_stats_count_ready_messages = None  # type: ignore[assignment]
    test_size_limit_refuses_before_sending = None  # type: ignore[assignment]
    test_oversized_incoming_body_is_refused_undecoded = None  # type: ignore[assignment]
    test_headers_round_trip = None  # type: ignore[assignment]
    test_priority_order = None  # type: ignore[assignment]
    test_keep_is_idempotent_on_the_envelope_id = None  # type: ignore[assignment]
    test_ttr_is_the_messages_own_lease = None  # type: ignore[assignment]
    test_retry_comes_back_after_the_delay = None  # type: ignore[assignment]
    test_dead_letter_to_the_failure_transport = None  # type: ignore[assignment]
