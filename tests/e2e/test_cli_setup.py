"""``courier setup``: declares what the configuration implies, lists orphaned queues."""

from __future__ import annotations

from typing import Any

import pytest

from courier.envelope import Envelope

#: What setup says of a transport that cannot list its queues (memory and SQLite
#: can, so only the test that takes ``queues()`` away expects it).
PARTIAL = "events: cannot list its queues; only the subscriptions it remembers were checked"

ORPHANS = (
    "orphaned queues (no subscription claims them; rename the handler back, name its "
    "subscription explicitly, or drain and delete them):"
)


def test_setup_declares_queues_subscriptions_and_stores(workspace: Any) -> None:
    result = workspace.courier("setup")
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout) == [
        "jobs: queue jobs",
        "events: queue events; topic users: users.welcome",
        "failed: queue failed (failure store)",
        "invalid: queue invalid (invalid-message store)",
        "no orphaned queues",
    ]
    bus = workspace.bus()
    # A producer that does not import the handlers still knows where to publish.
    assert bus.transport("events").subscriptions("users") == ["welcome"]
    assert "users.welcome" in bus.transport("events").queues()


def test_setup_of_named_transports_includes_the_stores(workspace: Any) -> None:
    result = workspace.courier("setup", "jobs")
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout) == [
        "jobs: queue jobs",
        "failed: queue failed (failure store)",
        "invalid: queue invalid (invalid-message store)",
        "no orphaned queues",
    ]


def test_a_renamed_subscription_orphans_its_queue(workspace: Any) -> None:
    bus = workspace.bus()  # keeps the memory broker between commands
    assert workspace.courier("setup").exit_code == 0
    bus.dispatch(workspace.app.UserRegistered(user_id=7))
    workspace.flag("subscription", "greeting")  # the handler's subscription is renamed
    result = workspace.courier("setup")
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout) == [
        "jobs: queue jobs",
        "events: queue events; topic users: users.greeting",
        "failed: queue failed (failure store)",
        "invalid: queue invalid (invalid-message store)",
        ORPHANS,
        "events: users.welcome (topic users; still published to: the broker remembers it)",
    ]


def test_a_queue_no_subscription_claims_or_remembers_is_found_by_listing(
    workspace: Any,
) -> None:
    bus = workspace.bus()
    assert workspace.courier("setup").exit_code == 0
    # Left by a producer that named the subscription itself; setup never recorded it.
    event = Envelope(workspace.app.UserRegistered(user_id=7))
    bus.transport("events").send(event, "users.legacy")
    result = workspace.courier("setup")
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout)[-2:] == [ORPHANS, "events: users.legacy (topic users)"]


def test_without_queues_only_the_remembered_subscriptions_are_checked(
    workspace: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = workspace.bus()
    # As a broker that cannot list its queues would be.
    monkeypatch.delattr(type(bus.transport("events")), "queues")
    assert workspace.courier("setup").exit_code == 0
    bus.transport("events").send(Envelope(workspace.app.UserRegistered(user_id=7)), "users.legacy")
    workspace.flag("subscription", "greeting")
    result = workspace.courier("setup")
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout)[-3:] == [
        ORPHANS,
        "events: users.welcome (topic users; still published to: the broker remembers it)",
        PARTIAL,  # and users.legacy goes unseen
    ]


def test_setup_without_an_app_does_not_guess_orphans(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(app=False)
    result = ws.courier("setup")
    assert result.exit_code == 0, result.output
    assert ws.lines(result.stdout)[-1] == (
        "orphaned queues: not checked (no app is configured, and the subscriptions are its "
        "handlers)"
    )
    assert "events: queue events; topic users: no subscriptions" in ws.lines(result.stdout)


def test_in_process_transports_have_nothing_to_declare(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(more_transports='inline = "sync://"')
    result = ws.courier("setup", "inline")
    assert result.exit_code == 0
    assert ws.lines(result.stdout)[0] == "inline: in-process (sync://), nothing to declare"


def test_setup_of_an_unknown_transport(memory_workspace: Any) -> None:
    result = memory_workspace.courier("setup", "nope")
    assert result.exit_code == 4
    assert result.stderr == (
        "error: unknown transport 'nope' (configured: events, failed, invalid, jobs)\n"
    )
