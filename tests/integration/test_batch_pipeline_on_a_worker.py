"""A batch job whose target is an endpoint serving a pipeline, run by a real Celery worker
(PostgreSQL, Redis for the queue and the feature store, ONNX Runtime in the pool child)."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pytest

from inference.batch.models import BatchJob
from tests.batch.conftest import ready_version
from tests.batch.test_batch_pipeline_target import by_endpoint, card_rows, serve_pipeline
from tests.conftest import client_for
from tests.integration import test_batch_jobs_on_workers as on_workers
from tests.integration.conftest import wait_for
from tests.pipelines import conftest as pipeline_fixtures
from tests.pipelines.conftest import expected_scores, fraud_bytes, fraud_spec

pytestmark = [pytest.mark.integration]

batch_worker = on_workers.batch_worker
feature_set = pipeline_fixtures.feature_set


@pytest.fixture
def fraud_versions(batch_worker: Any) -> list[Any]:
    """The fraud example's two versions, ready (validation would wait for a validation worker:
    this test's worker consumes its batch queue only)."""
    return [ready_version("fraud", fraud_bytes(seed), version=i) for i, seed in ((1, 11), (2, 21))]


def test_a_pipeline_job_runs_on_a_worker_and_records_its_lineage(batch_worker, engineer, fraud_versions, feature_set):
    serve_pipeline(engineer, fraud_spec(feature_set, 0.5))
    api = client_for(engineer)
    n = 600
    response = by_endpoint(api, card_rows(n), chunk_rows="200")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    wait_for(
        lambda: BatchJob.objects.values_list("state", flat=True).get(pk=job_id) in BatchJob.TERMINAL,
        timeout=180,
        what="the pipeline job to finish",
    )
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "succeeded", (job.error, batch_worker.output()[-3000:])
    assert job.chunks_total == 3 and job.rows_done == n
    assert job.pipeline_version is not None and job.model_version is None
    assert [m["sha256"] for m in job.pipeline_models] == [v.artifact_sha256 for v in fraud_versions]
    assert all(c.worker and c.provider == "CPUExecutionProvider" for c in job.chunks.all())
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job_id}/result").streaming_content).decode()
    out = list(csv.DictReader(io.StringIO(body)))
    assert [r["id"] for r in out] == [f"t{i}" for i in range(n)]
    want = expected_scores([(101, 102, 103)[i % 3] for i in range(n)], [40.0 + 37.5 * i for i in range(n)])
    np.testing.assert_allclose([float(r["fraud_score"]) for r in out], want, rtol=1e-5, atol=1e-6)
