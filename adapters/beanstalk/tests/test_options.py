"""The DSN and its options, and what the transport makes of them (no server needed)."""

from __future__ import annotations

import logging

import pytest

from courier.envelope import Envelope
from courier.errors import ConfigurationError, ConnectionLost, MessageDecodingFailed
from courier.testing.contract import ContractMessage, contract_serializer
from courier.transports.base import Unacked
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier_beanstalk import BeanstalkOptions, BeanstalkTransport, PhpJobSerializer
from courier_beanstalk.jobs import beanstalk_priority, courier_priority, unpack_job
from courier_beanstalk.options import check_tube, whole_seconds

#: Nothing listens here: a transport that tried to connect would fail.
NOWHERE = "beanstalk://user:s3cr3t-pw@127.0.0.1:1"


def transport(url: str = NOWHERE, **options: str) -> BeanstalkTransport:
    dsn = Dsn.parse(url).with_options(**options)
    return BeanstalkTransport(dsn, name="jobs", serializer=contract_serializer())


def test_defaults_are_documented_values() -> None:
    options = BeanstalkOptions()
    assert options.queue == "default"
    assert options.lease == 60.0
    assert options.ttr == 60
    assert options.priority_base == 1024
    assert options.delivery_count is False
    assert options.format == "courier"
    assert options.jobs == {}
    assert options.max_message_size is None
    assert options.connect_timeout == 5.0
    assert options.io_timeout == 10.0
    assert options.poll_interval == 0.05


def test_tube_is_an_alias_of_queue() -> None:
    assert Dsn.parse("beanstalk://h?tube=email").option_model(BeanstalkOptions).queue == "email"
    same = Dsn.parse("beanstalk://h?tube=email&queue=email").option_model(BeanstalkOptions)
    assert same.queue == "email"
    with pytest.raises(ConfigurationError, match="alias"):
        Dsn.parse("beanstalk://h?tube=a&queue=b").option_model(BeanstalkOptions)


@pytest.mark.parametrize("name", ["", "-leading-hyphen", "has space", "é", "a" * 201, "a#b"])
def test_bad_tube_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="tube name"):
        check_tube(name)
    with pytest.raises(ConfigurationError):
        BeanstalkTransport(
            Dsn("beanstalk", host="h", options={"queue": name}), serializer=contract_serializer()
        )


@pytest.mark.parametrize("name", ["email", "a.b", "x-y_z+1/2;$()", "A" * 200])
def test_good_tube_names(name: str) -> None:
    assert check_tube(name) == name


def test_a_bad_tube_name_given_to_a_verb_is_refused_before_any_io() -> None:
    made = transport()
    with pytest.raises(ConfigurationError, match="tube name"):
        made.send(Envelope(ContractMessage(n=1)), "no spaces")
    with pytest.raises(ConfigurationError, match="tube name"):
        made.receive(["ok", "not ok"])
    made.close()


def test_unknown_options_are_errors_and_the_password_stays_hidden() -> None:
    with pytest.raises(ConfigurationError) as caught:
        transport(leese="2")
    text = str(caught.value)
    assert "unknown option 'leese'" in text
    assert "lease" in text
    assert "s3cr3t-pw" not in text
    with pytest.raises(ConfigurationError, match="format"):
        transport(format="laravel")
    with pytest.raises(ConfigurationError, match="lease"):
        transport(lease="0")


def test_a_path_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="no path"):
        transport("beanstalk://127.0.0.1:1/email")


def test_jobs_are_parsed_and_need_format_php() -> None:
    options = Dsn.parse(
        "beanstalk://h?format=php&jobs=send_email:email.send, resize : image.resize"
    ).option_model(BeanstalkOptions)
    assert options.jobs == {"send_email": "email.send", "resize": "image.resize"}
    with pytest.raises(ConfigurationError, match="format=php"):
        Dsn.parse("beanstalk://h?jobs=a:b").option_model(BeanstalkOptions)
    for bad in ("a", "a:", ":b", "a:b,a:c"):
        with pytest.raises(ConfigurationError, match="jobs"):
            Dsn.parse(f"beanstalk://h?format=php&jobs={bad}").option_model(BeanstalkOptions)


