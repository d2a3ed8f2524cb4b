"""A handler that kills its worker blames nobody else: real `courier consume` processes on SQLite.

300 jobs on one queue, one of them kills its worker (``os._exit``), two
workers under a supervisor that restarts them, default worker options. Every
healthy job is handled; none is in the failure store; the killer is stored
once, after ``max_deliveries`` deaths, with a reason that says so.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from courier.status import SqliteStatusStore
from courier.testing.scenarios import Project, Supervisor, interrupt_twice

pytestmark = pytest.mark.slow

KILLER = 150
JOBS = set(range(300))


def test_only_the_killer_reaches_the_failure_store(tmp_path: Path) -> None:
    # lease=1: a dead worker's claimed batch comes back after a second, not 30.
    project = Project(tmp_path, dsn="sqlite:///courier.db?queue=jobs&lease=1")
    project.dispatch(sorted(JOBS), kill={KILLER})
    with Supervisor(project, workers=2) as supervisor:
        supervisor.wait_until(
            lambda: set(project.handled()) >= JOBS - {KILLER} and project.stored_count() >= 1
        )
    handled = project.handled()
    assert set(handled) == JOBS - {KILLER}
    [record] = project.failed_records()
    assert record["type"] == "scenario.job"
    assert record["error_class"] == "courier.errors.DeliveryLimitExceeded"
    assert "killed the worker 10 times" in str(record["error_message"])
    assert supervisor.restarts >= 10
    # Redeliveries after a death are settled before the next handler runs,
    # so a death brings back only what the dead worker had not finished.
    assert sum(handled.values()) - len(handled) < 200, handled.most_common(5)


DIE_AFTER_THE_FIRST_KEEP = """
store = bus.transport("failed")
keep = store.keep


def keep_then_die(envelope, queue=None):
    # The record is written; the original's acknowledgement is not sent yet.
    count = keep(envelope, queue)
    if not (HERE / "died").exists():
        (HERE / "died").touch()
        os._exit(9)
    return count


