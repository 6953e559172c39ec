"""An inference worker with no shared artifact folder fetches artifacts by sha256 from the
platform (a live server) with its worker key, checks the digest, caches them, and loads
from its cache when the platform is away."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from accounts.services import worker_key_create
from registry import storage as registry_storage
from tests.batch.conftest import ready_version
from tests.integration.conftest import free_port
from tests.integration.pool.conftest import deployment_report, pool_spec, wait_until
from tests.onnx_models import mlp

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _fetching(platform_url: str, key: str, cache: Path, *extra: str) -> dict[str, object]:
    """Worker options: fetch from `platform_url` into `cache`, an empty folder."""
    return {
        "env": {"MODELHUB_WORKER_KEY": key},
        "args": ["--platform-url", platform_url, "--artifact-cache", str(cache), *extra],
    }


def _spec_without_shared_file(version, tmp_path: Path):  # type: ignore[no-untyped-def]
    # The web host's path does not exist on the worker's host: the worker's folder is empty.
    missing = tmp_path / "web-host-only" / f"{version.artifact_sha256}.onnx"
    return pool_spec(missing, artifact_sha256=version.artifact_sha256, signature=version.signature, model="mlp4")


def test_a_worker_with_an_empty_artifact_folder_fetches_by_digest_and_serves(
    transport, inference_workers, live_server, tmp_path
):
    version = ready_version("mlp4", mlp(hidden=8, features=4, classes=3))
    _, key = worker_key_create(name="remote-host")
    cache = tmp_path / "worker-cache"
    spec = _spec_without_shared_file(version, tmp_path)
    transport.ensure_loaded(spec)
    worker = inference_workers(**_fetching(live_server.url, key, cache))
    wait_until(lambda: transport.ready(spec), timeout=60, what=f"the worker to fetch and warm:\n{worker.output()}")

    assert deployment_report(spec)[0]["artifact"] == "fetched"
    cached = cache / f"{version.artifact_sha256}.onnx"
    assert cached.read_bytes() == registry_storage.artifact_path(version.artifact_sha256).read_bytes()
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(cached)).run(None, {"x": x})[0]
    np.testing.assert_allclose(transport.infer(spec, {"x": x}, timeout_s=5).outputs["y"], expected, rtol=1e-5)

    # The platform goes away; a worker restarted on this host loads from its cache and serves.
    worker.stop()
    down = f"http://127.0.0.1:{free_port()}"
    again = inference_workers(**_fetching(down, key, cache))
    wait_until(lambda: transport.ready(spec), timeout=60, what=f"the worker to load from its cache:\n{again.output()}")
    assert [r["artifact"] for r in deployment_report(spec)] == ["cache"]
    np.testing.assert_allclose(transport.infer(spec, {"x": x}, timeout_s=5).outputs["y"], expected, rtol=1e-5)


def test_an_artifact_whose_digest_differs_is_refused_and_not_cached(
    transport, inference_workers, live_server, tmp_path
):
    version = ready_version("mlp4", mlp(hidden=8, features=4, classes=3))
    # The store's file is damaged: what the platform sends no longer has the version's digest.
    registry_storage.artifact_path(version.artifact_sha256).write_bytes(mlp(hidden=9, features=4, classes=3))
    _, key = worker_key_create(name="remote-host")
    cache = tmp_path / "worker-cache"
    spec = _spec_without_shared_file(version, tmp_path)
    transport.ensure_loaded(spec)
    worker = inference_workers(**_fetching(live_server.url, key, cache))

    failed = wait_until(
        lambda: [r for r in deployment_report(spec) if r["state"] == "failed"],
        timeout=60,
        what=f"the load to fail:\n{worker.output()}",
    )
    assert f"expected {version.artifact_sha256}: refused" in failed[0]["error"]
    assert not transport.ready(spec)
    assert list(cache.iterdir()) == []  # nothing cached, no temporary file left


def test_a_worker_with_a_wrong_key_is_refused(transport, inference_workers, live_server, tmp_path):
    version = ready_version("mlp4", mlp(hidden=8, features=4, classes=3))
    spec = _spec_without_shared_file(version, tmp_path)
    transport.ensure_loaded(spec)
    forged = "mh_worker_000000000000_" + "x" * 43
    worker = inference_workers(**_fetching(live_server.url, forged, tmp_path / "worker-cache"))
    failed = wait_until(
        lambda: [r for r in deployment_report(spec) if r["state"] == "failed"],
        timeout=60,
        what=f"the load to fail:\n{worker.output()}",
    )
    assert "answered 401" in failed[0]["error"] and "invalid or revoked worker key" in failed[0]["error"]


def test_the_worker_cache_keeps_to_its_disk_budget_but_never_drops_what_it_serves(
    transport, inference_workers, live_server, tmp_path
):
    first = ready_version("mlp4", mlp(hidden=8, features=4, classes=3))
    second = ready_version("mlp5", mlp(hidden=9, features=4, classes=3))
    _, key = worker_key_create(name="remote-host")
    cache = tmp_path / "worker-cache"
    budget = max(first.artifact_size, second.artifact_size) + 100  # room for one artifact
    worker = inference_workers(**_fetching(live_server.url, key, cache, "--artifact-cache-bytes", str(budget)))
    specs = [_spec_without_shared_file(v, tmp_path) for v in (first, second)]
    for spec in specs:
        transport.ensure_loaded(spec)
    for spec in specs:
        wait_until(lambda s=spec: transport.ready(s), timeout=60, what=f"the worker to serve:\n{worker.output()}")
    # Over the budget, but both are in use: both stay.
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{v.artifact_sha256}.onnx" for v in (first, second))

    transport.unload(specs[0])

    wait_until(
        lambda: not (cache / f"{first.artifact_sha256}.onnx").exists(),
        timeout=30,
        what=f"the sweep to remove the unloaded artifact:\n{worker.output()}",
    )
    assert [p.name for p in cache.iterdir()] == [f"{second.artifact_sha256}.onnx"]
    assert transport.ready(specs[1])
