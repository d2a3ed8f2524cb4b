"""The DSN, its options, the flavors and the header mapping (no broker needed)."""

from __future__ import annotations

import logging

import pytest

from courier.envelope import Envelope
from courier.errors import ConfigurationError, MessageTooLarge
from courier.testing.contract import ContractMessage, contract_serializer
from courier.transports.base import Unacked
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier_stomp import DEFAULT_DELAY_LEVELS, StompOptions, StompTransport
from courier_stomp.flavors import ActiveMq, Artemis, RabbitMq, flavor_for
from courier_stomp.wire import PACKED, incoming, outgoing

#: Nothing listens here: a transport that tried to connect would fail.
NOWHERE = "stomp://user:s3cr3t-pw@127.0.0.1:1/%2f"


def transport(url: str = NOWHERE, **options: str) -> StompTransport:
    dsn = Dsn.parse(url).with_options(**options)
    return StompTransport(dsn, name="orders", serializer=contract_serializer())


def test_defaults_are_documented_values() -> None:
    options = StompOptions()
    assert options.queue == "default"
    assert options.flavor == "rabbitmq"
    assert options.queue_type == "classic"
    assert options.prefetch == 100
    assert options.receipt_window == 1000
    assert options.receipt_timeout == 30.0
    assert options.heartbeat == 10.0
    assert options.lease is None
    assert options.connect_timeout == 10.0
    assert options.delays is True
    assert options.delay_prefix == "courier.delay"
    assert options.delay_levels == DEFAULT_DELAY_LEVELS == (1, 5, 30, 120, 600, 3600)
    assert options.dead_letter_suffix == ".dead"
    assert options.max_message_size == 128 * 1024 * 1024
    assert options.client_id is None
    assert options.tls_verify is True


def test_delay_levels_are_parsed_sorted_and_deduplicated() -> None:
    options = Dsn.parse("stomp://h?delay_levels=30, 0.2,1,1.0").option_model(StompOptions)
    assert options.delay_levels == (0.2, 1.0, 30.0)


@pytest.mark.parametrize("levels", ["", "0", "-1", "1,x", "inf", "0.0001"])
def test_bad_delay_levels_are_refused(levels: str) -> None:
    with pytest.raises(ConfigurationError, match="delay_levels"):
        Dsn.parse(f"stomp://h?delay_levels={levels}").option_model(StompOptions)


def test_unknown_options_are_errors_and_the_password_stays_hidden() -> None:
    with pytest.raises(ConfigurationError) as caught:
        transport(prefecth="10")
    text = str(caught.value)
    assert "unknown option 'prefecth'" in text
    assert "prefetch" in text
    assert "s3cr3t-pw" not in text
    with pytest.raises(ConfigurationError, match="flavor"):
        transport(flavor="qpid")
    with pytest.raises(ConfigurationError, match="queue_type"):
        transport(queue_type="stream")


def test_lease_sets_the_heartbeat_to_a_third_of_it() -> None:
    made = transport(lease="6")
    assert made.options.heartbeat == 2.0
    assert made._endpoint.heartbeat_ms == 2000
    assert transport(heartbeat="0")._endpoint.heartbeat_ms == 0
    with pytest.raises(ConfigurationError, match="lease or heartbeat"):
        transport(lease="6", heartbeat="2")


def test_the_transport_does_not_connect_until_used() -> None:
    made = transport(queue="orders")
    assert made.publisher is None
    assert made.consumer is None
    assert "s3cr3t-pw" not in repr(made)
    assert "***" in repr(made)
    assert "s3cr3t-pw" not in repr(made._endpoint)
    made.close()


def test_stomp_and_stomp_ssl_are_registered_entry_points() -> None:
    for scheme in ("stomp", "stomp+ssl"):
        opened = open_transport(
            f"{scheme}://u:p@127.0.0.1:1/%2f?queue=jobs",
            name="jobs",
            serializer=contract_serializer(),
        )
        assert isinstance(opened, StompTransport)
        assert opened.queue == "jobs"
        opened.close()


def test_capabilities_follow_the_options() -> None:
    capabilities = transport(delay_levels="1,10", max_message_size="1000").capabilities
    assert capabilities.delay
    assert capabilities.max_delay == 10
    assert capabilities.max_message_size == 1000
    assert not capabilities.delivery_count  # classic queues only say "redelivered"
    assert capabilities.native_dead_letter
    assert not capabilities.priority
    assert not capabilities.listable
    assert not capabilities.lease
    assert not capabilities.ttr
    assert capabilities.unacked_on_reconnect is Unacked.REQUEUED
    assert transport(queue_type="quorum").capabilities.delivery_count
    undelayed = transport(delays="false").capabilities
    assert (undelayed.delay, undelayed.max_delay) == (False, None)
    scheduled = transport(flavor="activemq").capabilities
    assert (scheduled.delay, scheduled.max_delay, scheduled.delivery_count) == (True, None, False)


