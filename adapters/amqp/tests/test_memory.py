"""Bad bytes do not pile up in a worker's memory, on RabbitMQ: 80 bodies of 10 MB.

Published raw by pika, each over the decoder's limit: refused
unparsed and kept (its first 4 MiB) in the invalid-message store. The
worker's peak resident memory after 80 must be within 10% of its peak after
10. A classic queue keeps RabbitMQ quick with bodies this large; the queue
type is not what is under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from courier.testing.scenarios import Project, Supervisor, peak_rss_mib

pytestmark = [pytest.mark.amqp, pytest.mark.slow, pytest.mark.timeout(300)]

BODY = b'{"n": "' + b"x" * (10 * 1024 * 1024) + b'"}'


def test_a_worker_fed_80_oversized_bodies_stays_flat(tmp_path: Path, janitor: Any) -> None:
    queue = janitor.name("big")
    janitor.queues.update({queue, f"{queue}.dead"})
    # prefetch=2: RabbitMQ sends two ahead, so after ten messages the worker
    # has seen the most it will ever hold at once; what grows after that is
    # what a refused body leaves behind.
    dsn = janitor.dsn(queue, queue_type="classic", prefetch="2")
    project = Project(tmp_path, dsn=dsn)
    assert project.courier("setup").returncode == 0
    for n in range(80):
        janitor.publish_raw(
            queue, BODY + str(n).encode(), {"courier-type": "scenario.job"}, delivery_mode=2
        )
    with Supervisor(project, workers=1) as supervisor:
        [worker] = supervisor.processes
        supervisor.wait_until(lambda: project.stored_count("invalid") >= 10, timeout=240)
        after_10 = peak_rss_mib(worker.pid)
        supervisor.wait_until(lambda: project.stored_count("invalid") >= 80, timeout=240)
        after_80 = peak_rss_mib(worker.pid)
        assert supervisor.restarts == 0
    assert after_80 <= after_10 * 1.10, f"peak {after_10:.0f} MiB after 10, {after_80:.0f} after 80"
    assert project.stored_count("invalid") == 80
