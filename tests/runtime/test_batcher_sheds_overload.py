"""Admission control: an overload is refused at once (503), what is admitted meets its deadline.

The model is a real ONNX Runtime session behind a floor on its service time (a sleep per
call), so that capacity is known: a slower machine only makes calls longer, never shorter.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

import pytest

from inference.runtime.batcher import AdmissionPolicy, DynamicBatcher
from inference.runtime.errors import DeadlineExceeded, Overloaded
from inference.runtime.session import LoadedModel
from tests.runtime.conftest import rows

CALL_S = 0.02  # each ONNX Runtime call takes at least this long
BATCH = 4


class FloorModel:
    """A LoadedModel whose every call takes at least CALL_S."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.signature = model.signature
        self.name = model.name
        self.label = model.label
        self.rows_run = 0

    def predict(self, inputs: Mapping[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        started = time.monotonic()
        outputs = self.model.predict(inputs, timeout_s=timeout_s)
        self.rows_run += int(next(iter(inputs.values())).shape[0])
        time.sleep(max(CALL_S - (time.monotonic() - started), 0.0))
        return outputs


def burst(batcher: DynamicBatcher, count: int, timeout_s: float | None) -> Counter[str]:
    """Send `count` requests at once (open loop); count every outcome by kind."""
    outcomes: Counter[str] = Counter()
    futures: list[Future[Any]] = []
    for i in range(count):
        try:
            futures.append(batcher.submit(rows(1, start=i), timeout_s=timeout_s))
        except Overloaded as exc:
            assert exc.status == 503 and exc.retry_after_s >= 1
            outcomes["refused 503"] += 1
    for future in futures:
        try:
            future.result(timeout=60)
            outcomes["answered"] += 1
        except DeadlineExceeded:
            outcomes["deadline 504"] += 1
        except Exception as exc:  # noqa: BLE001 - counted, so that the test names it
            outcomes[f"other {type(exc).__name__}"] += 1
    return outcomes


def prime(batcher: DynamicBatcher) -> None:
    """A few calls one at a time, so the batcher knows its time per batch."""
    for i in range(3):
        batcher.predict(rows(1, start=i), timeout_s=30)


@pytest.fixture
def floor_model(identity_model: LoadedModel) -> FloorModel:
    return FloorModel(identity_model)


def test_an_overload_is_refused_at_once_and_what_is_admitted_meets_its_deadline(floor_model: FloorModel) -> None:
    # Capacity within a 1 s deadline: 1 / 0.02 x 4 = 200 rows; a quarter of the deadline
    # admits about 50, so that even a machine four times slower than planned answers
    # them in time. 400 at once is twice what could ever be answered.
    policy = AdmissionPolicy(deadline_fraction=0.25)
    with DynamicBatcher(floor_model, max_batch_size=BATCH, max_queue_delay_ms=0, admission=policy) as batcher:  # type: ignore[arg-type]
        prime(batcher)
        outcomes = burst(batcher, 400, timeout_s=1.0)
        stats = batcher.stats()

    assert sum(outcomes.values()) == 400
    assert set(outcomes) == {"answered", "refused 503"}, outcomes  # no 504, nothing else
    assert outcomes["refused 503"] >= 200, outcomes  # it shed what could never make it
    assert outcomes["answered"] >= 25, outcomes  # and still served near capacity
    assert stats.shed == outcomes["refused 503"] and stats.expired == 0
    assert floor_model.rows_run == outcomes["answered"] + 3  # every refused request never ran


def test_without_admission_control_the_same_overload_waits_out_its_deadline(floor_model: FloorModel) -> None:
    """The behaviour admission control replaces: the queue takes everything, the tail 504s."""
    policy = AdmissionPolicy(enabled=False)
    with DynamicBatcher(floor_model, max_batch_size=BATCH, max_queue_delay_ms=0, admission=policy) as batcher:  # type: ignore[arg-type]
        prime(batcher)
        outcomes = burst(batcher, 400, timeout_s=1.0)
        stats = batcher.stats()

    assert sum(outcomes.values()) == 400
    assert outcomes["refused 503"] == 0 and outcomes["deadline 504"] > 0, outcomes
    # Requests that expired in the queue were still never run.
    assert floor_model.rows_run == outcomes["answered"] + 3
    assert stats.expired == outcomes["deadline 504"]


def test_a_request_without_a_deadline_is_bounded_by_the_longest_queue_wait(floor_model: FloorModel) -> None:
    # 0.2 s of queue at 0.02 s per batch of 4: about 40 rows, whatever the deadline.
    policy = AdmissionPolicy(max_queue_wait_s=0.2)
    with DynamicBatcher(floor_model, max_batch_size=BATCH, max_queue_delay_ms=0, admission=policy) as batcher:  # type: ignore[arg-type]
        prime(batcher)
        outcomes = burst(batcher, 200, timeout_s=None)

    assert sum(outcomes.values()) == 200
    assert set(outcomes) == {"answered", "refused 503"}, outcomes
    assert outcomes["refused 503"] >= 100, outcomes


def test_the_expected_wait_follows_the_queue_and_the_time_per_batch(floor_model: FloorModel) -> None:
    with DynamicBatcher(floor_model, max_batch_size=BATCH, max_queue_delay_ms=0) as batcher:  # type: ignore[arg-type]
        assert batcher.expected_wait_s() == 0.0  # no history: nothing to plan with yet
        prime(batcher)
        per_batch = batcher.stats().batch_ms_ewma / 1000.0
        assert per_batch >= CALL_S
        assert batcher.expected_wait_s(rows=1) == pytest.approx(per_batch)
        assert batcher.expected_wait_s(rows=9) == pytest.approx(3 * per_batch)  # ceil(9 / 4) batches


def test_a_queue_is_planned_with_the_time_of_full_batches_not_of_the_quiet_ones_before(
    floor_model: FloorModel,
) -> None:
    """Quiet traffic runs 1-row batches; a long queue runs full ones, which take longer."""

    class RowCost(FloorModel):
        def predict(self, inputs: Mapping[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
            outputs = self.model.predict(inputs, timeout_s=timeout_s)
            time.sleep(CALL_S * int(next(iter(inputs.values())).shape[0]))  # cost grows with the rows
            return outputs

    model = RowCost(floor_model.model)
    with DynamicBatcher(model, max_batch_size=BATCH, max_queue_delay_ms=0) as batcher:  # type: ignore[arg-type]
        batcher.submit(rows(BATCH), timeout_s=30).result(timeout=30)  # one full batch
        prime(batcher)  # then quiet: 1-row batches
        per_batch = batcher.stats().batch_ms_ewma / 1000.0

    assert per_batch >= BATCH * CALL_S  # the full batch's time, not the last 1-row ones'
