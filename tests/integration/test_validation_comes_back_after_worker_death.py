"""A validation whose whole Celery worker died is re-enqueued by the sweep once its lease
lapses, and decided by another worker: well within a minute, not after the visibility
timeout (15 minutes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from registry import tasks
from registry.models import ModelVersion
from tests import onnx_models
from tests.conftest import client_for, upload
from tests.integration.conftest import ROOT, WorkerProcess, database_url, wait_for
from workers.celery import app as celery_app

pytestmark = [pytest.mark.integration]

LEASE_S = "3"


def start_worker(queue: str, settings: Any, log: Path) -> WorkerProcess:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "MODELHUB_ARTIFACT_STORE": str(settings.ARTIFACT_STORE),
        "MODELHUB_CELERY_EAGER": "0",
        "MODELHUB_VALIDATION_LEASE_S": LEASE_S,
        "PYTHONUNBUFFERED": "1",
    }
    name = f"{queue}-{uuid.uuid4().hex[:4]}@%h"
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-Q", queue, "-n", name]
    cmd += ["-c", "1", "--pool", "prefork", "--without-gossip", "--without-mingle", "-l", "info"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(proc, name, log)
    wait_for(lambda: "ready." in worker.output() or proc.poll() is not None, timeout=60, what="a celery worker")
    assert proc.poll() is None, worker.output()
    return worker


@pytest.fixture
def queue(transactional_db: Any, settings: Any) -> Any:
    if not settings.REDIS_URL:
        pytest.skip("integration tests need Redis (set REDIS_URL)")
    name = f"control-test-{uuid.uuid4().hex[:8]}"
    previous = (celery_app.conf.task_always_eager, celery_app.conf.task_default_queue)
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = False, name
    yield name
    celery_app.conf.task_always_eager, celery_app.conf.task_default_queue = previous


def status_of(version_id: int) -> str:
    return ModelVersion.objects.values_list("status", flat=True).get(pk=version_id)


def test_a_validation_whose_worker_was_killed_is_decided_by_another_within_a_minute(
    queue: str, settings: Any, engineer: Any, tmp_path: Path
) -> None:
    first = start_worker(queue, settings, tmp_path / "first.log")
    second = None
    try:
        api = client_for(engineer)
        api.post("/api/v1/models/", {"name": "slow"}, format="json")
        upload(api, "slow", onnx_models.slow_model())
        version_id = ModelVersion.objects.get().pk
        wait_for(lambda: status_of(version_id) == "validating", timeout=60, what="validation to start")
        os.killpg(first.proc.pid, signal.SIGKILL)  # the whole worker: nothing re-queues its task
        first.proc.wait(10)
        killed_at = time.monotonic()
        assert status_of(version_id) == "validating", "the validation finished before the kill"

        second = start_worker(queue, settings, tmp_path / "second.log")

        def swept_and_decided() -> bool:
            tasks.validation_sweep()  # what beat (or the embedded scheduler) runs every 30 s
            return status_of(version_id) in ("ready", "failed")

        wait_for(swept_and_decided, timeout=60, what="the sweep to bring the validation back")
        version = ModelVersion.objects.get()
        assert version.status == "ready", (version.validation_report, second.output())
        assert version.validation_attempts == 2
        assert time.monotonic() - killed_at < 60
    finally:
        first.stop()
        if second is not None:
            second.stop()
