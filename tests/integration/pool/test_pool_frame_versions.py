"""Web processes and inference workers of different frame versions (different releases)
refuse each other clearly: 503 JSON naming both versions on the web side, an error in the
worker's log, never a misread frame."""

from __future__ import annotations

import struct
import time

import numpy as np
import orjson
import pytest

from config.errors import ServiceUnavailable
from config.exceptions import respond
from inference import pool_protocol as wire
from inference.pool import redis_client
from tests.integration.pool.conftest import deployment_report, mlp_model, pool_spec, wait_until

pytestmark = [pytest.mark.integration]


def _refusal(transport, spec) -> ServiceUnavailable:  # type: ignore[no-untyped-def]
    with pytest.raises(ServiceUnavailable) as caught:
        transport.infer(spec, {"input": np.ones((2, 16), np.float32)}, timeout_s=5)
    return caught.value


def test_a_web_process_refuses_a_worker_of_another_frame_version(transport, inference_workers, tmp_path):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    worker = inference_workers(frame_version=wire.FRAME_VERSION + 1)  # a worker of a newer release
    wait_until(lambda: transport.ready(spec), timeout=60, what=f"the worker to warm the model:\n{worker.output()}")

    refusal = _refusal(transport, spec)

    response = respond(refusal, "/api/v1/endpoints/scores/predict")
    assert response.status_code == 503 and response["Retry-After"]
    error = orjson.loads(response.content)["error"]
    assert error["details"] == {"worker_frame_version": wire.FRAME_VERSION + 1, "web_frame_version": wire.FRAME_VERSION}
    assert f"worker speaks frame version {wire.FRAME_VERSION + 1}" in error["message"]
    assert f"this web process speaks frame version {wire.FRAME_VERSION}" in error["message"]
    assert f"request frame of version {wire.FRAME_VERSION} reached" in worker.output()
    assert f"which speaks frame version {wire.FRAME_VERSION + 1}" in worker.output()
    wait_until(
        lambda: deployment_report(spec)[0]["frame_version_refused"] >= 1,
        timeout=10,
        what="the heartbeat to count the refusal",
    )


def test_a_worker_refuses_a_web_process_of_another_frame_version(transport, inference_workers, tmp_path, monkeypatch):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    worker = inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what=f"the worker to warm the model:\n{worker.output()}")
    monkeypatch.setattr(wire, "FRAME_VERSION", wire.FRAME_VERSION + 1)  # this "web process" is newer

    refusal = _refusal(transport, spec)

    assert refusal.details == {"worker_frame_version": wire.FRAME_VERSION - 1, "web_frame_version": wire.FRAME_VERSION}
    assert f"request frame of version {wire.FRAME_VERSION} reached" in worker.output()
    assert "ERROR" in worker.output()


def test_a_web_process_of_a_release_before_versioning_gets_a_refusal_it_can_read(
    transport, inference_workers, tmp_path
):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    worker = inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what=f"the worker to warm the model:\n{worker.output()}")
    # A request as the unversioned layout wrote it: <u32 header length><JSON header><tensor bytes>.
    reply_key = wire.reply_key("legacy-request")
    x = np.ones((1, 16), np.float32)
    head = orjson.dumps(
        {"id": "legacy-request", "dl": time.time() + 5, "r": reply_key, "t": [["input", "<f4", [1, 16]]]}
    )
    client = redis_client()
    client.rpush(wire.queue_key(spec.key), struct.pack("<I", len(head)) + head + x.tobytes())

    _, frame = client.blpop([reply_key], timeout=5)

    (size,) = struct.unpack_from("<I", frame)  # the old layout, so the old web process reads it
    header = orjson.loads(frame[4 : 4 + size])
    assert header["ok"] == 0 and header["c"] == "model_not_ready" and header["s"] == 503
    assert "frame of version 1" in header["e"] and f"speaks frame version {wire.FRAME_VERSION}" in header["e"]