@pytest.mark.parametrize(
    ("path", "vhost"), [("", "/"), ("/", "/"), ("/%2f", "/"), ("/prod", "prod"), ("/%2fa", "/a")]
)
def test_the_path_is_the_vhost(path: str, vhost: str) -> None:
    endpoint = transport(f"stomp://u:p@broker{path}")._endpoint
    assert endpoint.vhost == vhost
    assert (endpoint.host, endpoint.port) == ("broker", 61613)


def test_endpoint() -> None:
    endpoint = transport(heartbeat="7", connect_timeout="3")._endpoint
    assert (endpoint.username, endpoint.password) == ("user", "s3cr3t-pw")
    assert (endpoint.heartbeat_ms, endpoint.connect_timeout) == (7000, 3)
    assert endpoint.tls is None
    assert endpoint.connect_headers == {}
    other = transport("stomp://u:p@amq", flavor="activemq", client_id="billing")._endpoint
    assert other.vhost is None  # the CONNECT host header is then the host name
    assert other.connect_headers == {"client-id": "billing"}


def test_stomp_ssl_settings() -> None:
    endpoint = transport("stomp+ssl://u:p@rabbit.example/%2f", tls_verify="false")._endpoint
    assert endpoint.port == 61614
    assert endpoint.tls == {
        "ca_certs": None,
        "cert_file": None,
        "key_file": None,
        "password": None,
        "verify": False,
    }
    with pytest.raises(ConfigurationError, match="TLS file not found"):
        transport("stomp+ssl://u:p@h/%2f", tls_ca_file="/nonexistent/ca.pem")


def test_a_tls_key_password_is_masked_everywhere() -> None:
    dsn = Dsn.parse("stomp+ssl://u:p@h/%2f?tls_key_password=k3y-pw")
    assert "k3y-pw" not in str(dsn)
    options = dsn.option_model(StompOptions)
    assert "k3y-pw" not in repr(options)
    assert "k3y-pw" not in str(options)
    assert options.tls_key_password is not None
    assert options.tls_key_password.get_secret_value() == "k3y-pw"


def test_credentials_a_connect_frame_cannot_carry_are_refused_unshown() -> None:
    with pytest.raises(ConfigurationError) as caught:
        transport("stomp://u:bad%0Apw-x9@h/%2f")
    assert "bad" not in str(caught.value)
    assert "pw-x9" not in str(caught.value)


def test_too_large_is_refused_before_any_network_call() -> None:
    made = transport(max_message_size="100")
    with pytest.raises(MessageTooLarge):
        made.send(Envelope(ContractMessage(n=1, text="x" * 200)))
    assert made.publisher is None
    made.close()


def test_a_delay_too_long_is_refused_before_any_network_call() -> None:
    made = transport(delay_levels="0.2,1")
    with pytest.raises(ConfigurationError, match="longest delay level"):
        made.send(Envelope(ContractMessage(n=1), delay=2.0))
    with pytest.raises(ConfigurationError, match="longest delay level"):
        made.send_many([Envelope(ContractMessage(n=1), delay=2.0)])
    assert made.publisher is None


def test_stomp_py_never_logs_the_passcode(caplog: pytest.LogCaptureFixture) -> None:
    import courier_stomp.endpoint  # noqa: F401  (installs the filter)

    logger = logging.getLogger("stomp.py")
    with caplog.at_level(logging.DEBUG, logger="stomp.py"):
        lines = [b"STOMP", b"\n", b"login:u\n", b"passcode:s3cr3t-pw\n"]
        logger.debug("sending frame: %s", str(lines))
    assert "s3cr3t-pw" not in caplog.text
    assert "passcode (hidden by courier)" in caplog.text


# -- flavors -----------------------------------------------------------------


def test_rabbitmq_destinations_and_arguments() -> None:
    flavor = RabbitMq(StompOptions(delay_levels=(0.2, 1.0, 3.0)))
    assert flavor.send_to("jobs") == ("/queue/jobs", {"persistent": "true"})
    assert flavor.send_to("a/b") == ("/queue/a%2Fb", {"persistent": "true"})
    assert flavor.consume_from("jobs", 50) == ("/queue/jobs", {"prefetch-count": "50"})
    assert flavor.send_to_topic("events") == ("/topic/events", {"persistent": "true"})
    assert flavor.declare_subscription("events", "mail", "events.mail") == (
        "/topic/events",
        {
            "durable": "true",
            "auto-delete": "false",
            "x-queue-name": "events.mail",
            "prefetch-count": "1",
        },
    )
    assert flavor.send_later("jobs", 0.5) == (
        "/queue/courier.delay.1000.queue.jobs",
        {
            "persistent": "true",
            "x-message-ttl": "1000",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "jobs",
        },
    )
    destination, headers = flavor.send_to_topic_later("events", 3.0)
    assert destination == "/queue/courier.delay.3000.topic.events"
    assert headers["x-dead-letter-exchange"] == "amq.topic"
    assert headers["x-dead-letter-routing-key"] == "events"
    quorum = RabbitMq(StompOptions(queue_type="quorum"))
    assert quorum.send_to("jobs")[1] == {"persistent": "true", "x-queue-type": "quorum"}
    assert quorum.consume_from("jobs", 5)[1]["x-queue-type"] == "quorum"
    assert quorum.declare_subscription("e", "s", "e.s")[1]["x-queue-type"] == "quorum"


