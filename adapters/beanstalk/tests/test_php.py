"""``format=php``: a PHP application's tube, drained by a courier worker.

A foreign producer (raw greenstalk here, Pheanstalk in real life) puts
``{"job": "send_email", "data": {...}}``; the job name picks the message
type, only registered types are built, and everything else is kept as an
invalid message with its reason.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.dead_letters import InvalidMessage
from courier.envelope import Envelope
from courier.errors import MessageDecodingFailed, ValidationFailed
from courier.serializer import JsonSerializer, pack
from courier.testing.contract import contract_serializer
from courier.testing.waiting import wait_for
from courier_beanstalk import PhpJobSerializer

pytestmark = pytest.mark.beanstalk

JOBS = "send_email:email.send,SendWelcome:email.send"


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"

    to: str
    subject: str


class Welcome(Message):
    message_name: ClassVar[str] = "user.welcome"

    name: str


def php_job(job: str, data: Any, **extra: Any) -> bytes:
    return json.dumps({"job": job, "data": data, **extra}).encode()


def test_a_worker_drains_php_jobs_and_keeps_what_it_cannot_read(janitor: Any, spawn: Any) -> None:
    queue = janitor.name("php")
    php_workers = spawn(janitor.dsn(queue, format="php", jobs=JOBS))
    php_workers.message_types.append(SendEmail)
    put = janitor.put_raw
    put(queue, php_job("send_email", {"to": "ada@example.com", "subject": "mapped"}))
    put(queue, php_job("SendWelcome", {"to": "bob@example.com", "subject": "second-name"}))
    put(queue, php_job("email.send", {"to": "cy@example.com", "subject": "wire-name"}))
    put(queue, php_job("send_email", {"to": "di@example.com", "subject": "has-id"}, id="php-42"))
    put(queue, php_job("send_email", {"to": "ed@example.com", "subject": "flaky"}))
    put(queue, php_job("charge_card", {"amount": 10}), priority=5)
    put(queue, php_job("send_email", {"to": ["not", "a", "string"], "subject": "x"}))
    put(queue, php_job("send_email", "not an object"))
    put(queue, b'{"data": {"to": "x"}}')
    put(queue, php_job("os.system", {"cmd": "rm -rf /"}))
    put(queue, b'O:8:"stdClass":0:{}')  # PHP's serialize(): never unserialized
    php_workers.start(flaky="flaky")
    wait_for(lambda: len(php_workers.store_records("invalid")) == 6, 20, "six invalid records")
    wait_for(lambda: len(php_workers.lines("email")) == 6, 20, "six emails, one retried")
    emails = php_workers.lines("email")
    by_subject: dict[str, list[list[str]]] = {}
    for fields in emails:
        by_subject.setdefault(fields[1], []).append(fields)
    assert sorted(by_subject) == ["flaky", "has-id", "mapped", "second-name", "wire-name"]
    assert by_subject["has-id"][0][2] == "php-42"
    # The flaky one failed once and came back as attempt 2, with the same id.
    flaky = by_subject["flaky"]
    assert [fields[3] for fields in flaky] == ["1", "2"]
    assert flaky[0][2] == flaky[1][2]

    reasons = {}
    for record in php_workers.store_records("invalid"):
        message = record.message
        assert isinstance(message, InvalidMessage)
        assert message.queue == queue
        reasons[message.body] = message.reason
    assert "unknown message type 'charge_card'" in reasons[php_job("charge_card", {"amount": 10})]
    bad_to = php_job("send_email", {"to": ["not", "a", "string"], "subject": "x"})
    assert reasons[bad_to].startswith("invalid email.send: to")
    assert "'data' is not a JSON object" in reasons[php_job("send_email", "not an object")]
    assert "no 'job' name" in reasons[b'{"data": {"to": "x"}}']
    assert "unknown message type 'os.system'" in reasons[php_job("os.system", {"cmd": "rm -rf /"})]
    assert "malformed JSON" in reasons[b'O:8:"stdClass":0:{}']
    php_workers.stop_all()
    assert php_workers.processes[0].returncode == 0, php_workers.stderr()
    assert janitor.counts(queue) == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def test_courier_writes_php_shaped_jobs_to_a_php_tube(janitor: Any) -> None:
    queue = janitor.name("php")
    bus = Bus(transports={"php": janitor.dsn(queue, format="php", jobs=JOBS)})
    bus.route(SendEmail, "php")
    sent = bus.dispatch(SendEmail(to="ada@example.com", subject="hello"), priority=9)
    client = janitor.client()
    client.use(queue)
    job = json.loads(client.peek_ready().body)
    # What a PHP worker reads: the first job name mapped to the type, and the data.
    assert job["job"] == "send_email"
    assert job["data"] == {"to": "ada@example.com", "subject": "hello"}
    assert job["courier"]["courier-id"] == sent.id
    assert job["courier"]["courier-priority"] == "9"
    [got] = bus.transport("php").receive(timeout=2)
    assert got.envelope == sent.with_(transport_message_id=got.envelope.transport_message_id)
    bus.transport("php").ack(got)
    bus.close()


def test_a_php_tube_also_reads_courier_jobs(janitor: Any) -> None:
    queue = janitor.name("php")
    transport = janitor.transport(queue, format="php", jobs="x:courier.contract.message")
    body = b'{"n": 3, "text": "packed"}'
    janitor.put_raw(
        queue, pack(body, {"courier-type": "courier.contract.message", "courier-id": "c1"})
    )
    [got] = transport.receive(timeout=2)
    assert got.envelope.id == "c1"
    assert got.envelope.message.n == 3
    transport.ack(got)


def serializer(jobs: dict[str, str] | None = None) -> PhpJobSerializer:
    registry_bus = Bus()
    registry_bus.register_messages(Welcome)
    assert isinstance(registry_bus.serializer, JsonSerializer)
    return PhpJobSerializer(registry_bus.serializer, jobs or {"welcome": "user.welcome"})


def test_the_serializer_round_trips_and_derives_a_stable_id() -> None:
    php = serializer()
    envelope = Envelope(Welcome(name="Ada"), attempt=2, headers={"tenant": "acme"})
    body, headers = php.encode(envelope)
    assert headers == {}
    assert json.loads(body)["job"] == "welcome"
    assert php.decode(body, {}) == envelope
    job = php_job("welcome", {"name": "Bo"})
    first = php.decode(job, {"beanstalk-job-id": "7"})
    again = php.decode(job, {"beanstalk-job-id": "7"})
    other = php.decode(job, {"beanstalk-job-id": "8"})
    assert first.id == again.id != other.id
    assert first.attempt == 1


@pytest.mark.parametrize(
    ("body", "error", "reason"),
    [
        (b"", MessageDecodingFailed, "empty job"),
        (b"\xff", MessageDecodingFailed, "not UTF-8"),
        (b"[]", MessageDecodingFailed, "not a JSON object"),
        (php_job("", {}), MessageDecodingFailed, "non-empty string"),
        (
            php_job("welcome", {}, courier={"courier-attempt": 2}),
            MessageDecodingFailed,
            "'courier'",
        ),
        (php_job("welcome", {"name": 1}), ValidationFailed, "invalid user.welcome: name"),
        (php_job("x", {}), MessageDecodingFailed, "unknown message type 'x'"),
        (php_job("courier.invalid-message", {}), MessageDecodingFailed, "reserved type"),
        (
            b'{"job": "welcome", "data": {"name": "' + b"x" * 70_000 + b'"}}',
            MessageDecodingFailed,
            "exceeds",
        ),
    ],
)
def test_the_serializer_refuses_with_a_reason(
    body: bytes, error: type[Exception], reason: str
) -> None:
    registry_bus = Bus(max_body=1000)
    registry_bus.register_messages(Welcome)
    php = PhpJobSerializer(registry_bus.serializer, {"welcome": "user.welcome"})
    with pytest.raises(error, match=reason):
        php.decode(body, {})


def test_format_php_needs_a_json_serializer() -> None:
    class Other:
        content_type = "application/x-msgpack"
        max_body = 10

        def encode(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]:
            raise NotImplementedError

        def decode(self, body: bytes, headers: Any) -> Envelope:
            raise NotImplementedError

    with pytest.raises(Exception, match="JSON serializer"):
        PhpJobSerializer(Other())
    assert PhpJobSerializer(contract_serializer()).job_name("a.b") == "a.b"
