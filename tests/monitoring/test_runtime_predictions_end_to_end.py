"""Real predictions (the serving core on main: ONNX Runtime behind the dynamic batcher), each
recorded as the edge will, flushed to Redis, rolled up, exposed, and checked for drift.

The HTTP prediction edge is not on main yet; when it lands, this test should drive
/api/v1/endpoints/{name}/predict instead of calling the repository.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.telemetry.recorder import PredictionRecord
from monitoring import drift, rollups
from monitoring.models import DriftScore, MetricRollup
from monitoring.stats import latency_percentiles
from tests.monitoring.conftest import later, make_version
from tests.onnx_models import tiny_classifier, write_model

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(tmp_path: Path) -> Any:
    from inference.runtime.repository import ModelRepository

    repository = ModelRepository()
    path = write_model(tmp_path, "tiny.onnx", tiny_classifier())
    model = repository.load("d1", str(path), max_batch_size=8, max_queue_delay_ms=2.0, name="tiny", version="1")
    yield model
    repository.close()


def predict_and_record(model: Any, recorder: Any, x: np.ndarray) -> None:
    started = time.perf_counter()
    try:
        outputs = model.predict({"x": x}, timeout_s=10)
        ok, kind = True, None
    except Exception as exc:  # refused requests are recorded too
        outputs, ok, kind = None, False, type(exc).__name__
    recorder.record(
        PredictionRecord(
            endpoint="tiny-ep",
            deployment="tiny:1",
            role="primary",
            latency_ms=(time.perf_counter() - started) * 1000,
            ok=ok,
            error_kind=kind,
            rows=x.shape[0],
            inputs={"x": x},
            outputs=outputs,
        )
    )


def test_real_predictions_are_counted_summarised_and_checked_for_drift(
    served: Any, recorder: Any, redis_flusher: Any, client: Any
) -> None:
    rng = np.random.default_rng(5)
    version = make_version(model="tiny", version=1)
    drift.reference_stats_set(
        model="tiny",
        version=version.version,
        features={f"x[{j}]": rng.normal(0, 1, 2000) for j in range(10)},
        source="upload",
        user=None,
    )
    recorder.default_drift_rate = 1.0
    inputs = [rng.normal(2.0, 1, (2, 10)).astype(np.float32) for _ in range(200)]  # shifted traffic
    inputs.append(np.ones((2, 3), dtype=np.float32))  # wrong shape: refused, recorded as an error
    with ThreadPoolExecutor(4) as pool:
        for chunk in range(0, len(inputs), 50):  # flushed every 50 (the drift reservoir holds 32)
            list(pool.map(lambda x: predict_and_record(served, recorder, x), inputs[chunk : chunk + 50]))
            redis_flusher.flush()
    rollups.rollup_minutes(now=later())
    rows = MetricRollup.objects.filter(endpoint="tiny-ep")
    count = sum(r.count for r in rows)
    errors = sum(r.error_count for r in rows)
    assert (count, errors) == (201, 1)
    labels: dict[str, int] = {}
    for r in rows:
        for label, c in r.outputs["label"]["counts"].items():
            labels[label] = labels.get(label, 0) + c
    assert sum(labels.values()) == 400  # 200 answered requests x 2 rows
    buckets = [sum(col) for col in zip(*(r.latency_buckets for r in rows), strict=True)]
    assert latency_percentiles(buckets)["p50"] is not None
    drift.drift_compute(now=later(), window_minutes=30)
    assert DriftScore.objects.filter(feature="x[0]").get().psi > 0.25
    metrics = client.get("/metrics").content.decode()
    assert 'modelhub_predictions_total{endpoint="tiny-ep",version="tiny:1",role="primary"} 201' in metrics