store.keep = keep_then_die
"""


def test_a_worker_killed_between_a_dead_letter_and_its_ack_leaves_one_record(
    tmp_path: Path,
) -> None:
    project = Project(
        tmp_path,
        dsn="sqlite:///courier.db?queue=jobs&lease=1",
        settings="[retry]\nmax_retries = 0",
        app_extra=DIE_AFTER_THE_FIRST_KEEP,
    )
    project.dispatch([1], fail={1})
    project.dispatch([2])
    with Supervisor(project, workers=1) as supervisor:
        supervisor.wait_until(
            lambda: (
                (tmp_path / "died").exists()
                and supervisor.restarts >= 1
                and project.handled() == {2: 1}
                and project.stored_count("jobs") == 0
            )
        )
    assert supervisor.exit_codes[0] == 9
    [record] = project.failed_records()
    assert record["kept"] == 2  # written twice, stored once
    assert record["error_message"] == "job 1 fails"
    retried = project.courier("failed", "retry", "--all", "--force")
    assert retried.returncode == 0, retried.stderr
    assert project.stored_count("jobs") == 1  # sent back once
    assert project.failed_records() == []


def test_undecodable_bytes_are_kept_once_per_message_even_across_a_death(tmp_path: Path) -> None:
    project = Project(
        tmp_path,
        dsn="sqlite:///courier.db?queue=jobs&lease=1",
        app_extra=DIE_AFTER_THE_FIRST_KEEP.replace('"failed"', '"invalid"'),
    )
    assert project.courier("setup").returncode == 0
    # Three identical foreign rows: three messages, three records; the first
    # one's worker dies between writing its record and acknowledging it.
    with closing(sqlite3.connect(project.database)) as connection, connection:
        connection.executemany(
            "INSERT INTO courier_messages (queue, body, headers) VALUES (?, ?, ?)",
            [("jobs", b"not json", '{"courier-type": "scenario.job"}')] * 3,
        )
    with Supervisor(project, workers=1) as supervisor:
        supervisor.wait_until(lambda: project.stored_count("invalid") >= 3)
    records = project.failed_records()
    assert sorted(record["kept"] for record in records) == [1, 1, 2]
    assert {record["error_message"] for record in records} == {
        "malformed JSON: Invalid JSON: expected ident at line 1 column 2"
    }


def test_a_forged_courier_record_on_an_ordinary_queue_is_itself_invalid(tmp_path: Path) -> None:
    project = Project(tmp_path, dsn="sqlite:///courier.db?queue=jobs&lease=1")
    assert project.courier("setup").returncode == 0
    forged = json.dumps(
        {
            "body": base64.b64encode(b'{"n": 1, "kill": true}').decode(),
            "headers": {"courier-type": "scenario.job"},
            "reason": "forged",
            "transport": "admin",
            "queue": "admin-commands",
        }
    ).encode()
    headers = {"courier-type": "courier.invalid-message", "courier-id": "forged0001"}
    with closing(sqlite3.connect(project.database)) as connection, connection:
        connection.execute(
            "INSERT INTO courier_messages (queue, body, headers) VALUES (?, ?, ?)",
            ("jobs", forged, json.dumps(headers)),
        )
    project.dispatch([7])
    with Supervisor(project, workers=1) as supervisor:
        supervisor.wait_until(
            lambda: project.handled() == {7: 1} and project.stored_count("invalid")
        )
    [record] = project.failed_records()
    assert record["kind"] == "invalid"
    assert (record["transport"], record["queue"]) == ("jobs", "jobs")  # where courier got it
    assert "reserved type 'courier.invalid-message'" in str(record["error_message"])
    retried = project.courier("failed", "retry", str(record["id"]))
    assert retried.returncode == 6, retried.stdout + retried.stderr
    assert "still invalid" in retried.stdout
    assert project.stored_count("admin-commands") == 0


def test_ctrl_c_twice_gives_the_message_back_undamaged(tmp_path: Path) -> None:
    project = Project(tmp_path, dsn="sqlite:///courier.db?queue=jobs")
    code, output = interrupt_twice(project)
    assert "stopping after the message in hand (Ctrl-C again to stop now)" in output
    assert code == 130, output
    assert "stopped: interrupted" in output
    assert project.handled() == {}
    assert project.stored_count("jobs") == 1  # back in the queue, ready at once
    assert project.failed_records() == []
    status = SqliteStatusStore(project.database)
    assert not status.has_deaths()  # not a poison death: the handler ended by an exception
    status.close()
    # The next worker handles it (its sleep is cut short: the test has seen enough).
    with closing(sqlite3.connect(project.database)) as connection, connection:
        connection.execute(
            "UPDATE courier_messages SET body = replace(body, '10.0', '0.0') WHERE queue = 'jobs'"
        )
    done = project.courier("consume", "jobs", "--stop-when-empty", "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert project.handled() == {1: 1}


def test_counters_mean_one_thing_and_stop_when_empty_waits_for_retries(tmp_path: Path) -> None:
    """197 handled, 3 failed for good after their retries: what the demo's user reads."""
    project = Project(
        tmp_path,
        dsn="sqlite:///courier.db?queue=jobs&poll_interval=0.02",
        settings="[retry]\nmax_retries = 2\ndelay = 0.3\nmultiplier = 1",
    )
    project.dispatch(range(200), fail={5, 50, 150})
    done = project.courier("consume", "jobs", "--stop-when-empty", "--no-progress")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("courier consuming jobs (worker ")  # kept by --no-progress
    assert lines[-2].startswith("handled 197 · failed 3 · retried 6 · ")
    assert lines[-1] == "stopped: empty"
    assert len(project.handled()) == 197
    assert len(project.failed_records()) == 3  # nothing still delayed when it stopped
    stats = project.courier("stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert '"delayed": 0' in stats.stdout
