"""A batch worker's memory does not grow with the size of the job (issue #15: flat worker RSS).

One real Celery worker with one pool child runs a 2-chunk job, then a 10-chunk job of the
same chunk size. The child plans both (it reads the whole input) and runs every chunk; its
peak resident memory (VmHWM) may rise with the second job only by a margin, not in
proportion to the 8 more chunks (160,000 rows of 256 FP32 features, 160 MB of data).
Before the fix the plan's Parquet reader kept about 1 KB per row read, and the peak rose
with the rows of the input.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference.batch.models import BatchChunk, BatchJob
from tests import onnx_models
from tests.batch.conftest import ready_version
from tests.conftest import client_for
from tests.integration.conftest import WorkerProcess, wait_for
from tests.integration.test_batch_jobs_on_workers import batch_worker_start
from workers.celery import app as celery_app

pytestmark = [pytest.mark.integration]

WIDTH = 256
CHUNK_ROWS = 20_000
MARGIN_MB = 100


@pytest.fixture
def one_child_worker(transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[WorkerProcess]:
    if not settings.REDIS_URL:
        pytest.skip("integration tests need Redis (set REDIS_URL)")
    queue = f"batch-test-{uuid.uuid4().hex[:8]}"
    settings.BATCH_STORE = tmp_path / "batch"
    settings.BATCH_DATA_DIR = str(tmp_path / "data")
    (tmp_path / "data").mkdir()
    settings.BATCH_QUEUE = queue
    settings.BATCH_GPU_QUEUE = f"{queue}-gpu"
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    worker = None
    try:
        worker = batch_worker_start(settings, tmp_path, queues=[queue], label="mem", children=1)
        yield worker
    finally:
        celery_app.conf.task_always_eager = previous
        if worker is not None:
            worker.stop()


def write_input(path: Path, rows: int, group_rows: int) -> None:
    """`rows` rows of id + WIDTH FP32 features, in row groups of `group_rows` rows."""
    names = ["id", *[f"f{i}" for i in range(WIDTH)]]
    rng = np.random.default_rng(rows)
    with pq.ParquetWriter(path, pa.schema([(n, pa.int64() if n == "id" else pa.float32()) for n in names])) as out:
        for start in range(0, rows, group_rows):
            x = rng.standard_normal((group_rows, WIDTH)).astype(np.float32)
            out.write_table(pa.table([pa.array(np.arange(start, start + group_rows)), *x.T], names=names))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


def run_job(api: Any, data_dir: Path, chunks: int, group_rows: int) -> int:
    """Run a job of `chunks` chunks to its end; the pid of the pool child that ran it."""
    name = f"in-{chunks}-{group_rows}.parquet"
    write_input(data_dir / name, chunks * CHUNK_ROWS, group_rows)
    body = {"model": "wide", "version": 1, "input_path": name, "passthrough": ["id"], "chunk_rows": CHUNK_ROWS}
    response = api.post("/api/v1/batch-jobs/", body, format="json")
    assert response.status_code == 201, response.content
    job_id = int(response.json()["id"])
    wait_for(
        lambda: BatchJob.objects.values_list("state", flat=True).get(pk=job_id) in BatchJob.TERMINAL,
        timeout=300,
        what=f"the {chunks}-chunk job to finish",
    )
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "succeeded" and job.rows_done == chunks * CHUNK_ROWS, job.error
    (pid,) = {
        int(label.rsplit(":", 1)[1]) for label in BatchChunk.objects.filter(job=job).values_list("worker", flat=True)
    }
    return pid


# Row groups of 10,000 rows: chunks read pairs of them from the input in place; of 40,000
# (larger than a chunk): the plan rewrites the input into chunk files, reading it group by group.
@pytest.mark.parametrize("group_rows", [10_000, 40_000])
def test_a_worker_peak_memory_does_not_grow_with_the_number_of_chunks(one_child_worker, engineer, tmp_path, group_rows):
    features = [f"f{i}" for i in range(WIDTH)]
    ready_version("wide", onnx_models.mlp(hidden=64, features=WIDTH, classes=10), metadata={"feature_names": features})
    api = client_for(engineer)
    data_dir = tmp_path / "data"
    pid = run_job(api, data_dir, chunks=2, group_rows=group_rows)
    after_small = peak_rss_mb(pid)
    assert run_job(api, data_dir, chunks=10, group_rows=group_rows) == pid  # the same process ran both
    after_large = peak_rss_mb(pid)
    assert set(BatchJob.objects.values_list("chunks_from", flat=True)) == {"input" if group_rows == 10_000 else "files"}
    assert after_large - after_small < MARGIN_MB, (
        f"the worker's peak RSS rose from {after_small:.0f} MB (2 chunks) to {after_large:.0f} MB (10 chunks)"
    )