def test_format_php_wraps_the_bus_serializer() -> None:
    made = transport(format="php", jobs="send:courier.contract.message")
    assert isinstance(made.serializer, PhpJobSerializer)
    assert made.serializer.job_name("courier.contract.message") == "send"
    assert made.serializer.job_name("other.type") == "other.type"
    made.close()


def test_the_transport_does_not_connect_until_used() -> None:
    made = transport(queue="orders")
    assert made.connection is None
    assert "s3cr3t-pw" not in repr(made)
    assert "***" in repr(made)
    made.close()


def test_beanstalk_and_beanstalkd_are_registered_entry_points() -> None:
    for scheme in ("beanstalk", "beanstalkd"):
        opened = open_transport(
            f"{scheme}://127.0.0.1:1?queue=jobs", name="jobs", serializer=contract_serializer()
        )
        assert isinstance(opened, BeanstalkTransport)
        assert opened.queue == "jobs"
        opened.close()


def test_capabilities_follow_the_options() -> None:
    made = transport(max_message_size="1000")
    capabilities = made.capabilities
    assert capabilities.delay
    assert capabilities.max_delay == 2**32 - 1
    assert capabilities.priority
    assert capabilities.lease
    assert capabilities.ttr
    assert capabilities.native_dead_letter
    assert capabilities.max_message_size == 1000
    assert not capabilities.delivery_count
    assert not capabilities.listable
    assert capabilities.unacked_on_reconnect is Unacked.RETURNED
    assert transport(delivery_count="true").capabilities.delivery_count


def test_keepalive_renews_well_within_the_shortest_ttr() -> None:
    assert transport(lease="60").keepalive_interval() == 0.5
    assert transport(lease="2").keepalive_interval() == 0.5
    assert transport(lease="1").keepalive_interval() == 0.25
    assert transport(lease="0.3").keepalive_interval() == 0.25


def test_seconds_are_rounded_up_to_whole_seconds() -> None:
    assert whole_seconds(0) == 0
    assert whole_seconds(0.2) == 1
    assert whole_seconds(1.0) == 1
    assert whole_seconds(1.0000000001) == 1
    assert whole_seconds(1.5) == 2
    assert whole_seconds(0.3, at_least=1) == 1
    assert whole_seconds(0, at_least=1) == 1
    assert whole_seconds(10**12) == 2**32 - 1
    assert BeanstalkOptions(lease=2.5).ttr == 3


def test_priority_mapping() -> None:
    assert beanstalk_priority(0, 1024) == 1024
    assert beanstalk_priority(9, 1024) == 1015
    assert [beanstalk_priority(p, 1024) for p in range(10)] == sorted(
        (beanstalk_priority(p, 1024) for p in range(10)), reverse=True
    )
    assert courier_priority(1015, 1024) == 9
    assert courier_priority(5, 1024) == 9
    assert courier_priority(2**16, 1024) == 0


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "empty job"),
        (b"  ", "empty job"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"n": 1', "malformed JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"n": 1}', "no 'headers'"),
        (b'{"job": "send_email", "data": {}}', "format=php"),
        (b'{"headers": {"a": 1}, "body": "{}"}', "malformed 'headers'"),
    ],
)
def test_foreign_jobs_get_a_precise_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(MessageDecodingFailed, match=reason) as caught:
        unpack_job(blob)
    assert caught.value.raw == blob


def test_a_connection_error_never_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    made = transport()
    with pytest.raises(ConnectionLost) as caught:
        made.send(Envelope(ContractMessage(n=1)))
    assert "127.0.0.1:1" in str(caught.value)
    for text in (str(caught.value), repr(caught.value), repr(made), caplog.text):
        assert "s3cr3t-pw" not in text
    made.close()
