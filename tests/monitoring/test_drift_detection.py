"""Drift scores rise when the input distribution shifts and stay low when it does not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from monitoring import drift, rollups
from monitoring.models import DriftScore, MetricRollup
from tests.monitoring.conftest import later, make_version, rec

pytestmark = pytest.mark.django_db


def reference(version: Any, rng: np.random.Generator) -> None:
    drift.reference_stats_set(
        model="iris",
        version=version.version,
        features={"x[0]": rng.normal(0, 1, 5000), "x[1]": rng.uniform(0, 10, 5000)},
        outputs={"label": {"kind": "class", "counts": {"0": 500, "1": 500}}},
        source="upload",
        user=None,
    )


def traffic(recorder: Any, flusher: Any, rng: np.random.Generator, *, shift: float, labels: tuple[int, int]) -> None:
    """120 requests of 4 rows, flushed every 30 (the reservoir keeps 32 requests per flush)."""
    recorder.default_drift_rate = 1.0
    for i in range(120):
        if i % 30 == 0:
            flusher.flush()
        x = np.column_stack([rng.normal(shift, 1, 4), rng.uniform(0, 10, 4)])
        label = labels[0] if i % 2 else labels[1]
        recorder.record(rec(inputs={"x": x}, rows=4, outputs={"label": np.array([label] * 4)}))


def scores_after(recorder: Any, flusher: Any) -> dict[str, DriftScore]:
    flusher.flush()
    rollups.rollup_minutes(now=later(5))
    drift.drift_compute(now=later(5), window_minutes=30)
    return {s.feature: s for s in DriftScore.objects.all()}


def test_same_distribution_gives_low_scores(recorder: Any, redis_flusher: Any) -> None:
    rng = np.random.default_rng(1)
    reference(make_version(), rng)
    traffic(recorder, redis_flusher, rng, shift=0.0, labels=(0, 1))
    scores = scores_after(recorder, redis_flusher)
    assert scores["x[0]"].psi < 0.1 and scores["x[1]"].psi < 0.1
    assert scores["x[0]"].ks_p_value > 0.01
    assert scores["label"].kind == "output" and scores["label"].psi < 0.1


def test_shifted_inputs_and_outputs_give_high_scores(recorder: Any, redis_flusher: Any) -> None:
    rng = np.random.default_rng(2)
    reference(make_version(), rng)
    traffic(recorder, redis_flusher, rng, shift=1.5, labels=(1, 1))
    scores = scores_after(recorder, redis_flusher)
    assert scores["x[0]"].psi > 0.25
    assert scores["x[0]"].ks_statistic > 0.4 and scores["x[0]"].ks_p_value < 1e-6
    assert scores["x[1]"].psi < 0.1  # the other feature did not move
    assert scores["label"].psi > 0.25  # prediction drift
    latest = MetricRollup.objects.filter(drift_scores__has_key="x[0]").first()
    assert latest is not None


def test_versions_without_reference_get_one_from_their_first_traffic(
    recorder: Any, redis_flusher: Any, settings: Any
) -> None:
    settings.MONITORING_REFERENCE_FROM_TRAFFIC_HOURS = 1
    version = make_version()
    traffic(recorder, redis_flusher, np.random.default_rng(3), shift=0.0, labels=(0, 1))
    redis_flusher.flush()
    rollups.rollup_minutes(now=later())
    assert drift.reference_from_traffic(now=later(30)) == 0  # its first hour is not over yet
    assert drift.reference_from_traffic(now=later(90)) == 1
    version.refresh_from_db()
    assert version.reference_stats["source"] == "traffic"
    assert set(version.reference_stats["features"]) == {"x[0]", "x[1]"}
    assert version.reference_stats["outputs"]["label"]["counts"] == {"0": 240, "1": 240}


def test_inputs_are_not_kept_when_the_sample_rate_is_zero(recorder: Any, redis_flusher: Any) -> None:
    from monitoring.models import InputSample

    recorder.default_drift_rate = 0.0
    recorder.record(rec(inputs={"x": np.ones((2, 2))}))
    redis_flusher.flush()
    rollups.rollup_minutes(now=later())
    assert InputSample.objects.count() == 0


def test_embedded_default_appends_one_sample_row_per_flush_and_drift_reads_them_all(
    recorder: Any, db_flusher: Any
) -> None:
    """Without Redis each flush appends a row; drift adds up every row of the window."""
    version = make_version()
    reference(version, np.random.default_rng(11))
    traffic(recorder, db_flusher, np.random.default_rng(12), shift=1.5, labels=(1, 1))
    db_flusher.flush()
    from monitoring.models import InputSample

    samples = list(InputSample.objects.filter(deployment="iris:1"))
    assert len(samples) >= 4  # one per flush, all in this minute (or two minutes at a boundary)
    assert sum(s.rows for s in samples) == 120 * 4  # every request kept: 30 per flush, reservoir 32
    drift.drift_compute(now=later(5), window_minutes=30)
    shifted = DriftScore.objects.get(feature="x[0]")
    assert shifted.n == 120 * 4
    assert shifted.psi > 0.25


def test_a_database_flush_never_reads_stored_samples_back(recorder: Any, db_flusher: Any) -> None:
    """A flush late in a minute costs what one early in it does: no SELECT of stored features."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rng = np.random.default_rng(13)
    recorder.default_drift_rate = 1.0
    for _ in range(5):
        for _ in range(32):
            recorder.record(rec(inputs={"x": rng.normal(0, 1, (4, 2))}, rows=4))
        with CaptureQueriesContext(connection) as queries:
            db_flusher.flush()
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert reads, "expected the cap check"
    assert not any('"features"' in sql for sql in reads), reads


def test_database_samples_stop_at_the_per_minute_cap(recorder: Any, db_flusher: Any, monkeypatch: Any) -> None:
    from monitoring.models import InputSample

    monkeypatch.setattr(rollups, "INPUT_SAMPLE_CAP", 40)
    recorder.default_drift_rate = 1.0
    rng = np.random.default_rng(14)
    for _ in range(3):  # 3 flushes of 8 requests x 4 rows = 96 rows offered
        for _ in range(8):
            recorder.record(rec(inputs={"x": rng.normal(0, 1, (4, 2))}, rows=4))
        db_flusher.flush()
    per_minute: dict[Any, int] = {}
    for s in InputSample.objects.all():
        per_minute[s.minute] = per_minute.get(s.minute, 0) + s.rows
        assert all(len(v) == s.rows for v in s.features.values())
    assert all(n <= 40 for n in per_minute.values()), per_minute
    assert sum(per_minute.values()) >= 40


def test_inputs_whose_shapes_differ_are_skipped_without_losing_the_flush(recorder: Any, db_flusher: Any) -> None:
    """An input whose rows cannot be stacked gives no drift columns; the counts still land."""
    from monitoring.models import InputSample

    recorder.default_drift_rate = 1.0
    recorder.record(rec(inputs={"x": np.ones((4, 2)), "z": np.ones((4, 1))}, rows=4))
    recorder.record(rec(inputs={"x": np.ones((4, 3)), "z": np.zeros((4, 1))}, rows=4))  # x: 3 columns now
    assert db_flusher.flush() == 2
    assert MetricRollup.objects.get(deployment="iris:1").count == 2
    (sample,) = InputSample.objects.all()
    assert set(sample.features) == {"z"} and sample.rows == 8
