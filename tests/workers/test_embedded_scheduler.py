"""The embedded scheduler runs beat's schedule, in one process of several, and runs it for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.schedules import schedule
from django.utils import timezone

from registry.models import ModelVersion
from tests.conftest import client_for, iris_bytes, upload
from tests.integration.conftest import ROOT, wait_for
from workers.celery import app as celery_app
from workers.embedded_scheduler import EmbeddedScheduler, Job, embedded_jobs

# A process that runs a scheduler with one 0.1 s job writing its pid to a file.
TICKER = textwrap.dedent(
    """
    import os, sys, time
    from datetime import timedelta
    from pathlib import Path
    from celery.schedules import schedule
    from workers.embedded_scheduler import EmbeddedScheduler, Job

    def tick(job):
        with open(sys.argv[2], "a") as out:
            out.write(f"{os.getpid()}\\n")

    job = Job("tick", "tests.tick", schedule(timedelta(seconds=0.1)))
    EmbeddedScheduler([job], Path(sys.argv[1]), run_job=tick, retry_lock_s=0.2).start()
    time.sleep(600)
    """
)


def test_its_jobs_are_exactly_the_beat_schedule() -> None:
    beat = celery_app.conf.beat_schedule
    jobs = embedded_jobs()

    assert [(job.name, job.task) for job in jobs] == [(name, entry["task"]) for name, entry in beat.items()]
    assert "registry.validation_sweep" in {job.task for job in jobs}
    # Each one can run in-process: its task is registered with the app.
    assert all(job.task in celery_app.tasks for job in jobs)


def test_only_one_of_two_processes_runs_it_and_the_other_takes_over_when_it_dies(tmp_path: Path) -> None:
    lock, out = tmp_path / "scheduler.lock", tmp_path / "ticks"
    out.touch()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", TICKER, str(lock), str(out)], cwd=ROOT, env=env) for _ in range(2)]
    try:

        def pids() -> list[int]:
            return [int(line) for line in out.read_text().split()]

        wait_for(lambda: len(pids()) >= 10, timeout=60, what="ten ticks")
        time.sleep(1)  # both processes are up and retrying the lock by now
        runners = set(pids())
        assert len(runners) == 1, runners
        holder = runners.pop()
        (other,) = [p for p in procs if p.pid != holder]

        os.kill(holder, signal.SIGKILL)
        wait_for(lambda: other.pid in pids(), timeout=30, what="the other process to take over")
        assert set(pids()) == {holder, other.pid}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


@pytest.mark.django_db(transaction=True)
def test_a_beat_job_really_runs_in_its_thread(engineer: Any, tmp_path: Path, settings: Any) -> None:
    """The validation sweep, run by the scheduler thread, validates a version left pending."""
    settings.VALIDATION_PENDING_GRACE_S = 0
    api = client_for(engineer)
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    upload(api, "iris", iris_bytes())
    ModelVersion.objects.update(status="pending", created_at=timezone.now() - timedelta(minutes=5))
    job = Job("sweep", "registry.validation_sweep", schedule(timedelta(seconds=0.2)))
    scheduler = EmbeddedScheduler([job], tmp_path / "scheduler.lock")
    scheduler.start()
    try:
        wait_for(lambda: ModelVersion.objects.get().status == "ready", timeout=60, what="the sweep to run")
    finally:
        scheduler.stop()
    assert scheduler.runs["sweep"] >= 1
