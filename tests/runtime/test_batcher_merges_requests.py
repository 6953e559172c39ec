"""Concurrent requests are merged into fewer ONNX Runtime calls and split back correctly."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from inference.runtime.batcher import DynamicBatcher
from inference.runtime.errors import InputError, ModelNotReady, Overloaded
from inference.runtime.session import LoadedModel
from tests.runtime.conftest import GatedModel, rows
from tests.runtime.eager_batcher import EagerBatcher


def test_concurrent_requests_share_one_call_when_they_fill_a_batch(gated: GatedModel) -> None:
    # A long delay means only a full batch (16 rows) flushes: the merge does not depend on timing.
    with DynamicBatcher(gated, max_batch_size=16, max_queue_delay_ms=30_000) as batcher:  # type: ignore[arg-type]
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda i: batcher.predict(rows(2, start=100 * i), timeout_s=30), range(8)))

        stats = batcher.stats()

    assert gated.calls == [16]
    assert (stats.requests, stats.completed, stats.batches, stats.rows) == (8, 8, 1, 16)
    assert stats.batch_size_histogram == {16: 1}
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], rows(2, start=100 * i)["x"])


def test_batched_outputs_equal_unbatched_outputs_per_request(tiny_model: LoadedModel) -> None:
    rng = np.random.default_rng(1)
    requests = [{"x": rng.normal(size=(n, 10)).astype(np.float32)} for n in (1, 3, 2, 5, 1, 4)]
    start = threading.Barrier(len(requests))

    def call(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start.wait()
        return batcher.predict(inputs, timeout_s=30)

    with DynamicBatcher(tiny_model, max_batch_size=16, max_queue_delay_ms=30_000) as batcher:
        with ThreadPoolExecutor(len(requests)) as pool:
            results = list(pool.map(call, requests))
        stats = batcher.stats()

    assert stats.batches == 1 and stats.rows == 16
    for inputs, result in zip(requests, results, strict=True):
        expected = tiny_model.predict(inputs)
        np.testing.assert_allclose(result["probabilities"], expected["probabilities"], rtol=1e-6)
        np.testing.assert_array_equal(result["label"], expected["label"])


def test_a_batch_takes_whole_requests_up_to_the_row_limit(gated: GatedModel) -> None:
    gated.gate.clear()
    with DynamicBatcher(gated, max_batch_size=4, max_queue_delay_ms=0) as batcher:  # type: ignore[arg-type]
        first = batcher.submit(rows(1))
        assert gated.entered.wait(10)  # the worker is held inside the first call
        queued = [batcher.submit(rows(n)) for n in (3, 2, 2)]
        gated.gate.set()
        for future in [first, *queued]:
            future.result(timeout=30)
        stats = batcher.stats()

    assert gated.calls == [1, 3, 4]  # 3 fits alone; 2 + 2 make the next batch
    assert stats.batch_size_histogram == {1: 1, 3: 1, 4: 1}


def test_requests_whose_shapes_cannot_be_concatenated_run_in_separate_calls(gated: GatedModel) -> None:
    gated.gate.clear()
    with DynamicBatcher(gated, max_batch_size=64, max_queue_delay_ms=0) as batcher:  # type: ignore[arg-type]
        blocker = batcher.submit(rows(1))
        assert gated.entered.wait(10)
        futures = [batcher.submit(rows(2, width=w)) for w in (3, 5, 3, 5)]
        gated.gate.set()
        blocker.result(timeout=30)
        results = [f.result(timeout=30) for f in futures]
        stats = batcher.stats()

    assert gated.calls == [1, 4, 4]  # width 3 together, width 5 together
    assert stats.batches == 3
    for w, result in zip((3, 5, 3, 5), results, strict=True):
        np.testing.assert_array_equal(result["y"], rows(2, width=w)["x"])


def test_its_counters_separate_queue_wait_from_model_time(identity_model: LoadedModel) -> None:
    with DynamicBatcher(identity_model, max_batch_size=8, max_queue_delay_ms=0) as batcher:
        for _ in range(5):
            batcher.predict(rows(1), timeout_s=30)
        stats = batcher.stats()

    assert stats.completed == 5 and stats.failed == 0 and stats.queue_depth == 0
    assert stats.model_ms_total > 0 and stats.queue_wait_ms_total >= 0
    assert stats.mean_batch_rows >= 1
    assert set(stats.to_dict()) >= {"batches", "rows", "batch_size_histogram", "queue_wait_ms_total", "model_ms_total"}


def test_requests_submitted_together_run_in_one_call_however_the_thread_is_scheduled(
    identity_model: LoadedModel,
) -> None:
    # The batcher's thread takes the queue the moment it is woken (EagerBatcher): requests
    # submitted one by one would run as 1 + 11 rows; submitted together they run as one call.
    frame = [(rows(1, start=10 * i), 30.0) for i in range(12)]
    with EagerBatcher(identity_model, max_batch_size=16, max_queue_delay_ms=0) as batcher:
        futures = batcher.submit_many(frame)
        results = [f.result(timeout=30) for f in futures]
        stats = batcher.stats()

    assert (stats.requests, stats.batches, stats.rows) == (12, 1, 12)
    assert stats.batch_size_histogram == {12: 1}
    assert all(f.timing is not None and f.timing[0] == 12 for f in futures)
    for (inputs, _), result in zip(frame, results, strict=True):
        np.testing.assert_array_equal(result["y"], inputs["x"])


def test_submitted_together_each_request_is_admitted_or_refused_on_its_own(gated: GatedModel) -> None:
    gated.gate.clear()
    with DynamicBatcher(gated, max_batch_size=4, max_queue_delay_ms=0, max_queue_size=3) as batcher:  # type: ignore[arg-type]
        first = batcher.submit(rows(1))
        assert gated.entered.wait(10)  # the thread is held inside the first call; the queue is empty
        futures = batcher.submit_many(
            [(rows(1), 30.0), ({"not_x": rows(1)["x"]}, 30.0), (rows(2), 30.0), (rows(1), 30.0), (rows(1), 30.0)]
        )
        gated.gate.set()
        first.result(timeout=30)
        outcomes = [f.exception(timeout=30) for f in futures]
        stats = batcher.stats()

    assert outcomes[0] is None and outcomes[2] is None and outcomes[3] is None
    assert isinstance(outcomes[1], InputError)  # a missing input fails only itself
    assert isinstance(outcomes[4], Overloaded)  # the queue (3 requests) was full: only the overflow is refused
    assert gated.calls == [1, 4]  # the admitted three ran together
    assert (stats.requests, stats.rejected) == (4, 1)


def test_a_closed_batcher_refuses_requests_submitted_together_through_their_futures(
    identity_model: LoadedModel,
) -> None:
    batcher = DynamicBatcher(identity_model, max_batch_size=4, max_queue_delay_ms=0)
    batcher.close()

    futures = batcher.submit_many([(rows(1), None), (rows(1), None)])

    assert all(isinstance(f.exception(timeout=1), ModelNotReady) for f in futures)
