"""A web process coalesces the requests for one deployment that arrive while its frame is in
flight: one frame carries many requests, the worker runs them together and answers with one
frame that the web process splits. Real inference worker processes, real Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from inference import pool_protocol as wire
from inference.pool import redis_client
from inference.runtime.errors import DeadlineExceeded, InputError
from tests.integration.pool.conftest import (
    assert_each_answer_is_its_own,
    assert_survived_the_kill,
    deployment_report,
    mlp_model,
    outcome,
    pool_spec,
    two_workers_warm,
    wait_until,
)
from tests.runtime.eager_batcher import EAGER_WORKER

pytestmark = [pytest.mark.integration]


def _run(make: Callable[[], Coroutine[Any, Any, Any]], timeout: float = 60) -> Any:
    # In a thread of its own: the browser tests' Playwright keeps an event loop running in
    # the main thread for the whole session, and asyncio.run refuses to nest.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result(timeout=timeout)


def test_concurrent_requests_share_frames_and_each_gets_its_own_rows(transport, inference_workers, tmp_path):
    path = mlp_model(tmp_path / "mlp.onnx")
    spec = pool_spec(path, max_batch_size=16, max_queue_delay_ms=1)
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    rng = np.random.default_rng(7)
    # Requests of 1 to 3 rows, every row different, so a mix-up of rows shows.
    inputs = [rng.standard_normal((1 + i % 3, 16)).astype(np.float32) for i in range(96)]

    async def calls() -> list[Any]:
        return await asyncio.gather(*[transport.infer_async(spec, {"input": x}, timeout_s=20) for x in inputs])

    answers = _run(calls)

    assert_each_answer_is_its_own(path, inputs, answers)
    report = wait_until(
        lambda: [r for r in deployment_report(spec) if r.get("pulled") == len(inputs)],
        timeout=10,
        what="the heartbeat to count the requests",
    )[0]
    assert report["frames"] < len(inputs)  # one frame per request would be 96


def test_a_bad_request_inside_a_coalesced_frame_fails_only_itself(transport, inference_workers, tmp_path):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"), max_batch_size=16)
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    good = np.ones((1, 16), np.float32)
    bad = np.ones((1, 5), np.float32)  # the model takes 16 features

    async def calls() -> list[Any]:
        requests = [transport.infer_async(spec, {"input": bad if i == 20 else good}, timeout_s=20) for i in range(40)]
        return await asyncio.gather(*requests, return_exceptions=True)

    answers = _run(calls)

    assert isinstance(answers[20], InputError) and answers[20].status == 400, answers[20]
    assert '"input"' in answers[20].message
    others = [a for i, a in enumerate(answers) if i != 20]
    assert all(not isinstance(a, BaseException) for a in others), [a for a in others if isinstance(a, BaseException)]
    assert all(a.outputs["output"].shape == (1, 3) for a in others)
    report = wait_until(
        lambda: [r for r in deployment_report(spec) if r.get("pulled") == 40],
        timeout=10,
        what="the heartbeat to count the requests",
    )[0]
    assert report["frames"] < 40


def test_the_expired_requests_of_a_frame_are_not_run_and_the_live_ones_are(
    transport, inference_workers, tmp_path, redis_url
):
    spec = pool_spec(mlp_model(tmp_path / "mlp.onnx"))
    transport.ensure_loaded(spec)
    inference_workers()
    wait_until(lambda: transport.ready(spec), timeout=60, what="the model to be warm")
    client = redis_client(redis_url)
    reply = wire.reply_key(uuid.uuid4().hex)
    now = time.time()
    deadlines = [now - 1, now + 10, now - 1]  # the first and the last expired before a worker took them
    rows = [np.full((1, 16), i, np.float32) for i in range(3)]
    client.rpush(
        wire.queue_key(spec.key),
        wire.encode_many({"r": reply, "dl": max(deadlines), "d": deadlines}, [{"input": x} for x in rows]),
    )

    popped = client.blpop([reply], timeout=10)

    assert popped is not None, "no reply"
    header, groups = wire.decode_many(popped[1])
    assert header["e"][0][1] == DeadlineExceeded.code and header["e"][2][1] == DeadlineExceeded.code
    assert header["e"][1] is None and groups[1]["output"].shape == (1, 3)
    report = wait_until(
        lambda: [r for r in deployment_report(spec) if r.get("expired_dropped")],
        timeout=10,
        what="the heartbeat to count the expired requests",
    )[0]
    assert report["expired_dropped"] == 2
    assert report["batcher"]["requests"] == 1  # only the live request reached the batcher


def test_killing_one_of_two_workers_under_coalesced_load_gives_503_or_504_and_never_hangs(
    transport, inference_workers, tmp_path
):
    deadline_s = 2.0
    spec, first, second = two_workers_warm(transport, inference_workers, tmp_path)
    outcomes: list[tuple[float, float, str]] = []  # (started, seconds, outcome)
    stop = threading.Event()
    x = np.ones((1, 16), np.float32)

    async def caller() -> None:
        while not stop.is_set():
            started = time.monotonic()
            error: BaseException | None = None
            try:
                await transport.infer_async(spec, {"input": x}, timeout_s=deadline_s)
            except Exception as exc:  # noqa: BLE001 - classified by outcome()
                error = exc
            outcomes.append((started, time.monotonic() - started, outcome(error)))

    async def callers() -> None:
        await asyncio.wait_for(asyncio.gather(*[caller() for _ in range(16)]), timeout=60)

    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(lambda: asyncio.run(callers()))
        wait_until(lambda: len(outcomes) > 200, timeout=30, what="requests to flow")
        first.kill()
        killed_at = time.monotonic()
        time.sleep(deadline_s + 2)
        stop.set()
        running.result(timeout=deadline_s + 10)  # every caller came back: none hung

    assert_survived_the_kill(outcomes, killed_at, deadline_s)
    assert second.proc.poll() is None


def test_the_requests_of_the_frames_a_worker_pulls_together_run_in_one_onnx_runtime_call(
    transport, inference_workers, tmp_path, redis_url
):
    # Two frames (5 + 7 requests) wait in the queue before the model is loaded, so the first
    # puller takes both at once. The worker's batcher thread takes its queue the moment it is
    # woken (EagerBatcher): requests handed to it one by one would run in several calls, every
    # time; the worker hands over all twelve together and they run as one call of 12 rows.
    path = mlp_model(tmp_path / "mlp.onnx")
    spec = pool_spec(path, max_batch_size=16, max_queue_delay_ms=0)
    client = redis_client(redis_url)
    deadline = time.time() + 120
    frames = [[np.full((1, 16), 10 * f + i, np.float32) for i in range(n)] for f, n in enumerate((5, 7))]
    replies = [wire.reply_key(uuid.uuid4().hex) for _ in frames]
    for reply, inputs in zip(replies, frames, strict=True):
        header = {"r": reply, "dl": deadline, "d": [deadline] * len(inputs)}
        client.rpush(wire.queue_key(spec.key), wire.encode_many(header, [{"input": x} for x in inputs]))
    transport.ensure_loaded(spec)
    inference_workers(code=EAGER_WORKER)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for reply, inputs in zip(replies, frames, strict=True):
        popped = client.blpop([reply], timeout=60)
        assert popped is not None, "no reply"
        header, groups = wire.decode_many(popped[1])
        assert header["e"] == [None] * len(inputs)
        for x, outputs, timing in zip(inputs, groups, header["x"], strict=True):
            np.testing.assert_allclose(outputs["output"], session.run(None, {"input": x})[0], rtol=1e-5, atol=1e-5)
            assert timing[0] == 12  # rows in the ONNX Runtime call it ran in
    report = wait_until(
        lambda: [r for r in deployment_report(spec) if r.get("pulled") == 12],
        timeout=10,
        what="the heartbeat to count the requests",
    )[0]
    assert report["frames"] == 2
    assert report["batcher"]["batch_size_histogram"] == {"12": 1}
