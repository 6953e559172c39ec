"""A worker-pool deployment is served by a real inference worker process over Redis."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort
import pytest

from tests.integration.pool.conftest import (
    deployment_report,
    mlp_model,
    pool_spec,
    wait_until,
)

pytestmark = [pytest.mark.integration]


def test_a_pool_deployment_answers_what_onnx_runtime_answers(transport, inference_workers, tmp_path):
    path = mlp_model(tmp_path / "mlp.onnx")
    spec = pool_spec(path)
    transport.ensure_loaded(spec)
    worker = inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what=f"the worker to warm the model:\n{worker.output()}")

    x = np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)
    expected = ort.InferenceSession(str(path)).run(None, {"input": x})[0]
    result = transport.infer(spec, {"input": x}, timeout_s=5)

    np.testing.assert_allclose(result.outputs["output"], expected, rtol=1e-5, atol=1e-5)
    assert result.outputs["output"].dtype == np.float32
    assert result.provider == "CPUExecutionProvider"
    assert result.extra["worker"]
    # How it ran, for monitoring: rows in the ONNX Runtime call, queue and model time.
    assert result.batch_rows == 3 and result.model_ms > 0 and result.queue_ms >= 0


def test_concurrent_requests_are_merged_into_batches(transport, inference_workers, tmp_path):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"), max_batch_size=64, max_queue_delay_ms=5)
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    errors: list[BaseException] = []
    x = np.ones((1, 16), np.float32)

    def caller() -> None:
        try:
            for _ in range(20):
                transport.infer(spec, {"input": x}, timeout_s=10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    def all_counted():
        reports = deployment_report(spec)
        return reports if reports and reports[0].get("batcher", {}).get("completed") == 480 else None

    report = wait_until(all_counted, timeout=10, what="the heartbeat to count every request")[0]
    assert report["batch_rows"] == 480
    assert report["batches"] < 480  # some ONNX Runtime calls ran more than one row
    assert max(int(k) for k in report["batcher"]["batch_size_histogram"]) > 1


def test_the_heartbeat_reports_the_worker_and_its_deployment(transport, inference_workers, tmp_path):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    worker = inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    from inference.pool import worker_status

    beat = next(b for b in worker_status() if b["pid"] == worker.proc.pid)
    assert beat["device"] == "cpu"
    assert "CPUExecutionProvider" in beat["providers"]
    report = beat["deployments"][spec.key]
    assert report["ready"] is True
    assert report["provider"] == "CPUExecutionProvider"
    assert report["endpoint"] == "scores"
    assert report["queue_depth"] == 0


def test_an_unloaded_deployment_is_no_longer_ready(transport, inference_workers, tmp_path):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    transport.unload(spec)
    wait_until(
        lambda: transport.warm_workers(spec) == 0 and not deployment_report(spec),
        timeout=15,
        what="the worker to unload the deployment",
    )
