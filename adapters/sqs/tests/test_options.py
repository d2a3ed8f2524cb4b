"""The DSN, its options, the wire format and what the transport makes of them (no broker)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from courier import Bus
from courier.envelope import Envelope
from courier.errors import ConfigurationError, MessageDecodingFailed, MessageTooLarge
from courier.serializer import pack
from courier.testing.contract import ContractMessage, contract_serializer
from courier.transports.base import Unacked
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier_sqs import SqsOptions, SqsTransport
from courier_sqs.address import QueueNames, locate
from courier_sqs.sending import deduplication_id
from courier_sqs.wire import BASE64, DUE, ENCODING, PACKED, incoming, outgoing

#: Nothing listens here: a transport that made a request would fail.
NOWHERE = "sqs://AKIDNOWHERE:s3cr3t-pw@127.0.0.1:1/orders?region=us-east-1&sslmode=disable"


def transport(url: str = NOWHERE, **options: str) -> SqsTransport:
    dsn = Dsn.parse(url).with_options(connect_timeout="0.5", max_attempts="1", **options)
    return SqsTransport(dsn, name="orders", serializer=contract_serializer())


def address(url: str) -> tuple[str | None, str | None, str, str | None, str | None]:
    dsn = Dsn.parse(url)
    found = locate(dsn, dsn.option_model(SqsOptions))
    return found.endpoint_url, found.region, found.queue, found.queue_url, found.owner


# -- the DSN ---------------------------------------------------------------------


def test_defaults_are_documented_values() -> None:
    options = SqsOptions()
    assert options.queue is None
    assert options.region is None
    assert options.sslmode == "require"
    assert options.lease == 30.0
    assert options.visibility == 30
    assert options.wait_time == 20.0
    assert options.max_message_size is None
    assert options.auto_setup is True
    assert options.dead_letter_suffix == "-dead"
    assert options.max_receive_count == 20
    assert options.message_group == "courier"
    assert options.batches_in_flight == 8
    assert options.sns is False
    assert options.topic_prefix == ""
    assert options.subscription_ttl == 60.0
    assert options.session_token is None
    assert options.profile is None
    assert options.connect_timeout == 10.0
    assert options.max_attempts == 3


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # The acceptance tests' shape: a host that is not AWS's is the endpoint.
        (
            "sqs://KEY:SECRET@127.0.0.1:5111/jobs?region=us-east-1&sslmode=disable&lease=2",
            ("http://127.0.0.1:5111", "us-east-1", "jobs", None, None),
        ),
        ("sqs://localhost:4566/jobs", ("https://localhost:4566", None, "jobs", None, None)),
        ("sqs://jobs?region=eu-west-1", (None, "eu-west-1", "jobs", None, None)),
        ("sqs://jobs", (None, None, "jobs", None, None)),
        ("sqs://default/jobs?region=eu-west-1", (None, "eu-west-1", "jobs", None, None)),
        ("sqs://localhost:4566?queue=jobs", ("https://localhost:4566", None, "jobs", None, None)),
        (
            "sqs://sqs.eu-west-3.amazonaws.com/123456789012/jobs",
            (
                None,
                "eu-west-3",
                "jobs",
                "https://sqs.eu-west-3.amazonaws.com/123456789012/jobs",
                "123456789012",
            ),
        ),
        (
            "sqs://?queue=https://sqs.us-east-2.amazonaws.com/123456789012/jobs.fifo",
            (
                None,
                "us-east-2",
                "jobs.fifo",
                "https://sqs.us-east-2.amazonaws.com/123456789012/jobs.fifo",
                "123456789012",
            ),
        ),
        (
            "sqs://?queue=http://127.0.0.1:4566/000000000000/jobs&region=us-east-1",
            (
                "http://127.0.0.1:4566",
                "us-east-1",
                "jobs",
                "http://127.0.0.1:4566/000000000000/jobs",
                "000000000000",
            ),
        ),
        ("sqs://", (None, None, "default", None, None)),
    ],
)
def test_where_a_dsn_points(url: str, expected: tuple[object, ...]) -> None:
    assert address(url) == expected


def test_a_queue_named_twice_or_a_long_path_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        address("sqs://h:1/jobs?queue=other")
    with pytest.raises(ConfigurationError, match="path"):
        address("sqs://h:1/a/b/c")
    with pytest.raises(ConfigurationError, match="not possible on SQS"):
        address("sqs://h:1/jobs:high")


def test_unknown_options_are_errors_and_secrets_stay_hidden() -> None:
    with pytest.raises(ConfigurationError) as caught:
        transport(wait_tiem="1")
    text = str(caught.value)
    assert "unknown option 'wait_tiem'" in text
    assert "wait_time" in text
    assert "s3cr3t-pw" not in text
    assert "AKIDNOWHERE" not in text
    for bad in ({"sslmode": "prefer"}, {"lease": "0"}, {"wait_time": "21"}, {"lease": "50000"}):
        with pytest.raises(ConfigurationError):
            transport(**bad)


def test_repr_and_options_never_show_a_secret() -> None:
    made = transport(session_token="t0k3n-value")
    for text in (repr(made), str(made.dsn), repr(made.options), repr(made.connection.address)):
        assert "s3cr3t-pw" not in text
        assert "t0k3n-value" not in text
    assert "AKIDNOWHERE" not in repr(made)
    masked = made.connection.mask("key AKIDNOWHERE secret s3cr3t-pw token t0k3n-value")
    assert masked == "key *** secret *** token ***"
    made.close()


def test_sqs_is_a_registered_entry_point() -> None:
    opened = open_transport(NOWHERE, name="jobs", serializer=contract_serializer())
    assert isinstance(opened, SqsTransport)
    assert opened.queue == "orders"
    opened.close()


def test_capabilities() -> None:
    standard = transport().capabilities
    assert standard.delay
    assert standard.max_delay is None  # longer than 900 s goes in hops
    assert standard.lease
    assert standard.ttr
    assert standard.delivery_count
    assert standard.native_dead_letter
    assert not standard.priority
    assert not standard.listable
    assert standard.max_message_size == 256 * 1024
    assert standard.unacked_on_reconnect is Unacked.KEPT
    assert transport(max_message_size="2000").capabilities.max_message_size == 2000
    fifo = transport("sqs://k:s@127.0.0.1:1/orders.fifo?sslmode=disable").capabilities
    assert not fifo.delay
    assert transport(lease="7").keepalive_interval() == pytest.approx(7 / 3)


def test_a_fifo_transport_refuses_delays_at_startup_and_dispatch() -> None:
    fifo = transport("sqs://k:s@127.0.0.1:1/orders.fifo?sslmode=disable")
    bus = Bus(transports={"orders": fifo})
    bus.route(ContractMessage, "orders")
    bus.add_handler(lambda message: None, ContractMessage)
    with pytest.raises(ConfigurationError, match="cannot delay"):
        bus.check(["orders"])  # the default retry strategy waits between attempts
    with pytest.raises(ConfigurationError, match="cannot delay"):
        bus.dispatch(ContractMessage(n=1), delay=5)
    with pytest.raises(ConfigurationError, match="FIFO"):
        fifo.send(Envelope(ContractMessage(n=1), delay=5))


def test_queue_names_on_sqs() -> None:
    names = QueueNames(fifo=False)
    assert names.sqs("jobs") == "jobs"
    assert names.sqs("user-registered.welcome_email") == "user-registered_welcome_email"
    assert names.dead_letter("jobs") == "jobs-dead"
    with pytest.raises(ConfigurationError, match="FIFO"):
        names.sqs("jobs.fifo")
    with pytest.raises(ConfigurationError, match="80 characters"):
        names.sqs("x" * 81)
    fifo = QueueNames(fifo=True)
    assert fifo.sqs("jobs.fifo") == "jobs.fifo"
    assert fifo.sqs("events.audit") == "events_audit.fifo"
    assert fifo.dead_letter("jobs.fifo") == "jobs-dead.fifo"


def test_too_large_is_refused_before_any_request(caplog: pytest.LogCaptureFixture) -> None:
    made = transport(max_message_size="1000")
    with caplog.at_level(logging.DEBUG), pytest.raises(MessageTooLarge):
        made.send(Envelope(ContractMessage(n=1, text="x" * 2000)))
    assert not made.connection._clients, "no client was even made"
    assert "botocore" not in caplog.text
    # Without the option: SQS's largest possible message, until the queue is known.
    unlimited = transport()
    with pytest.raises(MessageTooLarge):
        unlimited.send(Envelope(ContractMessage(n=1, text="x" * (1024 * 1024))))
    assert not unlimited.connection._clients


# -- the wire format -------------------------------------------------------------


def test_a_json_body_goes_as_text_with_string_attributes() -> None:
    headers = {"content-type": "application/json", "courier-type": "a.b", "courier-id": "m1"}
    out = outgoing(b'{"n":1}', headers, 0.0, 1000.0)
    assert out.body == '{"n":1}'
    assert out.delay_seconds == 0
    assert out.attributes == {
        name: {"DataType": "String", "StringValue": value} for name, value in headers.items()
    }
    expected = 7 + sum(len(k) + len("String") + len(v) for k, v in headers.items())
    assert out.size == expected
    assert incoming(out.body, out.attributes) == (b'{"n":1}', headers, None)


@pytest.mark.parametrize("body", [b"\xff\xfe\x00binary", b"text with a \x01 control", b""])
def test_bodies_that_are_not_sqs_text_go_base64(body: bytes) -> None:
    out = outgoing(body, {"courier-type": "a.b"}, 0.0, 0.0)
    if body:
        assert out.attributes[ENCODING]["StringValue"] == BASE64
        assert base64.b64decode(out.body) == body
    assert incoming(out.body, out.attributes).body == body


def test_headers_that_do_not_fit_in_attributes_travel_in_the_body() -> None:
    many = {f"h{n}": str(n) for n in range(11)}
    for headers in (many, {"x tenant": "acme"}, {"empty": ""}, {"AWS.thing": "x"}, {"a": "\x00"}):
        headers = {"courier-type": "a.b", "courier-id": "m1", **headers}
        out = outgoing(b"\xffbinary", headers, 0.0, 0.0)
        assert out.attributes[ENCODING]["StringValue"] == PACKED
        assert out.attributes["courier-type"]["StringValue"] == "a.b"  # still visible
        assert out.body.isascii()
        assert incoming(out.body, out.attributes) == (b"\xffbinary", headers, None)


def test_a_delay_over_900_seconds_is_sent_in_hops() -> None:
    assert outgoing(b"{}", {}, 0.2, 0.0).delay_seconds == 1  # whole seconds, rounded up
    assert outgoing(b"{}", {}, 900.0, 0.0).delay_seconds == 900
    out = outgoing(b"{}", {}, 3600.0, 1000.0)
    assert out.delay_seconds == 900
    assert float(out.attributes[DUE]["StringValue"]) == 4600.0
    assert incoming(out.body, out.attributes).due == 4600.0


def test_what_a_foreign_producer_gets_wrong_is_an_undecodable_message() -> None:
    with pytest.raises(MessageDecodingFailed, match="not base64"):
        incoming("!!!", {ENCODING: {"DataType": "String", "StringValue": BASE64}})
    with pytest.raises(MessageDecodingFailed, match="not a courier envelope"):
        incoming("[1]", {ENCODING: {"DataType": "String", "StringValue": PACKED}})
    with pytest.raises(MessageDecodingFailed, match="unknown courier-encoding"):
        incoming("{}", {ENCODING: {"DataType": "String", "StringValue": "rot13"}})
    # Any attribute type comes back as text; a lone surrogate stays bytes.
    body, headers, due = incoming(
        "\ud800",
        {
            "n": {"DataType": "Number", "StringValue": "42"},
            "b": {"DataType": "Binary", "BinaryValue": b"\xffok"},
            DUE: {"DataType": "String", "StringValue": "soon"},
        },
    )
    assert body == b"\xed\xa0\x80"
    assert headers == {"n": "42", "b": "\ufffdok"}
    assert due is None
    packed = pack(b"x", {"courier-type": "a.b"}).decode()
    assert json.loads(packed)["body"] == "x"


def test_fifo_deduplication_ids() -> None:
    envelope = Envelope(ContractMessage(n=1), id="abc")
    assert deduplication_id(envelope) == "abc"
    assert deduplication_id(envelope.with_(attempt=3)) == "abc-a3"
    kept = envelope.with_(headers={"courier-kept": "2"})
    assert deduplication_id(kept) == "abc-k2"  # sent back from the failure store
    odd = deduplication_id(Envelope(ContractMessage(n=1), id="é" * 200))
    assert len(odd) == 64
