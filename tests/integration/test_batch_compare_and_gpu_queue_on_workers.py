"""On real Celery workers (PostgreSQL + Redis): a compare job end to end into a promotion
request's evidence, and device=gpu jobs routed to the GPU queue (a CPU worker consuming it
falls back to CPU and says so; with no consumer the job waits with a clear detail)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from inference.batch import services
from inference.batch.models import BatchJob
from registry import promotions
from tests import onnx_models
from tests.batch.conftest import FEATURES, ready_version, rows, write_csv
from tests.conftest import client_for
from tests.integration.conftest import wait_for
from tests.integration.test_batch_jobs_on_workers import batch_worker, batch_worker_start, start, state

pytestmark = [pytest.mark.integration]

__all__ = ["batch_worker"]  # the fixture, imported for the tests below


def finished(job_id: int, worker: Any) -> BatchJob:
    wait_for(lambda: state(job_id) in BatchJob.TERMINAL, timeout=180, what="the job to finish")
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "succeeded", (job.error, worker.output()[-3000:])
    return job


def test_a_compare_job_on_a_worker_becomes_a_promotion_requests_evidence(batch_worker, engineer, approver, tmp_path):
    meta = {"feature_names": FEATURES}
    ready_version("mlp4", onnx_models.mlp(hidden=8, features=4, classes=3), metadata=meta)
    candidate = ready_version("mlp4", onnx_models.mlp(hidden=16, features=4, classes=3), version=2, metadata=meta)
    api = client_for(engineer)
    data = write_csv(tmp_path / "in.csv", rows(1000)).read_bytes()
    job_id = start(api, data, model="mlp4", chunk_rows="250", compare_version="2")
    job = finished(job_id, batch_worker)
    assert job.chunks.count() == 4 and {c.worker for c in job.chunks.all()} != {""}
    assert job.report["rows_compared"] == 1000 and 0.0 <= job.report["outputs"]["y"]["label_agreement"] <= 1.0
    assert job.report["outputs"]["y"]["max_abs_delta"] > 0  # two different networks
    request = promotions.promotion_request_create(
        version=candidate, to_stage="Staging", justification="see the compare job", user=engineer
    )
    attached = api.post(f"/api/v1/batch-jobs/{job_id}/attach", {"promotion_request": request.pk}, format="json")
    assert attached.status_code == 200, attached.content
    [entry] = client_for(approver).get(f"/api/v1/promotions/{request.pk}/").json()["evidence"]
    assert entry["id"] == job_id and "1000 rows" in entry["summary"]


def test_a_gpu_job_waits_for_a_gpu_queue_consumer_then_runs_there_and_reports_its_provider(
    batch_worker, engineer, settings, tmp_path
):
    ready_version("mlp4", onnx_models.mlp(hidden=8, features=4, classes=3), metadata={"feature_names": FEATURES})
    api = client_for(engineer)
    data = write_csv(tmp_path / "in.csv", rows(600)).read_bytes()
    job_id = start(api, data, model="mlp4", chunk_rows="200", device="gpu")
    queue = settings.BATCH_GPU_QUEUE
    assert f"queued on {queue}" in BatchJob.objects.get(pk=job_id).status_detail
    # The only worker consumes the CPU batch queue: nothing takes the job (it is not failed).
    time.sleep(3)
    assert state(job_id) == "planning"
    settings.BATCH_STALL_S = 0.0
    counts = services.batch_sweep()
    job = BatchJob.objects.get(pk=job_id)
    assert counts["waiting"] == 1 and job.state == "planning"
    assert f"no worker consumes the {queue} queue" in job.status_detail and "-Q batch_gpu" in job.status_detail
    gpu = batch_worker_start(settings, tmp_path, queues=[queue], label="gpu")
    try:
        job = finished(job_id, gpu)
        assert job.rows_done == 600
        assert all(c.provider for c in job.chunks.all())
        # Every step ran on the GPU queue's worker: the CPU worker received no batch task at all.
        assert "Task batch.job_plan" in gpu.output() and "Task batch.chunk_run" in gpu.output()
        assert "Task batch.job_finalize" in gpu.output() and "Task batch." not in batch_worker.output()
        if job.providers != ["CUDAExecutionProvider"]:
            assert job.providers == ["CPUExecutionProvider"]
            assert "CUDA is not usable" in job.status_detail
    finally:
        gpu.stop()
