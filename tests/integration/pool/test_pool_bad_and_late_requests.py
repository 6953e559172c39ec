"""Requests the pool must not run: expired ones, unpicked ones, malformed ones, wrong inputs."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from config.errors import ServiceUnavailable
from inference import pool_protocol as wire
from inference.pool import WorkerPoolTransport, redis_client
from inference.runtime.errors import InputError
from tests.integration.pool.conftest import (
    deployment_report,
    mlp_model,
    pool_spec,
    wait_until,
)

pytestmark = [pytest.mark.integration]


def test_a_request_that_expired_in_the_queue_is_never_run(transport, inference_workers, tmp_path, redis_url):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    client = redis_client(redis_url)
    late_reply = wire.reply_key(uuid.uuid4().hex)
    x = np.ones((1, 16), np.float32)
    # Queued before any worker exists, with a deadline already past.
    client.rpush(
        wire.queue_key(spec.key),
        wire.encode_frame({"id": "late", "dl": time.time() - 1, "r": late_reply}, {"input": x}),
    )
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    transport.infer(spec, {"input": x}, timeout_s=5)

    def counted():
        return [r for r in deployment_report(spec) if r.get("expired_dropped") and r["batcher"]["completed"]]

    report = wait_until(counted, timeout=10, what="the heartbeat to count both requests")[0]
    assert report["expired_dropped"] == 1
    assert report["batcher"]["requests"] == 1  # only the live request reached the batcher
    assert client.exists(late_reply) == 0


def test_a_request_no_worker_takes_answers_503_and_is_withdrawn(transport, tmp_path, redis_url):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    client = redis_client(redis_url)
    # A worker that reported it warm, then died without a word: its heartbeat has not expired.
    client.zadd(wire.warm_key(spec.key), {"gone-worker": time.time() + 30})
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            transport.infer(spec, {"input": np.ones((1, 16), np.float32)}, timeout_s=0.3)
    finally:
        client.delete(wire.warm_key(spec.key))
    assert caught.value.status == 503
    assert "no inference worker took the request" in caught.value.message
    assert caught.value.retry_after_s >= 1
    assert client.llen(wire.queue_key(spec.key)) == 0


def test_a_deployment_no_worker_holds_warm_is_refused_at_once_and_never_queued(transport, tmp_path, redis_url):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)  # assigned, but no worker runs
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        transport.infer(spec, {"input": np.ones((1, 16), np.float32)}, timeout_s=30)
    assert time.monotonic() - started < 10  # refused, not held until the 30 s deadline
    assert caught.value.retry_after_s >= 1
    assert "no inference worker holds" in caught.value.message
    assert redis_client(redis_url).llen(wire.queue_key(spec.key)) == 0


def test_redis_unreachable_answers_503_with_retry_after():
    closed_port = WorkerPoolTransport("redis://127.0.0.1:1/0")
    spec = pool_spec(Path("/nonexistent.onnx"))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as caught:
        closed_port.infer(spec, {"input": np.ones((1, 16), np.float32)}, timeout_s=30)
    assert caught.value.status == 503
    assert caught.value.retry_after_s >= 1
    assert "unreachable" in caught.value.message
    assert time.monotonic() - started < 10  # a guard against hanging until the 30 s deadline
    assert closed_port.ready(spec) is False


def test_inputs_that_do_not_fit_the_model_get_a_400_from_the_worker(transport, inference_workers, tmp_path):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    with pytest.raises(InputError) as caught:
        transport.infer(spec, {"input": np.ones((1, 5), np.float32)}, timeout_s=5)
    assert caught.value.status == 400
    assert '"input"' in caught.value.message


def test_a_malformed_frame_is_dropped_and_the_worker_keeps_serving(transport, inference_workers, tmp_path, redis_url):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    redis_client(redis_url).rpush(wire.queue_key(spec.key), b"\xff\xff\xff\x7fgarbage")
    result = transport.infer(spec, {"input": np.ones((1, 16), np.float32)}, timeout_s=5)
    assert result.outputs["output"].shape == (1, 3)
    wait_until(
        lambda: [r for r in deployment_report(spec) if r.get("bad_frames") == 1],
        timeout=10,
        what="the heartbeat to count the malformed frame",
    )


def test_the_async_path_answers_like_the_blocking_one_and_503s_when_redis_is_unreachable(
    transport, inference_workers, tmp_path
):
    import asyncio

    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    x = np.ones((2, 16), np.float32)

    async def calls():
        answers = await asyncio.gather(*[transport.infer_async(spec, {"input": x}, timeout_s=5) for _ in range(16)])
        with pytest.raises(ServiceUnavailable) as caught:
            await WorkerPoolTransport("redis://127.0.0.1:1/0").infer_async(spec, {"input": x}, timeout_s=30)
        return answers, caught.value

    # In a thread of its own: the browser tests' Playwright keeps an event loop running
    # in the main thread for the whole session, and asyncio.run refuses to nest.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        answers, refused = pool.submit(asyncio.run, calls()).result(timeout=60)
    expected = transport.infer(spec, {"input": x}, timeout_s=5).outputs["output"]
    for answer in answers:
        np.testing.assert_array_equal(answer.outputs["output"], expected)
    assert refused.status == 503 and refused.retry_after_s >= 1
