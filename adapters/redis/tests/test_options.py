"""The DSN and its options, the key layout and the wire format (no Redis needed)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr
from redis.crc import key_slot

from courier.envelope import Envelope
from courier.errors import ConfigurationError, MessageTooLarge, PublishNotConfirmed
from courier.testing.contract import ContractMessage, contract_serializer
from courier.transports.base import Unacked, subscription_queue
from courier.transports.dsn import Dsn
from courier.transports.registry import open_transport
from courier_redis import RedisOptions, RedisTransport
from courier_redis.connection import client_parameters
from courier_redis.keys import queue_from_stream, queue_keys, topic_keys
from courier_redis.wire import entry_fields, fields_of_member, member, split_fields

#: Nothing listens here: a transport that tried to connect would fail.
NOWHERE = "redis://app:s3cr3t-pw@127.0.0.1:1/0"


def transport(url: str = NOWHERE, **options: str) -> RedisTransport:
    dsn = Dsn.parse(url).with_options(**options)
    return RedisTransport(dsn, name="orders", serializer=contract_serializer())


def params(url: str, **options: str) -> dict[str, object]:
    dsn = Dsn.parse(url).with_options(**options)
    return client_parameters(dsn, dsn.option_model(RedisOptions), "courier:test")


def test_defaults_are_documented_values() -> None:
    options = RedisOptions()
    assert options.queue == "default"
    assert options.group == "courier"
    assert options.prefix == "courier:"
    assert options.lease == 120.0
    assert options.reclaim_every() == 5.0
    assert options.delay_check == 0.5
    assert options.consumer is None
    assert options.connect_timeout == 5.0
    assert options.socket_timeout == 10.0
    assert options.health_check_interval == 30.0
    assert options.max_message_size == 512 * 1024 * 1024
    assert options.tls_verify is True
    assert RedisOptions(lease=2).reclaim_every() == 1.0
    assert RedisOptions(lease=2, reclaim_interval=0.3).reclaim_every() == 0.3


def test_the_acceptance_dsn() -> None:
    made = transport("redis://127.0.0.1:6379/0?queue=jobs&lease=2")
    assert made.queue == "jobs"
    assert made.lease == 2.0
    assert made.keepalive_interval() == pytest.approx(2 / 3)
    assert made.keys().stream == "courier:{jobs}"


def test_stream_is_another_name_for_queue() -> None:
    assert transport(stream="mail").queue == "mail"
    assert transport(stream="mail", queue="mail").queue == "mail"
    with pytest.raises(ConfigurationError, match="queue or stream"):
        transport(stream="mail", queue="other")


def test_unknown_options_are_errors_and_the_password_stays_hidden() -> None:
    with pytest.raises(ConfigurationError) as caught:
        transport(leese="2")
    text = str(caught.value)
    assert "unknown option 'leese'" in text
    assert "lease" in text
    assert "s3cr3t-pw" not in text
    for bad in ({"lease": "0"}, {"lease": "-1"}, {"delay_check": "0"}, {"group": "a b"}):
        with pytest.raises(ConfigurationError):
            transport(**bad)


@pytest.mark.parametrize("queue", ["a{b", "a}b", ".hidden", ""])
def test_queue_names_that_cannot_be_tagged_keys_are_refused(queue: str) -> None:
    with pytest.raises(ConfigurationError, match="queue"):
        transport(queue=queue)
    made = transport()
    if queue:
        with pytest.raises(ConfigurationError, match="queue"):
            made.keys(queue)


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        transport(prefix="app{1}:")


def test_the_transport_does_not_connect_until_used_and_never_shows_the_password() -> None:
    made = transport(queue="orders")
    assert not made.link.connected
    assert "s3cr3t-pw" not in repr(made)
    assert "***" in repr(made)
    assert "s3cr3t-pw" not in repr(made.options)
    made.close()


def test_a_tls_key_password_is_a_masked_secret() -> None:
    dsn = Dsn.parse("rediss://u:p@h/0?tls_key_password=k3y-pw")
    assert "k3y-pw" not in str(dsn)
    options = dsn.option_model(RedisOptions)
    assert isinstance(options.tls_key_password, SecretStr)
    assert "k3y-pw" not in repr(options)


def test_every_scheme_is_a_registered_entry_point() -> None:
    for url in (
        "redis://u:p@127.0.0.1:1/0?queue=jobs",
        "rediss://u:p@127.0.0.1:1/0?queue=jobs",
        "redis+unix:///tmp/nowhere.sock?queue=jobs",
        "redis+cluster://u:p@127.0.0.1:1,127.0.0.1:2?queue=jobs",
        "rediss+cluster://u:p@127.0.0.1:1,127.0.0.1:2?queue=jobs",
    ):
        opened = open_transport(url, name="jobs", serializer=contract_serializer())
        assert isinstance(opened, RedisTransport)
        assert opened.queue == "jobs"
        opened.close()


def test_capabilities() -> None:
    capabilities = transport(max_message_size="1000").capabilities
    assert capabilities.delay
    assert capabilities.max_delay is None
    assert not capabilities.priority
    assert capabilities.lease
    assert not capabilities.ttr
    assert capabilities.native_dead_letter
    assert capabilities.delivery_count
    assert capabilities.listable
    assert capabilities.max_message_size == 1000
    assert capabilities.unacked_on_reconnect is Unacked.KEPT
    assert transport().capabilities.max_message_size == 512 * 1024 * 1024


def test_tcp_parameters_user_password_database_timeouts() -> None:
    made = params(
        "redis://worker:pw@cache.internal:6380/3",
        connect_timeout="2",
        socket_timeout="7",
        health_check_interval="0",
    )
    assert (made["host"], made["port"], made["db"]) == ("cache.internal", 6380, 3)
    assert (made["username"], made["password"]) == ("worker", "pw")
    assert (made["socket_connect_timeout"], made["socket_timeout"]) == (2.0, 7.0)
    assert made["health_check_interval"] == 0.0
    assert made["decode_responses"] is False
    assert "ssl" not in made
    assert params("redis://h")["port"] == 6379
    assert params("redis://h")["db"] == 0
    assert params("redis://:only-a-password@h/")["username"] is None


def test_database_errors() -> None:
    with pytest.raises(ConfigurationError, match="database index"):
        params("redis://h/zero")
    with pytest.raises(ConfigurationError, match="path"):
        params("redis://h/0", db="1")
    with pytest.raises(ConfigurationError, match="only database 0"):
        params("redis+cluster://h1:1,h2:2/1")
    with pytest.raises(ConfigurationError, match=r"\+cluster"):
        params("redis://h1:1,h2:2/0")


def test_unix_socket_parameters() -> None:
    made = params("redis+unix:///run/redis/redis.sock", db="2")
    assert made["unix_socket_path"] == "/run/redis/redis.sock"
    assert made["db"] == 2
    assert "host" not in made
    with pytest.raises(ConfigurationError, match="socket"):
        params("redis+unix://host/")


def test_cluster_parameters_name_every_seed_node() -> None:
    made = params("redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7001,10.0.0.3")
    nodes = made["startup_nodes"]
    assert isinstance(nodes, list)
    assert [(node.host, node.port) for node in nodes] == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
        ("10.0.0.3", 6379),
    ]
    assert "db" not in made
    assert made["password"] == "pw"


def test_rediss_builds_a_verifying_tls_client(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    cert = tmp_path / "client.pem"
    key = tmp_path / "client.key"
    for path in (ca, cert, key):
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    made = params(
        "rediss://u:pw@redis.example:6380/0",
        tls_ca_file=str(ca),
        tls_cert_file=str(cert),
        tls_key_file=str(key),
        tls_key_password="k3y-pw",
    )
    assert made["ssl"] is True
    assert made["ssl_cert_reqs"] == "required"
    assert made["ssl_check_hostname"] is True
    assert (made["ssl_ca_certs"], made["ssl_certfile"], made["ssl_keyfile"]) == (
        str(ca),
        str(cert),
        str(key),
    )
    assert made["ssl_password"] == "k3y-pw"
    # redis-py takes them: a client made from them speaks TLS, verifying (not connected yet).
    client = redis.Redis(**made)  # type: ignore[arg-type]
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    connection = pool.make_connection()
    assert connection.cert_reqs == ssl.CERT_REQUIRED
    assert connection.check_hostname is True
    client.close()
    lax = params("rediss://u:pw@redis.example/0", tls_verify="false")
    assert lax["ssl_cert_reqs"] == "none"
    assert lax["ssl_check_hostname"] is False
    assert params("rediss+cluster://h1:1,h2:2")["ssl"] is True


def test_tls_mistakes_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="TLS"):
        params("rediss://h/0", tls_ca_file="/nonexistent/ca.pem")
    with pytest.raises(ConfigurationError, match="rediss://"):
        params("redis://h/0", tls_verify="false")


def test_too_large_is_refused_before_any_network_call() -> None:
    made = transport(max_message_size="100")
    with pytest.raises(MessageTooLarge):
        made.send(Envelope(ContractMessage(n=1, text="x" * 200)))
    with pytest.raises(PublishNotConfirmed, match="header named 'body'"):
        made.send(Envelope(ContractMessage(n=1), headers={"body": "x"}))
    assert not made.link.connected
    made.close()


def test_the_worker_id_names_the_consumer_unless_the_dsn_does() -> None:
    made = transport()
    made.identify("mailer-7")
    assert made.consumer.startswith("mailer-7.")
    assert made.link.parameters["client_name"] == f"courier:orders:{made.consumer}"
    twin = transport()
    twin.identify("mailer-7")
    assert twin.consumer != made.consumer  # two processes with one id never share a name
    named = transport(consumer="billing-3")
    named.identify("mailer-7")
    assert named.consumer.startswith("billing-3.")


def test_every_key_of_a_queue_and_of_a_topic_shares_one_slot() -> None:
    keys = queue_keys("courier:", "email")
    assert (keys.stream, keys.delayed, keys.dead, keys.kept) == (
        "courier:{email}",
        "courier:delayed:{email}",
        "courier:dead:{email}",
        "courier:kept:{email}",
    )
    for topic in ("user.registered", "orders"):
        topic_key = topic_keys("courier:", topic)
        slots = {key_slot(topic_key.subscriptions.encode())}
        for subscription in ("mail", "audit.log"):
            queue = queue_keys("courier:", subscription_queue(topic, subscription))
            assert queue.stream == topic_key.stream_prefix + subscription
            assert queue.delayed == topic_key.delayed_prefix + subscription
            slots |= {key_slot(k.encode()) for k in (queue.stream, queue.delayed, queue.dead)}
        assert len(slots) == 1
    assert queue_from_stream("courier:", "courier:{user}.registered.mail") == (
        "user.registered.mail"
    )
    assert queue_from_stream("courier:", "courier:delayed:{user}") is None


def test_an_entry_is_its_body_and_one_field_per_header() -> None:
    fields = entry_fields(b'{"n":1}', {"courier-type": "a.b", "x": "1"})
    assert fields == ["body", b'{"n":1}', "courier-type", "a.b", "x", "1"]
    as_redis = [f.encode() if isinstance(f, str) else f for f in fields]
    assert split_fields(as_redis) == (b'{"n":1}', {"courier-type": "a.b", "x": "1"})
    assert split_fields({b"x": b"\xff"}) == (None, {"x": "\ufffd"})
    usual = [b"body", b"{}", b"content-type", b"application/json", b"courier-type", b"a\xff"]
    usual += [b"courier-id", b"i", b"courier-created", b"1.5"]
    assert split_fields(usual)[1] == {
        "content-type": "application/json",
        "courier-type": "a\ufffd",
        "courier-id": "i",
        "courier-created": "1.5",
    }


def test_a_delay_member_round_trips_binary_fields_and_is_unique() -> None:
    fields = [b"body", b"\x00\xff:12:", b"courier-id", b"x"]
    first, second = member(fields), member(fields)
    assert first != second
    assert fields_of_member(first) == fields
    assert fields_of_member(b"too short") is None
    assert fields_of_member(b"0" * 16 + b"5:ab") is None
