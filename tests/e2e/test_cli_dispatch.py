"""``courier dispatch TYPE JSON``: one message from the shell, or JSON lines from stdin."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

ID = re.compile(r"^[0-9a-f]{32}$")


def test_dispatch_one_message(workspace: Any) -> None:
    bus = workspace.bus()
    result = workspace.courier("dispatch", "email.send", '{"to": "ada@example.com"}')
    assert result.exit_code == 0, result.output
    assert ID.match(result.stdout.strip())
    [sent] = workspace.store(bus, "jobs").list()
    assert sent.id == result.stdout.strip()
    assert sent.message == workspace.app.SendEmail(to="ada@example.com")


def test_dispatch_an_event_to_its_subscriptions(workspace: Any) -> None:
    bus = workspace.bus()
    result = workspace.courier("dispatch", "user.registered", '{"user_id": 7}')
    assert result.exit_code == 0, result.output
    [copy] = workspace.store(bus, "events").list("users.welcome")
    assert (copy.id, copy.message.user_id) == (result.stdout.strip(), 7)


def test_dispatch_with_delay_and_priority(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    args = ("dispatch", "email.send", '{"to": "a@example.com"}', "--delay", "5m")
    result = ws.courier(*args, "--priority", "7")
    assert result.exit_code == 0, result.output
    [counts] = bus.transport("jobs").stats()
    assert (counts.ready, counts.delayed) == (0, 1)
    [sent] = ws.store(bus, "jobs").list()
    assert sent.priority == 7


def test_dispatch_json_lines_from_stdin(workspace: Any) -> None:
    bus = workspace.bus()
    lines = [json.dumps({"to": f"user{n}@example.com"}) for n in range(5)]
    result = workspace.courier(
        "dispatch", "email.send", "-", "--batch-size", "2", input="\n".join(lines) + "\n\n"
    )
    assert result.exit_code == 0, result.output
    ids = result.stdout.split()
    assert len(ids) == 5
    assert all(ID.match(message_id) for message_id in ids)
    assert result.stderr == "dispatched 5 messages\n"
    sent = workspace.store(bus, "jobs").list()
    assert [envelope.id for envelope in sent] == ids
    assert [envelope.message.to for envelope in sent] == [f"user{n}@example.com" for n in range(5)]


def test_a_bad_line_stops_after_dispatching_the_lines_before_it(workspace: Any) -> None:
    bus = workspace.bus()
    text = '{"to": "a@example.com"}\n\n{"to": "b@example.com"}\n{"to": \n{"to": "c@example.com"}\n'
    result = workspace.courier("dispatch", "email.send", "-", input=text)
    assert result.exit_code == 2
    assert len(result.stdout.split()) == 2
    assert result.stderr == (
        "error: line 4: malformed JSON: EOF while parsing a value at column 7 "
        "(2 messages before it were dispatched)\n"
    )
    assert [e.message.to for e in workspace.store(bus, "jobs").list()] == [
        "a@example.com",
        "b@example.com",
    ]


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["email.send", '{"to": '],
            2,
            "malformed JSON: EOF while parsing a value at line 1 column 7",
        ),
        (["email.send", '{"subject": "Hi"}'], 2, "invalid email.send: to: missing"),
        (["email.send", "[1, 2]"], 2, "email.send takes a JSON object"),
        (
            ["email.sned", "{}"],
            4,
            "unknown message type 'email.sned' (known: email.send, user.registered)",
        ),
        (
            ["courier.invalid-message", "{}"],
            4,
            "unknown message type 'courier.invalid-message' (known: email.send, user.registered)",
        ),
    ],
)
def test_bad_input(workspace: Any, args: list[str], code: int, line: str) -> None:
    bus = workspace.bus()
    result = workspace.courier("dispatch", *args)
    assert (result.exit_code, result.stderr) == (code, f"error: {line}\n")
    assert result.stdout == ""
    assert workspace.store(bus, "jobs").list() == []


def test_validation_errors_name_fields_never_values(memory_workspace: Any) -> None:
    payload = '{"to": ["secret-address@example.com"], "subject": {"pin": "4711"}}'
    result = memory_workspace.courier("dispatch", "email.send", payload)
    assert result.exit_code == 2
    assert result.stderr == "error: invalid email.send: to: string_type; subject: string_type\n"
    assert "secret" not in result.output
    assert "4711" not in result.output


def test_dispatch_needs_the_app(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(app=False)
    result = ws.courier("dispatch", "email.send", "{}")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: app: not set; name the bus that has your handlers, e.g. "
        'app = "myapp.messaging:bus" in courier.toml, COURIER_APP or --app\n'
    )


def test_an_unrouted_type_without_a_handler(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.flag("archive-known")  # registered, but neither routed nor handled
    result = ws.courier("dispatch", "email.archive", '{"mailbox": "ada"}')
    assert (result.exit_code, result.stderr) == (
        2,
        "error: no handler for email.archive, and it is not routed to a transport\n",
    )


def test_a_handler_that_fails_in_this_process(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.config.write_text(ws.config.read_text().replace(ws.dsn("jobs"), "sync://"))
    ws.flag("smtp-down")
    result = ws.courier("dispatch", "email.send", '{"to": "ada@example.com"}')
    assert (result.exit_code, result.stderr) == (
        1,
        "error: a handler failed in this process: "
        "ConnectionRefusedError: SMTP server refused the connection\n",
    )
