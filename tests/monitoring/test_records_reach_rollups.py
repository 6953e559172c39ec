"""Records fed through record() and flushed show up in the roll-up table, counted right."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monitoring import keys, rollups
from monitoring.models import MetricRollup
from monitoring.stats import latency_percentiles
from tests.monitoring.conftest import later, rec

pytestmark = pytest.mark.django_db


def feed(recorder: Any) -> None:
    for _ in range(90):
        recorder.record(
            rec(
                0.8,
                batch_rows=4,
                queue_ms=0.2,
                model_ms=0.5,
                outputs={"label": np.array([1]), "score": np.array([0.75])},
            )
        )
    for _ in range(10):
        recorder.record(rec(150.0, batch_rows=8, outputs={"label": np.array([2]), "score": np.array([0.25])}))
    recorder.record(rec(2.0, ok=False, error_kind="invalid_input"))
    recorder.record(rec(4.0, role="canary", deployment="iris:2"))


def test_flushed_records_roll_up_with_counts_errors_and_percentiles(recorder: Any, redis_flusher: Any) -> None:
    feed(recorder)
    assert redis_flusher.flush() == 102
    assert rollups.rollup_minutes(now=later()) == 2
    row = MetricRollup.objects.get(deployment="iris:1")
    assert (row.count, row.error_count, row.errors) == (101, 1, {"invalid_input": 1})
    assert row.batch_count == 100 and row.batch_rows_sum == 90 * 4 + 10 * 8
    assert row.queue_ms_sum == pytest.approx(18.0) and row.model_ms_sum == pytest.approx(45.0)
    pct = latency_percentiles(row.latency_buckets)
    assert pct["p50"] is not None and pct["p50"] <= 1.0
    assert 100 < pct["p99"] <= 200
    assert row.outputs["label"] == {"kind": "class", "counts": {"1": 90, "2": 10}}
    assert row.outputs["score"]["n"] == 100 and row.outputs["score"]["sum"] == pytest.approx(70.0)
    assert MetricRollup.objects.get(deployment="iris:2").role == "canary"


def test_rolling_up_twice_replaces_instead_of_adding(recorder: Any, redis_flusher: Any, redis_client: Any) -> None:
    feed(recorder)
    redis_flusher.flush()
    minute_keys = [k.decode() for k in redis_client.zrange(keys.MINUTES_INDEX, 0, -1)]
    raw = {k: redis_client.hgetall(k) for k in minute_keys}
    rollups.rollup_minutes(now=later())
    # The keys are gone once committed; put them back as if the task had died before deleting.
    assert not redis_client.exists(*minute_keys)
    for key, fields in raw.items():
        redis_client.hset(key, mapping=fields)
        redis_client.zadd(keys.MINUTES_INDEX, {key: keys.parse_minute_key(key)[0]})
    rollups.rollup_minutes(now=later())
    assert MetricRollup.objects.get(deployment="iris:1").count == 101


def test_open_minutes_stay_in_redis(recorder: Any, redis_flusher: Any, redis_client: Any) -> None:
    feed(recorder)
    redis_flusher.flush()
    from django.utils import timezone

    assert rollups.rollup_minutes(now=timezone.now()) == 0
    assert MetricRollup.objects.count() == 0
    assert redis_client.zcard(keys.MINUTES_INDEX) == 2


def test_without_redis_a_flush_writes_the_database_directly(recorder: Any, db_flusher: Any) -> None:
    feed(recorder)
    db_flusher.flush()
    feed(recorder)
    db_flusher.flush()
    row = MetricRollup.objects.get(deployment="iris:1")
    assert row.count == 202 and row.errors == {"invalid_input": 2}
    assert row.outputs["label"]["counts"] == {"1": 180, "2": 20}


def test_several_processes_flushing_the_same_minute_add_up(
    redis_flusher: Any, redis_client: Any, settings: Any
) -> None:
    from inference.telemetry.recorder import Recorder
    from monitoring.flusher import Flusher

    others = [Recorder() for _ in range(3)]
    for r in others:
        for _ in range(5):
            r.record(rec(1.5))
        Flusher(r, redis_url=settings.REDIS_URL).flush()
    rollups.rollup_minutes(now=later())
    assert MetricRollup.objects.get(deployment="iris:1").count == 15
