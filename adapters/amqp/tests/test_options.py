"""The DSN and its options, and what the transport makes of them (no broker needed)."""

from __future__ import annotations

import ssl

import pytest

from courier.envelope import Envelope
from courier.errors import ConfigurationError, MessageTooLarge
from courier.testing.contract import ContractMessage, contract_serializer
from courier.transports.base import Unacked
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier_amqp import DEFAULT_DELAY_LEVELS, AmqpOptions, AmqpTransport
from courier_amqp.topology import Topology
from courier_amqp.wire import incoming_headers

#: Nothing listens here: a transport that tried to connect would fail.
NOWHERE = "amqp://user:s3cr3t-pw@127.0.0.1:1/%2f"


def transport(url: str = NOWHERE, **options: str) -> AmqpTransport:
    dsn = Dsn.parse(url).with_options(**options)
    return AmqpTransport(dsn, name="orders", serializer=contract_serializer())


def test_defaults_are_documented_values() -> None:
    options = AmqpOptions()
    assert options.queue == "default"
    assert options.exchange == ""
    assert options.queue_type == "quorum"
    assert options.delivery_limit == 20
    assert options.prefetch == 100
    assert options.confirm_window == 1000
    assert options.confirm_timeout == 30.0
    assert options.heartbeat == 60
    assert options.connect_timeout == 10.0
    assert options.auto_setup is True
    assert options.max_message_size == 128 * 1024 * 1024
    assert options.delay_levels == DEFAULT_DELAY_LEVELS == (1, 5, 30, 120, 600, 3600)
    assert options.dead_letter_exchange == "courier.dead-letter"
    assert options.dead_letter_suffix == ".dead"
    assert options.delay_prefix == "courier.delay"
    assert options.tls_verify is True


def test_delay_levels_are_parsed_sorted_and_deduplicated() -> None:
    options = Dsn.parse("amqp://h?delay_levels=30, 0.2,1,1.0").option_model(AmqpOptions)
    assert options.delay_levels == (0.2, 1.0, 30.0)


@pytest.mark.parametrize("levels", ["", "0", "-1", "1,x", "inf", "0.0001"])
def test_bad_delay_levels_are_refused(levels: str) -> None:
    with pytest.raises(ConfigurationError, match="delay_levels"):
        Dsn.parse(f"amqp://h?delay_levels={levels}").option_model(AmqpOptions)


def test_unknown_options_are_errors_and_the_password_stays_hidden() -> None:
    with pytest.raises(ConfigurationError) as caught:
        transport(prefecth="10")
    text = str(caught.value)
    assert "unknown option 'prefecth'" in text
    assert "prefetch" in text
    assert "s3cr3t-pw" not in text
    with pytest.raises(ConfigurationError, match="queue_type"):
        transport(queue_type="stream")


def test_the_transport_does_not_connect_until_used() -> None:
    made = transport(queue="orders")
    assert made.session is None
    assert "s3cr3t-pw" not in repr(made)
    assert "***" in repr(made)
    made.close()


def test_amqp_and_amqps_are_registered_entry_points() -> None:
    for scheme in ("amqp", "amqps"):
        opened = open_transport(
            f"{scheme}://u:p@127.0.0.1:1/%2f?queue=jobs",
            name="jobs",
            serializer=contract_serializer(),
        )
        assert isinstance(opened, AmqpTransport)
        assert opened.queue == "jobs"
        opened.close()


def test_capabilities_follow_the_options() -> None:
    quorum = transport(delay_levels="1,10", max_message_size="1000")
    capabilities = quorum.capabilities
    assert capabilities.delay
    assert capabilities.max_delay == 10
    assert capabilities.max_message_size == 1000
    assert capabilities.delivery_count
    assert capabilities.native_dead_letter
    assert not capabilities.priority
    assert not capabilities.listable
    assert not capabilities.lease
    assert capabilities.unacked_on_reconnect is Unacked.REQUEUED
    assert not transport(queue_type="classic").capabilities.delivery_count


@pytest.mark.parametrize(
    ("path", "vhost"), [("", "/"), ("/", "/"), ("/%2f", "/"), ("/prod", "prod"), ("/%2fa", "/a")]
)
def test_the_path_is_the_vhost(path: str, vhost: str) -> None:
    made = transport(f"amqp://u:p@broker{path}")
    params = made._params[0]
    assert params.virtual_host == vhost
    assert (params.host, params.port) == ("broker", 5672)


def test_connection_parameters() -> None:
    made = transport(heartbeat="7", connect_timeout="3", blocked_timeout="9")
    params = made._params[0]
    assert params.credentials.username == "user"
    assert params.heartbeat == 7
    assert params.socket_timeout == params.stack_timeout == 3
    assert params.blocked_connection_timeout == 9
    assert params.ssl_options is None
    assert params.client_properties["connection_name"].startswith("courier orders ")
    named = transport(connection_name="billing worker 3")
    assert named._params[0].client_properties["connection_name"] == "billing worker 3"


def test_the_worker_id_names_the_connection_unless_the_dsn_does() -> None:
    made = transport()
    made.identify("mailer-7")
    assert made._params[0].client_properties["connection_name"] == "courier orders mailer-7"
    named = transport(connection_name="billing worker 3")
    named.identify("mailer-7")
    assert named._params[0].client_properties["connection_name"] == "billing worker 3"


