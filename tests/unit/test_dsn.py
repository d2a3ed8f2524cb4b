"""DSN parsing, option checking, and a password that never shows."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from courier import Bus, ConfigurationError, Dsn
from courier.transports.dsn import MASK, TransportOptions
from courier.transports.memory import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable

PASSWORD = "p@ss:w/rd%"
#: Every form the password may be printed in.
FORMS = (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), "p%40ss")
AMQP = f"amqp://guest:{quote(PASSWORD, safe='')}@rabbit.local:5672/%2f?queue=email&prefetch=50"


def assert_no_password(text: str) -> None:
    for form in FORMS:
        assert form not in text, f"{form!r} leaked into {text!r}"


def test_parse_every_part() -> None:
    dsn = Dsn.parse(AMQP)
    assert dsn.scheme == "amqp"
    assert dsn.username == "guest"
    assert dsn.password == PASSWORD
    assert dsn.has_password
    assert dsn.host == "rabbit.local"
    assert dsn.port == 5672
    assert dsn.path == "//"  # the vhost "/" after the path's own slash
    assert dsn.options == {"queue": "email", "prefetch": "50"}


def test_parse_without_credentials_or_port() -> None:
    dsn = Dsn.parse("beanstalk://localhost?tube=email")
    assert (dsn.scheme, dsn.host, dsn.port, dsn.username, dsn.password) == (
        "beanstalk",
        "localhost",
        None,
        None,
        None,
    )
    assert not dsn.has_password
    assert dsn.path == ""
    assert dsn.options == {"tube": "email"}


def test_scheme_and_host_are_lowercased() -> None:
    dsn = Dsn.parse("REDIS://Cache.Example.COM:6379/0")
    assert dsn.scheme == "redis"
    assert dsn.host == "cache.example.com"
    assert dsn.path == "/0"


def test_ipv6_host() -> None:
    dsn = Dsn.parse("amqp://u:pw@[::1]:5672/")
    assert dsn.host == "::1"
    assert str(dsn) == f"amqp://u:{MASK}@[::1]:5672/"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("sqlite:///courier.db?queue=email", "/courier.db"),
        ("sqlite:////var/lib/courier/courier.db", "//var/lib/courier/courier.db"),
        ("sqlite:///data/my%20app.db", "/data/my app.db"),
        ("sqlite:///:memory:", "/:memory:"),
    ],
)
def test_sqlite_paths(text: str, path: str) -> None:
    dsn = Dsn.parse(text)
    assert dsn.scheme == "sqlite"
    assert dsn.host is None
    assert dsn.path == path
    assert Dsn.parse(str(dsn)) == dsn
    assert str(dsn) == text


def test_memory_dsn_names_a_shared_broker() -> None:
    assert Dsn.parse("memory://").host is None
    assert Dsn.parse("memory://shared?queue=q").host == "shared"


def test_options_keep_blank_values_and_refuse_repeats() -> None:
    assert Dsn.parse("memory://?queue=").options == {"queue": ""}
    with pytest.raises(ConfigurationError, match="'queue' appears twice"):
        Dsn.parse("memory://?queue=a&queue=b")


def test_password_never_renders() -> None:
    dsn = Dsn.parse(AMQP)
    for text in (repr(dsn), str(dsn), dsn.render(), f"{dsn}", f"{dsn!r}"):
        assert_no_password(text)
        assert f"guest:{MASK}@" in text
    assert str(dsn) == f"amqp://guest:{MASK}@rabbit.local:5672/%2f?queue=email&prefetch=50"


def test_reveal_is_explicit_and_round_trips() -> None:
    dsn = Dsn.parse(AMQP)
    revealed = dsn.render(reveal=True)
    assert quote(PASSWORD, safe="") in revealed
    assert Dsn.parse(revealed).password == PASSWORD
    assert Dsn.parse(revealed) == dsn


def test_equal_dsns_with_different_passwords_differ_but_hash_alike() -> None:
    one = Dsn.parse("amqp://u:one@h/")
    two = Dsn.parse("amqp://u:two@h/")
    assert one != two
    assert one == Dsn.parse("amqp://u:one@h/")
    assert hash(one) == hash(two)  # the hash never depends on the secret


def test_mask_removes_every_form_of_every_secret() -> None:
    dsn = Dsn.parse(AMQP.replace("prefetch=50", "api_key=K3Y-VALUE"))
    text = (
        f"could not log in with {PASSWORD} to {dsn.render(reveal=True)} "
        f"(also {quote(PASSWORD)}), key K3Y-VALUE"
    )
    masked = dsn.mask(text)
    assert_no_password(masked)
    assert "K3Y-VALUE" not in masked
    assert masked.count(MASK) >= 4


@pytest.mark.parametrize(
    "option",
    [
        "password",
        "secret",
        "token",
        "access_token",
        "api_key",
        "client_secret",
        "passphrase",
        "sasl_credentials",
        "ACCESS_KEY",
    ],
)
def test_secret_looking_options_are_masked(option: str) -> None:
    dsn = Dsn.parse(f"sqs://sqs.example.com/queue?{option}=TopSecret99&region=eu-west-1")
    assert "TopSecret99" not in str(dsn)
    assert "TopSecret99" not in repr(dsn)
    assert f"{option}={MASK}" in str(dsn)
    assert "region=eu-west-1" in str(dsn)
    assert "TopSecret99" in dsn.secrets()


@pytest.mark.parametrize(
    "text",
    [
        f"amqp://guest:{quote(PASSWORD, safe='')}@rabbit.local:notaport/",
        f"amqp://guest:{quote(PASSWORD, safe='')}@rabbit.local:99999/",
        f"amqp://guest:{quote(PASSWORD, safe='')}@[::1/",
        f"amqp//guest:{quote(PASSWORD, safe='')}@rabbit.local/",
        f"amqp://guest:{PASSWORD}@rabbit.local/",  # not encoded: '/' ends the host early
    ],
    ids=["port", "port-range", "ipv6", "no-scheme", "unencoded"],
)
def test_parse_errors_never_quote_the_dsn(text: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Dsn.parse(text)
    assert_no_password(str(caught.value))
    assert_no_password(repr(caught.value))


class Options(TransportOptions):
    queue: str = "default"
    prefetch: int = 10


def test_options_are_checked_against_the_transport_model() -> None:
    options = Dsn.parse("x://h?queue=email&prefetch=50").option_model(Options)
    assert options == Options(queue="email", prefetch=50)


def test_unknown_option_is_an_error_naming_it_and_hiding_the_password() -> None:
    dsn = Dsn.parse(AMQP.replace("prefetch=50", "prefecth=50"))
    with pytest.raises(ConfigurationError) as caught:
        dsn.option_model(Options)
    text = str(caught.value)
    assert "unknown option 'prefecth'" in text
    assert "known: prefetch, queue" in text
    assert_no_password(text)


def test_bad_option_value_is_an_error_naming_the_option() -> None:
    dsn = Dsn.parse(AMQP.replace("prefetch=50", "prefetch=many"))
    with pytest.raises(ConfigurationError, match="option 'prefetch': Input should be a valid") as e:
        dsn.option_model(Options)
    assert_no_password(str(e.value))


def test_unknown_secret_option_is_masked_in_the_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'password'") as caught:
        Dsn.parse("memory://?queue=q&password=hunter2").option_model(Options)
    assert "hunter2" not in str(caught.value)


def test_a_bus_refuses_unknown_transport_options(make_bus: Callable[..., Bus]) -> None:
    with pytest.raises(ConfigurationError, match="unknown option 'colour'"):
        make_bus(transports={"jobs": "memory://?queue=jobs&colour=red"})


def test_a_bus_keeps_the_dsn_masked(make_bus: Callable[..., Bus]) -> None:
    bus = make_bus(transports={"jobs": "memory://user:abc123@shared?queue=jobs"})
    assert isinstance(bus.transport("jobs"), MemoryTransport)
    dsn = bus.dsn("jobs")
    assert dsn is not None
    assert dsn.password == "abc123"
    assert "abc123" not in str(dsn)
    assert "abc123" not in repr(bus)
    assert "abc123" not in repr(bus.transport("jobs"))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("amqp://user:4242/zq9x@host/%2f", "zq9x"),
        ("amqp://user:12?zq9x@host/%2f", "zq9x"),
        ("amqp://user:zq7#zq9x@host/%2f", "zq9x"),
    ],
    ids=["slash", "question-mark", "hash"],
)
def test_an_unencoded_password_is_refused_without_being_shown(text: str, shown: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Dsn.parse(text)
    message = str(raised.value)
    assert "URL-encode" in message
    assert shown not in message
    assert "zq7" not in message


def test_a_host_list_keeps_every_host_in_order_and_masks_the_password() -> None:
    dsn = Dsn.parse(f"amqp://guest:{quote(PASSWORD, safe='')}@h1:5672,H2:5673,[::1]/vh?queue=q")
    assert dsn.hosts == (("h1", 5672), ("h2", 5673), ("::1", None))
    assert (dsn.host, dsn.port, dsn.path) == ("h1", 5672, "/vh")
    assert dsn.password == PASSWORD
    assert str(dsn) == "amqp://guest:***@h1:5672,h2:5673,[::1]/vh?queue=q"
    assert Dsn.parse(dsn.render(reveal=True)) == dsn
    assert dsn.with_options(prefetch="5").hosts == dsn.hosts
    assert_no_password(repr(dsn))


def test_a_single_host_is_a_list_of_one() -> None:
    assert Dsn.parse("redis://cache:6379/0").hosts == (("cache", 6379),)
    assert Dsn.parse("sqlite:///courier.db").hosts == ()
    assert Dsn.parse("amqp://u:a,b@h:1/").hosts == (("h", 1),)  # a comma in a password is no list


@pytest.mark.parametrize("hosts", ["h1:5672,", "h1:5672,:5673", "h1:5672,h2:port", "h1,h2:99999"])
def test_a_bad_host_list_is_one_line_without_the_password(hosts: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid host in its host list") as caught:
        Dsn.parse(f"amqp://guest:{quote(PASSWORD, safe='')}@{hosts}/vh")
    assert_no_password(str(caught.value))
