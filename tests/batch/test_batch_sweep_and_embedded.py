"""The periodic sweep (expired leases, stalled jobs, retention, disk budget) and the embedded runner."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from inference.batch import services, storage
from inference.batch.models import BatchChunk, BatchJob
from tests.batch.conftest import rows, write_csv
from tests.conftest import client_for
from tests.integration.conftest import wait_for


def start(api: Any, data: bytes, **fields: Any) -> int:
    body = {"model": "mlp4", "version": 1, "passthrough": "id", "input": SimpleUploadedFile("in.csv", data)}
    response = api.post("/api/v1/batch-jobs/", {**body, **fields}, format="multipart")
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


@pytest.mark.django_db
def test_the_sweep_requeues_a_chunk_whose_lease_expired(mlp4, engineer, tmp_path, monkeypatch):
    job_id = start(client_for(engineer), write_csv(tmp_path / "in.csv", rows(40)).read_bytes(), chunk_rows="20")
    services.job_plan(job_id=job_id)
    # A worker claimed chunk 1 and died: its lease ran out.
    BatchChunk.objects.filter(job_id=job_id, index=1).update(
        state="running", attempts=1, lease_owner="dead", lease_expires=timezone.now() - timedelta(seconds=1)
    )
    queued: list[tuple[str, int, list[int]]] = []
    monkeypatch.setattr(
        services, "_dispatch", lambda kind, job, indexes=(), **kw: queued.append((kind, job, list(indexes)))
    )
    assert services.batch_sweep()["expired"] == 1
    assert queued == [("chunk", job_id, [1])]
    chunk = BatchChunk.objects.get(job_id=job_id, index=1)
    assert (chunk.state, chunk.last_error) == ("pending", "lease expired")
    assert services.chunk_run(job_id=job_id, index=1).status == "done"
    assert BatchChunk.objects.get(job_id=job_id, index=1).attempts == 2


@pytest.mark.django_db
def test_the_sweep_requeues_the_pending_chunks_of_a_stalled_job(mlp4, engineer, tmp_path, monkeypatch, settings):
    """Redis restarted and lost the queued chunks: the job's state in PostgreSQL brings them back."""
    job_id = start(client_for(engineer), write_csv(tmp_path / "in.csv", rows(40)).read_bytes(), chunk_rows="20")
    services.job_plan(job_id=job_id)
    services.chunk_run(job_id=job_id, index=0)
    queued: list[tuple[str, int, list[int]]] = []
    monkeypatch.setattr(
        services, "_dispatch", lambda kind, job, indexes=(), **kw: queued.append((kind, job, list(indexes)))
    )
    assert services.batch_sweep()["stalled"] == 0  # progress is recent
    later = timezone.now() + timedelta(seconds=settings.BATCH_STALL_S + 1)
    assert services.batch_sweep(now=later)["stalled"] == 1
    assert queued == [("chunk", job_id, [1])]


@pytest.mark.django_db
def test_retention_and_the_disk_budget_remove_finished_jobs_files(mlp4, engineer, tmp_path, settings):
    api = client_for(engineer)
    old = start(api, write_csv(tmp_path / "a.csv", rows(30)).read_bytes())
    new = start(api, write_csv(tmp_path / "b.csv", rows(31)).read_bytes())
    for job_id in (old, new):
        services._job_drive(job_id)
        assert BatchJob.objects.get(pk=job_id).state == "succeeded"
    BatchJob.objects.filter(pk=old).update(
        finished_at=timezone.now() - timedelta(days=settings.BATCH_RETENTION_DAYS + 1)
    )
    assert services.batch_sweep()["deleted"] == 1
    assert not storage.job_dir(old).exists() and storage.job_dir(new).exists()
    assert api.get(f"/api/v1/batch-jobs/{old}/result").status_code == 410
    assert api.get(f"/api/v1/batch-jobs/{new}/result").status_code == 200
    settings.BATCH_DISK_BUDGET_BYTES = 1
    assert services.batch_sweep()["deleted"] == 1
    assert not storage.job_dir(new).exists()
    assert not list((settings.BATCH_STORE / "inputs").rglob("*.csv"))  # uploads no job needs any more


@pytest.mark.django_db(transaction=True)
def test_on_the_embedded_default_a_job_runs_in_a_background_thread_not_in_the_request(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    response = api.post(
        "/api/v1/batch-jobs/",
        {
            "model": "mlp4",
            "version": 1,
            "passthrough": "id",
            "chunk_rows": 50,
            "input": SimpleUploadedFile("in.csv", write_csv(tmp_path / "in.csv", rows(200)).read_bytes()),
        },
        format="multipart",
    )
    assert response.status_code == 201
    assert response.json()["state"] == "planning"  # answered before anything ran
    job_id = response.json()["id"]
    wait_for(lambda: BatchJob.objects.get(pk=job_id).is_terminal, timeout=60, what="the embedded runner")
    wait_for(services.RUNNER.idle, timeout=10, what="the runner to go idle")
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "succeeded" and job.rows_done == 200
    assert services.RUNNER._thread is not None and services.RUNNER._thread.name == "batch-runner"
