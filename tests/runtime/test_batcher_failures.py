"""Full queues, expired requests, model errors and closing, each failing only what it must."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inference.runtime.batcher import DynamicBatcher
from inference.runtime.errors import DeadlineExceeded, ModelExecutionError, ModelNotReady, Overloaded
from inference.runtime.session import LoadedModel
from tests.runtime.conftest import GatedModel, rows


def test_it_rejects_a_request_when_the_queue_is_full(gated: GatedModel) -> None:
    gated.gate.clear()
    with DynamicBatcher(gated, max_batch_size=8, max_queue_delay_ms=0, max_queue_size=2) as batcher:  # type: ignore[arg-type]
        running = batcher.submit(rows(1))
        assert gated.entered.wait(10)
        queued = [batcher.submit(rows(1)), batcher.submit(rows(1))]

        with pytest.raises(Overloaded, match=r"queue is full \(2 requests waiting\)") as excinfo:
            batcher.submit(rows(1))

        assert excinfo.value.status == 503
        gated.gate.set()
        for future in [running, *queued]:
            future.result(timeout=30)
        stats = batcher.stats()

    assert (stats.requests, stats.rejected, stats.completed) == (3, 1, 3)


def test_it_fails_expired_requests_without_running_them(gated: GatedModel) -> None:
    with DynamicBatcher(gated, max_batch_size=4, max_queue_delay_ms=30_000) as batcher:  # type: ignore[arg-type]
        doomed = batcher.submit(rows(1, start=-1), timeout_s=0.001)
        time.sleep(0.05)  # let its deadline pass while the batch is still filling
        fillers = [batcher.submit(rows(1, start=i), timeout_s=30) for i in range(3)]

        with pytest.raises(DeadlineExceeded, match="passed its deadline before it could run"):
            doomed.result(timeout=30)
        for future in fillers:
            future.result(timeout=30)
        stats = batcher.stats()

    assert gated.calls == [3]
    assert (stats.expired, stats.completed, stats.rows) == (1, 3, 3)


def test_a_model_error_fails_only_that_batch(gated: GatedModel) -> None:
    gated.fail_next = RuntimeError("kernel exploded")
    with DynamicBatcher(gated, max_batch_size=2, max_queue_delay_ms=30_000) as batcher:  # type: ignore[arg-type]
        failed = [batcher.submit(rows(1)), batcher.submit(rows(1))]
        for future in failed:
            with pytest.raises(ModelExecutionError, match="batch of 2 requests failed: kernel exploded"):
                future.result(timeout=30)

        ok = [batcher.submit(rows(1)), batcher.submit(rows(1))]
        for future in ok:
            assert future.result(timeout=30)["y"].shape == (1, 4)
        stats = batcher.stats()

    assert (stats.failed, stats.completed, stats.batches) == (2, 2, 2)


def test_a_batch_past_its_deadline_inside_the_model_is_stopped(slow_model: LoadedModel) -> None:
    with DynamicBatcher(slow_model, max_batch_size=8192, max_queue_delay_ms=0) as batcher:
        with pytest.raises(DeadlineExceeded):
            batcher.predict({"x": np.ones((4096, 1024), np.float32)}, timeout_s=0.1)
        out = batcher.predict({"x": np.ones((1, 1024), np.float32)}, timeout_s=30)

    assert out["y"].shape == (1, 1024)


def test_closing_runs_what_is_queued_and_refuses_new_work(gated: GatedModel) -> None:
    gated.gate.clear()
    batcher = DynamicBatcher(gated, max_batch_size=8, max_queue_delay_ms=0)  # type: ignore[arg-type]
    running = batcher.submit(rows(1))
    assert gated.entered.wait(10)
    queued = batcher.submit(rows(2))
    gated.gate.set()

    batcher.close()

    assert running.result(timeout=1)["y"].shape == (1, 4)
    assert queued.result(timeout=1)["y"].shape == (2, 4)
    with pytest.raises(ModelNotReady, match="batcher is closed"):
        batcher.submit(rows(1))


def test_closing_without_draining_fails_what_is_queued(gated: GatedModel) -> None:
    gated.gate.clear()
    batcher = DynamicBatcher(gated, max_batch_size=8, max_queue_delay_ms=0)  # type: ignore[arg-type]
    running = batcher.submit(rows(1))
    assert gated.entered.wait(10)
    queued = batcher.submit(rows(1))

    batcher.close(drain=False, timeout_s=0)  # fails the queue at once; the held call goes on
    gated.gate.set()

    assert running.result(timeout=5)["y"].shape == (1, 4)
    with pytest.raises(ModelNotReady, match="batcher closed before the request ran"):
        queued.result(timeout=5)


def test_a_caller_stops_waiting_at_its_deadline_even_while_the_worker_is_busy(gated: GatedModel) -> None:
    gated.gate.clear()
    with DynamicBatcher(gated, max_batch_size=8, max_queue_delay_ms=0) as batcher:  # type: ignore[arg-type]
        running = batcher.submit(rows(1))
        assert gated.entered.wait(10)

        with pytest.raises(DeadlineExceeded, match="no result within 50 ms"):
            batcher.predict(rows(1), timeout_s=0.05)

        gated.gate.set()
        running.result(timeout=30)
    stats = batcher.stats()

    assert gated.calls == [1]  # the abandoned request never ran
    assert (stats.expired, stats.completed) == (1, 1)