def test_amqps_builds_a_verifying_tls_context() -> None:
    made = transport("amqps://u:p@rabbit.example/%2f", tls_server_name="rabbit.internal")
    params = made._params[0]
    assert params.port == 5671
    assert params.ssl_options.server_hostname == "rabbit.internal"
    context = params.ssl_options.context
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    lax = transport("amqps://u:p@rabbit.example/%2f", tls_verify="false")._params[0]
    assert lax.ssl_options.context.verify_mode is ssl.CERT_NONE
    assert lax.ssl_options.server_hostname == "rabbit.example"


def test_amqps_with_missing_files_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="TLS"):
        transport("amqps://u:p@h/%2f", tls_ca_file="/nonexistent/ca.pem")


def test_a_tls_key_password_is_masked() -> None:
    dsn = Dsn.parse("amqps://u:p@h/%2f?tls_key_password=k3y-pw")
    assert "k3y-pw" not in str(dsn)
    assert "k3y-pw" in dsn.secrets()


def test_too_large_is_refused_before_any_network_call() -> None:
    made = transport(max_message_size="100")
    with pytest.raises(MessageTooLarge):
        made.send(Envelope(ContractMessage(n=1, text="x" * 200)))
    assert made.session is None
    made.close()


def test_a_delay_is_rounded_up_to_the_next_level() -> None:
    topology = Topology(AmqpOptions(delay_levels=(0.2, 1.0, 3.0)))
    assert topology.level(0.01) == 0.2
    assert topology.level(0.2) == 0.2
    assert topology.level(0.21) == 1.0
    assert topology.level(2.5) == 3.0
    assert topology.delay_exchange(0.5) == "courier.delay.1000"
    assert topology.delay_queues() == [
        "courier.delay.200",
        "courier.delay.1000",
        "courier.delay.3000",
    ]
    with pytest.raises(ConfigurationError, match="longest delay level"):
        topology.level(3.5)


def test_queue_arguments() -> None:
    quorum = Topology(AmqpOptions(delivery_limit=15))
    assert quorum.queue_arguments("jobs") == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 15,
        "x-dead-letter-exchange": "courier.dead-letter",
        "x-dead-letter-routing-key": "jobs",
    }
    assert quorum.delay_arguments(1.0) == {
        "x-queue-type": "quorum",
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    classic = Topology(AmqpOptions(queue_type="classic"))
    assert "x-delivery-limit" not in classic.queue_arguments("jobs")
    assert "x-dead-letter-strategy" not in classic.delay_arguments(1.0)


class _Properties:
    def __init__(self, headers: dict[str, object] | None, **fields: object) -> None:
        self.headers = headers
        self.content_type = fields.get("content_type")
        self.message_id = fields.get("message_id")
        self.type = fields.get("type")


def test_incoming_headers_become_str_and_broker_headers_go() -> None:
    headers, count = incoming_headers(
        _Properties(
            {
                "courier-type": "a.b",
                "n": 3,
                "raw": b"\xffok",
                "flag": True,
                "x-tenant": "acme",
                "x-delivery-count": 2,
                "x-death": [{"count": 1, "reason": "expired"}],
                "x-first-death-reason": "expired",
            },
            content_type="application/json",
            message_id="m-1",
        )
    )
    assert count == 3
    assert headers == {
        "courier-type": "a.b",
        "n": "3",
        "raw": "\ufffdok",
        "flag": "true",
        "x-tenant": "acme",
        "content-type": "application/json",
        "courier-id": "m-1",
    }
    assert incoming_headers(_Properties(None)) == ({}, 1)
    assert incoming_headers(_Properties(None, type="a.b")) == ({"courier-type": "a.b"}, 1)
    assert incoming_headers(_Properties({"x-delivery-count": 0}))[1] == 1
    options = transport("amqps://u:p@h/%2f?tls_key_password=k3y-pw").options
    assert options.tls_key_password is not None
    assert options.tls_key_password.get_secret_value() == "k3y-pw"
    assert "k3y-pw" not in repr(options)
    assert "k3y-pw" not in str(options)


def test_a_host_list_becomes_one_parameter_set_per_host_in_order() -> None:
    made = transport("amqp://u:p@h1:5672,h2:5673,h3/vh")
    assert [(params.host, params.port) for params in made._params] == [
        ("h1", 5672),
        ("h2", 5673),
        ("h3", 5672),
    ]
    assert {params.virtual_host for params in made._params} == {"vh"}
    assert "p@" not in repr(made)


def test_priorities_need_a_classic_queue() -> None:
    with pytest.raises(ConfigurationError, match="max_priority needs queue_type=classic"):
        transport(max_priority="9")
    classic = transport(queue_type="classic", max_priority="9")
    assert classic.capabilities.priority
    assert classic.topology.queue_arguments("q")["x-max-priority"] == 9
    assert not transport().capabilities.priority


def test_lease_sets_the_heartbeat() -> None:
    assert transport(lease="10")._params[0].heartbeat == 5
    with pytest.raises(ConfigurationError, match="lease or heartbeat"):
        transport(lease="10", heartbeat="3")
