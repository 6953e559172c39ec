"""Redis restarted without persistence mid-job: the queued chunks are lost, the job still finishes.

A private redis-server, a Celery worker with an embedded beat on it (`-B`): the beat's
batch sweep finds the job with no progress and queues its pending chunks again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from inference.batch import services
from inference.batch.models import BatchChunk, BatchJob
from tests.batch.conftest import FEATURES, ready_version, rows, write_csv
from tests.integration.conftest import ROOT, RedisServer, WorkerProcess, database_url, wait_for
from tests.integration.test_batch_jobs_on_workers import slow4

pytestmark = [pytest.mark.integration]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH")
    redis = RedisServer(tmp_path)
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def start_worker(transactional_db: Any, settings: Any, tmp_path: Path, private_redis: RedisServer) -> Iterator[Any]:
    """Starts Celery workers with an embedded beat (`-B`) on the private Redis; stops them after."""
    queue = f"batch-test-{uuid.uuid4().hex[:8]}"
    settings.BATCH_STORE = tmp_path / "batch"
    (tmp_path / "data").mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": f"redis://127.0.0.1:{private_redis.port}/0",
        "MODELHUB_ARTIFACT_STORE": str(settings.ARTIFACT_STORE),
        "MODELHUB_BATCH_STORE": str(settings.BATCH_STORE),
        "MODELHUB_BATCH_DATA_DIR": str(tmp_path / "data"),
        "MODELHUB_BATCH_QUEUE": queue,
        "MODELHUB_BATCH_LEASE_S": "3",
        "MODELHUB_BATCH_STALL_S": "3",
        "MODELHUB_BATCH_SWEEP_INTERVAL_S": "1",
        "MODELHUB_BATCH_INFER_ROWS": "100",
        "MODELHUB_BATCH_INTRA_OP_THREADS": "1",
        "MODELHUB_CELERY_EAGER": "0",
        "PYTHONUNBUFFERED": "1",
    }
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        n = len(started)
        log = tmp_path / f"worker-{n}.log"
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.celery",
            "worker",
            "-B",
            "-s",
            str(tmp_path / f"beat-{n}"),
        ]
        cmd += ["-Q", f"{queue},control", "-n", f"{queue}-{n}@%h", "-c", "2", "--without-gossip", "--without-mingle"]
        cmd += ["-l", "info"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        worker = WorkerProcess(proc, f"{queue}-{n}@%h", log)
        started.append(worker)
        wait_for(lambda: "ready." in worker.output() or proc.poll() is not None, timeout=60, what="the worker")
        return worker

    yield start
    for worker in started:
        worker.stop()


def test_a_job_finishes_after_redis_restarts_and_loses_its_queued_chunks(
    start_worker, private_redis, engineer, tmp_path, monkeypatch
):
    """The whole stack restarts (workers stopped, Redis restarted empty, workers started again):
    the job's state in PostgreSQL is all that is left, and the beat's sweep resumes the job."""
    version = ready_version("slow4", slow4(), metadata={"feature_names": FEATURES})
    worker = start_worker()
    # The test process publishes nothing: the job is picked up by the worker's beat sweep.
    monkeypatch.setattr(services, "_dispatch", lambda *args, **kwargs: None)
    source = write_csv(tmp_path / "data" / "in.csv", rows(3000))
    request = services.JobRequest(model="slow4", version=version.version, passthrough=["id"], chunk_rows=300)
    with override_settings(BATCH_DATA_DIR=str(tmp_path / "data")):
        job = services.job_create(request=request, user=engineer, input_path=source.name)

    def state() -> str:
        return BatchJob.objects.values_list("state", flat=True).get(pk=job.pk)

    def first_chunk_or_end() -> bool:
        return BatchChunk.objects.filter(job_id=job.pk, state="done").exists() or state() in BatchJob.TERMINAL

    wait_for(first_chunk_or_end, timeout=120, what="a first chunk")
    assert state() == "running", (BatchJob.objects.get(pk=job.pk).error, worker.output()[-3000:])
    worker.stop()
    private_redis.stop()  # without persistence: every queued chunk message is gone
    private_redis.start()
    assert BatchChunk.objects.filter(job_id=job.pk).exclude(state="done").exists()
    worker = start_worker()
    wait_for(lambda: state() in BatchJob.TERMINAL, timeout=180, what="the job to finish after the restart")
    job.refresh_from_db()
    assert job.state == "succeeded", (job.error, worker.output()[-3000:])
    assert job.rows_done == 3000
    assert "'stalled': 1" in worker.output()  # the sweep brought the lost chunks back
