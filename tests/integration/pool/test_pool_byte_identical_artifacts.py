"""Two deployments whose artifacts have the same bytes (one sha256) are two entries on an
inference worker: each loaded with its own settings and withdrawn on its own, while the
worker's artifact cache holds the file once, by digest, until neither uses it."""

from __future__ import annotations

import numpy as np
import pytest

from accounts.services import worker_key_create
from tests.batch.conftest import ready_version
from tests.integration.pool.conftest import deployment_report, pool_spec, wait_until
from tests.onnx_models import mlp

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

X = {"x": np.ones((2, 4), np.float32)}


def test_byte_identical_deployments_load_apart_and_share_one_cached_file(
    transport, inference_workers, live_server, tmp_path
):
    version = ready_version("twin", mlp(hidden=8, features=4, classes=3))
    _, key = worker_key_create(name="twin-host")
    cache = tmp_path / "worker-cache"
    missing = tmp_path / "web-host-only" / f"{version.artifact_sha256}.onnx"  # fetched, not shared
    common = dict(artifact_sha256=version.artifact_sha256, signature=version.signature, model="twin")
    direct = pool_spec(missing, endpoint="direct", max_batch_size=1, **common)  # no batcher
    batched = pool_spec(missing, endpoint="batched", max_batch_size=8, **common)
    worker = inference_workers(
        env={"MODELHUB_WORKER_KEY": key},
        # A disk budget of one byte: the sweep removes any cached file no deployment holds.
        args=["--platform-url", live_server.url, "--artifact-cache", str(cache), "--artifact-cache-bytes", "1"],
    )
    for spec in (direct, batched):
        transport.ensure_loaded(spec)
    for spec in (direct, batched):
        wait_until(lambda s=spec: transport.ready(s), timeout=60, what=f"{spec.endpoint} warm:\n{worker.output()}")

    [direct_report], [batched_report] = deployment_report(direct), deployment_report(batched)
    assert "batcher" not in direct_report and batched_report["batcher"]  # each with its own settings
    assert [p.name for p in cache.iterdir()] == [f"{version.artifact_sha256}.onnx"]  # one file, by digest

    transport.unload(direct)

    wait_until(lambda: not deployment_report(direct), timeout=30, what=f"direct withdrawn:\n{worker.output()}")
    assert transport.ready(batched) and deployment_report(batched)[0]["state"] == "ready"
    assert transport.infer(batched, X, timeout_s=10).outputs["y"].shape == (2, 3)
    assert [p.name for p in cache.iterdir()] == [f"{version.artifact_sha256}.onnx"]  # still in use

    transport.unload(batched)

    wait_until(lambda: not any(cache.iterdir()), timeout=30, what=f"the sweep once neither uses it:\n{worker.output()}")
