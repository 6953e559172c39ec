"""Batch jobs on a real Celery worker (PostgreSQL + Redis): exact output, a killed child, cancel."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from onnx import TensorProto, helper, numpy_helper

from inference.batch.models import BatchChunk, BatchJob
from tests import onnx_models
from tests.batch.conftest import FEATURES, ready_version, rows, write_csv
from tests.conftest import client_for
from tests.integration.conftest import ROOT, WorkerProcess, database_url, wait_for
from workers.celery import app as celery_app

pytestmark = [pytest.mark.integration]


def slow4(depth: int = 48, width: int = 512) -> bytes:
    """x FP32 [batch, 4] -> `depth` width x width MatMuls -> y FP32 [batch, 2]: slow enough to kill mid-chunk."""
    fill = helper.make_tensor("fill", TensorProto.FLOAT, [1], [1.0 / width])
    nodes = [
        helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=fill),
        helper.make_node("MatMul", ["x", "w_in"], ["h"]),
    ]
    previous = "h"
    for i in range(depth):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"h{i}"]))
        previous = f"h{i}"
    nodes.append(helper.make_node("MatMul", [previous, "w_out"], ["y"]))
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        nodes,
        "slow4",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[
            numpy_helper.from_array(np.array([width, width], np.int64), "w_shape"),
            numpy_helper.from_array(rng.normal(size=(4, width)).astype(np.float32), "w_in"),
            numpy_helper.from_array(rng.normal(size=(width, 2)).astype(np.float32), "w_out"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", onnx_models.OPSET)])
    model.ir_version = onnx_models.IR_VERSION
    return model.SerializeToString()


def batch_worker_start(
    settings: Any, tmp_path: Path, *, queues: list[str], label: str, children: int = 2
) -> WorkerProcess:
    """A real `celery worker` (2 pool children) consuming `queues`, with the test's batch settings."""
    log = tmp_path / f"worker-{label}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "MODELHUB_ARTIFACT_STORE": str(settings.ARTIFACT_STORE),
        "MODELHUB_BATCH_STORE": str(settings.BATCH_STORE),
        "MODELHUB_BATCH_QUEUE": settings.BATCH_QUEUE,
        "MODELHUB_BATCH_GPU_QUEUE": settings.BATCH_GPU_QUEUE,
        "MODELHUB_BATCH_LEASE_S": "3",
        "MODELHUB_BATCH_INFER_ROWS": "100",
        "MODELHUB_BATCH_INTRA_OP_THREADS": "1",
        "MODELHUB_CELERY_EAGER": "0",
        "PYTHONUNBUFFERED": "1",
    }
    if settings.BATCH_DATA_DIR:
        env["MODELHUB_BATCH_DATA_DIR"] = str(settings.BATCH_DATA_DIR)
    name = f"{settings.BATCH_QUEUE}-{label}@%h"
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery", "worker", "-Q", ",".join(queues), "-n", name]
    cmd += ["-c", str(children), "--pool", "prefork", "--without-gossip", "--without-mingle", "-l", "info"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(proc, name, log)
    deadline = time.monotonic() + 60
    while "ready." not in worker.output():
        if proc.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"celery worker did not start:\n{worker.output()}")
        time.sleep(0.2)
    return worker


@pytest.fixture
def batch_worker(transactional_db: Any, settings: Any, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real worker on a batch queue of its own (its GPU queue: the same name + "-gpu"), short leases."""
    if not settings.REDIS_URL:
        pytest.skip("integration tests need Redis (set REDIS_URL)")
    queue = f"batch-test-{uuid.uuid4().hex[:8]}"
    settings.BATCH_STORE = tmp_path / "batch"
    settings.BATCH_QUEUE = queue
    settings.BATCH_GPU_QUEUE = f"{queue}-gpu"
    settings.BATCH_LEASE_S = 3.0
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = False
    worker = None
    try:
        worker = batch_worker_start(settings, tmp_path, queues=[queue], label="cpu")
        yield worker
    finally:
        celery_app.conf.task_always_eager = previous
        if worker is not None:
            worker.stop()


def start(api: Any, data: bytes, filename: str = "in.csv", **fields: Any) -> int:
    body = {"model": "slow4", "version": 1, "passthrough": "id", "input": SimpleUploadedFile(filename, data)}
    response = api.post("/api/v1/batch-jobs/", {**body, **fields}, format="multipart")
    assert response.status_code == 201, response.content
    return int(response.json()["id"])


def state(job_id: int) -> str:
    return BatchJob.objects.values_list("state", flat=True).get(pk=job_id)


def output_ids(api: Any, job_id: int) -> list[str]:
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job_id}/result").streaming_content).decode()
    return [row["id"] for row in csv.DictReader(io.StringIO(body))]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_worker_killed_mid_chunk_changes_nothing_in_the_output(batch_worker, engineer, tmp_path, fmt):
    ready_version("slow4", slow4(), metadata={"feature_names": FEATURES})
    api = client_for(engineer)
    n = 3000
    if fmt == "csv":
        data = write_csv(tmp_path / "in.csv", rows(n)).read_bytes()
    else:
        # Row groups of 250 rows: chunks read pairs of them from the uploaded input in place.
        pq.write_table(pa.Table.from_pylist(rows(n)), tmp_path / "in.parquet", row_group_size=250)
        data = (tmp_path / "in.parquet").read_bytes()
    job_id = start(api, data, f"in.{fmt}", chunk_rows="500", output_format="csv")

    def running_chunk() -> BatchChunk | None:
        return BatchChunk.objects.filter(job_id=job_id, state="running", index__gte=1).order_by("index").first()

    victim = wait_for(running_chunk, timeout=120, what="a chunk to be running")
    pid = int(victim.worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: state(job_id) in BatchJob.TERMINAL, timeout=240, what="the job to finish")
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "succeeded", (job.error, batch_worker.output()[-3000:])
    assert BatchChunk.objects.get(pk=victim.pk).attempts >= 2  # it ran again
    ids = output_ids(api, job_id)
    assert len(ids) == n and len(set(ids)) == n  # every row, exactly once
    assert ids == [f"k{i}" for i in range(n)]
    assert job.rows_done == n and job.rows_failed == 0
    assert job.chunks_from == ("input" if fmt == "parquet" else "files")


def test_a_cancelled_job_stops_within_one_chunk_on_the_worker(batch_worker, engineer, tmp_path):
    ready_version("slow4", slow4(), metadata={"feature_names": FEATURES})
    api = client_for(engineer)
    job_id = start(api, write_csv(tmp_path / "in.csv", rows(6000)).read_bytes(), chunk_rows="500")
    wait_for(
        lambda: BatchChunk.objects.filter(job_id=job_id, state="running").exists(), timeout=120, what="a running chunk"
    )
    done_before = BatchChunk.objects.filter(job_id=job_id, state="done").count()
    assert api.post(f"/api/v1/batch-jobs/{job_id}/cancel").status_code == 200
    wait_for(
        lambda: not BatchChunk.objects.filter(job_id=job_id, state="running").exists(),
        timeout=60,
        what="running chunks to stop",
    )
    time.sleep(2)
    done_after = BatchChunk.objects.filter(job_id=job_id, state="done").count()
    # Chunks already running may finish their current model call; none starts after the cancel.
    assert done_after <= done_before + 2, (done_before, done_after)
    assert done_after < 12 and state(job_id) == "cancelled"
    assert not BatchChunk.objects.filter(job_id=job_id, state="running").exists()
