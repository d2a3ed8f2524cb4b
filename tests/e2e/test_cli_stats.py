"""``courier stats``: queue depths per transport, as a table or JSON."""

from __future__ import annotations

import json
import sys
import textwrap
from typing import Any


def test_stats_counts_every_state_per_queue(workspace: Any) -> None:
    bus = workspace.bus()
    app = workspace.app
    for n in range(3):
        bus.dispatch(app.SendEmail(to=f"{n}@example.com"))
    bus.dispatch(app.SendEmail(to="later@example.com"), delay=600)
    bus.dispatch(app.UserRegistered(user_id=7))
    workspace.store_failure(bus, app.SendEmail(to="x@example.com"))
    [held] = bus.transport("jobs").receive(max=1)
    try:
        table = workspace.courier("stats")
        as_json = workspace.courier("stats", "--json")
    finally:
        bus.transport("jobs").release(held)
    assert table.exit_code == 0, table.output
    assert [line.split() for line in table.stdout.splitlines() if line.strip()][2:] == [
        ["jobs", "jobs", "2", "1", "1", "0"],
        ["events", "users.welcome", "1", "0", "0", "0"],
        ["failed", "failed", "1", "0", "0", "0"],
        ["invalid", "invalid", "0", "0", "0", "0"],
    ]
    assert table.stdout.splitlines()[1].split() == [
        "transport",
        "queue",
        "ready",
        "in-flight",
        "delayed",
        "dead",
    ]
    counts = ("ready", "in_flight", "delayed", "dead")
    assert json.loads(as_json.stdout) == [
        {"transport": "jobs", "queue": "jobs", **dict(zip(counts, (2, 1, 1, 0), strict=True))},
        {"transport": "events", "queue": "users.welcome", **dict.fromkeys(counts, 0), "ready": 1},
        {"transport": "failed", "queue": "failed", **dict.fromkeys(counts, 0), "ready": 1},
        {"transport": "invalid", "queue": "invalid", **dict.fromkeys(counts, 0)},
    ]


def test_stats_of_named_transports(workspace: Any) -> None:
    result = workspace.courier("stats", "failed", "jobs", "--json")
    assert result.exit_code == 0
    assert [(row["transport"], row["queue"]) for row in json.loads(result.stdout)] == [
        ("failed", "failed"),
        ("jobs", "jobs"),
    ]


def test_in_process_transports_only_when_named(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(more_transports='inline = "sync://"')
    everything = ws.courier("stats", "--json")
    assert "inline" not in {row["transport"] for row in json.loads(everything.stdout)}
    named = ws.courier("stats", "inline")
    assert named.exit_code == 0
    assert named.stdout.splitlines()[3].split() == ["inline", "sync", "-", "-", "-", "-"]


def test_stats_of_an_unknown_transport(memory_workspace: Any) -> None:
    result = memory_workspace.courier("stats", "jobs", "nope")
    assert result.exit_code == 4
    assert result.stderr == (
        "error: unknown transport 'nope' (configured: events, failed, invalid, jobs)\n"
    )


def test_a_broker_that_cannot_be_reached(memory_workspace: Any) -> None:
    ws = memory_workspace
    module = f"{ws.module}_down"
    (ws.root / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from courier import Bus, ConnectionLost
            from courier.transports.memory import MemoryTransport

            class Down(MemoryTransport):
                def stats(self, queues=None):
                    raise ConnectionLost("connection refused by broker.example:5672")

            def bus() -> Bus:
                bus = Bus(failure_transport="failed")
                down = Down(name="jobs", queue="jobs", serializer=bus.serializer)
                bus.add_transport("jobs", down)
                bus.add_transport("failed", "memory://?queue=failed")
                return bus
            """
        )
    )
    try:
        result = ws.courier("--app", f"{module}:bus", "stats")
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 5
    assert result.stderr == "error: connection refused by broker.example:5672\n"