def test_a_delay_is_rounded_up_to_the_next_level() -> None:
    flavor = RabbitMq(StompOptions(delay_levels=(0.2, 1.0, 3.0)))
    assert flavor.level(0.01) == 0.2
    assert flavor.level(0.2) == 0.2
    assert flavor.level(0.21) == 1.0
    assert flavor.level(2.5) == 3.0
    assert flavor.max_delay == 3.0
    with pytest.raises(ConfigurationError, match="longest delay level"):
        flavor.level(3.5)


def test_activemq_and_artemis_destinations() -> None:
    amq = flavor_for(StompOptions(flavor="activemq"))
    assert isinstance(amq, ActiveMq)
    assert amq.send_to("jobs") == ("/queue/jobs", {"persistent": "true"})
    assert amq.consume_from("jobs", 7) == ("/queue/jobs", {"activemq.prefetchSize": "7"})
    assert amq.send_to_topic("events")[0] == "/topic/VirtualTopic.events"
    assert amq.consume_from("events.mail", 7, ("events", "mail"))[0] == (
        "/queue/Consumer.mail.VirtualTopic.events"
    )
    assert amq.send_later("jobs", 2.5) == (
        "/queue/jobs",
        {"persistent": "true", "AMQ_SCHEDULED_DELAY": "2500"},
    )
    assert amq.max_delay is None
    assert amq.is_reserved("JMSXDeliveryCount")
    assert amq.is_reserved("AMQ_SCHEDULED_DELAY")
    artemis = flavor_for(StompOptions(flavor="artemis"))
    assert isinstance(artemis, Artemis)
    assert artemis.send_to("jobs") == (
        "jobs",
        {"persistent": "true", "destination-type": "ANYCAST"},
    )
    assert artemis.send_to_topic("events")[1]["destination-type"] == "MULTICAST"
    assert artemis.consume_from("events.mail", 2, ("events", "mail")) == (
        "events::events.mail",
        {"subscription-type": "MULTICAST", "consumer-window-size": "2048"},
    )


def test_delivery_counts() -> None:
    rabbit = RabbitMq(StompOptions(queue_type="quorum"))
    assert rabbit.counts_deliveries
    assert rabbit.delivery_count({}) == 1
    assert rabbit.delivery_count({"x-delivery-count": "0"}) == 1
    assert rabbit.delivery_count({"x-delivery-count": "4", "redelivered": "true"}) == 5
    # Where only the flag is given, a redelivery counts as at least a second delivery.
    assert rabbit.delivery_count({"redelivered": "true"}) == 2
    assert rabbit.delivery_count({"x-delivery-count": "junk"}) == 1
    assert not RabbitMq(StompOptions()).counts_deliveries
    assert ActiveMq(StompOptions()).delivery_count({"redelivered": "true"}) == 2


# -- headers on the wire -------------------------------------------------------


def test_headers_travel_natively_unless_they_cannot() -> None:
    flavor = RabbitMq(StompOptions())
    courier = {
        "content-type": "application/json",
        "courier-type": "a.b",
        "courier-id": "m-1",
        "x-tenant": "acme",
        "multi": "line\nbreak: and \\ colon",
    }
    awkward = {
        "destination": "/queue/elsewhere",
        "receipt": "forged",
        "x-message-ttl": "1",
        "weird:key": "v",
        "späť": "unicode name",
        "nul": "a\x00b",
        PACKED: "not mine",
        "x" * 200: "long name",
    }
    headers = outgoing({**courier, **awkward}, flavor)
    assert {name: headers[name] for name in courier} == courier
    assert set(headers) == {*courier, PACKED}
    back, problem = incoming({**headers, "destination": "/queue/q", "ack": "T_1"}, flavor)
    assert problem is None
    assert back == {**courier, **awkward}


def test_incoming_drops_the_brokers_headers() -> None:
    flavor = RabbitMq(StompOptions())
    frame = {
        "subscription": "sub-1",
        "destination": "/queue/q",
        "message-id": "T_sub-1@@session@@1",
        "ack": "T_sub-1@@session@@1",
        "redelivered": "true",
        "receipt": "g1-1",
        "persistent": "true",
        "content-length": "12",
        "x-delivery-count": "2",
        "x-first-death-reason": "expired",
        "x-message-ttl": "1000",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "q",
        "courier-type": "a.b",
        "x-tenant": "acme",
    }
    assert incoming(frame, flavor) == ({"courier-type": "a.b", "x-tenant": "acme"}, None)


@pytest.mark.parametrize("blob", ["{not json", "[1, 2]", '{"a": 1}'])
def test_a_malformed_packed_header_is_reported(blob: str) -> None:
    headers, problem = incoming({PACKED: blob, "courier-type": "a.b"}, RabbitMq(StompOptions()))
    assert problem is not None
    assert PACKED in problem
    assert headers[PACKED] == blob
