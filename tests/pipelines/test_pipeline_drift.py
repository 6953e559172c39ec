"""Drift on what the model really saw (issue #14): a pipeline's model steps hand the inputs
they received, after the feature lookup and the transforms, to monitoring under their own
version, so the version's drift against its reference statistics covers pipeline traffic.

Real Redis (the feature store and monitoring's keys), real ONNX Runtime sessions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import features
from inference.pipelines import services as pipeline_services
from inference.telemetry.recorder import Recorder
from monitoring import drift, rollups
from monitoring.flusher import Flusher
from monitoring.models import DriftScore, InputSample, MetricRollup, MonitoringSettings
from tests.monitoring.conftest import later
from tests.pipelines.conftest import SCALE, fraud_spec

pytestmark = pytest.mark.django_db

N_CARDS = 200


def model_view(amount: np.ndarray, avg_amount: np.ndarray, tx_count: np.ndarray) -> dict[str, np.ndarray]:
    """What the pipeline's "prep" step hands the model, per column of x: the reference."""
    x = np.column_stack([amount, avg_amount, tx_count, amount / avg_amount])
    x = (x - np.array(SCALE["mean"])) / np.array(SCALE["std"])
    return {f"x[{j}]": x[:, j] for j in range(4)}


@pytest.fixture
def recorder(monkeypatch: Any) -> Recorder:
    """A private recorder in place of the process's (no background flusher)."""
    private = Recorder()
    monkeypatch.setattr("inference.telemetry.recorder.recorder", private)
    return private


@pytest.fixture
def shifted_cards(settings: Any) -> Iterator[str]:
    """Cards whose stored average amount is about three times the reference's."""
    if not settings.REDIS_URL:
        pytest.skip("needs Redis (set REDIS_URL)")
    rng = np.random.default_rng(3)
    name = f"cards-{uuid.uuid4().hex[:8]}"
    rows = [
        {
            "card_id": k,
            "avg_amount": float(rng.normal(900, 60)),
            "tx_count": float(rng.uniform(1, 40)),
            "country_risk": 0.2,
        }
        for k in range(N_CARDS)
    ]
    features.features_load(feature_set=name, key="card_id", rows=rows)
    yield name
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    keys = list(client.scan_iter(f"{features.PREFIX}{name}:*"))
    if keys:
        client.delete(*keys)


def test_a_model_steps_drift_is_computed_on_the_features_it_received(
    client: Any, engineer: Any, fraud_versions: Any, shifted_cards: str, recorder: Recorder, settings: Any
) -> None:
    rng = np.random.default_rng(11)
    for version in (1, 2):  # the reference: average amounts around 300
        drift.reference_stats_set(
            model="fraud",
            version=version,
            features=model_view(rng.uniform(10, 1000, 4000), rng.normal(300, 60, 4000), rng.uniform(1, 40, 4000)),
            source="upload",
            user=None,
        )
    # The pipeline is named like its model ("fraud" version 1 serves "fraud:1" too).
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec(shifted_cards, 0.5), user=engineer)
    endpoint = endpoints.endpoint_create(name="fraud-drift", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    MonitoringSettings.objects.update_or_create(endpoint=endpoint, defaults={"drift_sample_rate": 1.0})
    flusher = Flusher(recorder, redis_url=settings.REDIS_URL, interval_s=0)
    flusher.refresh_config()  # the endpoint's drift sample rate, as the flusher's thread reads it

    for i in range(90):  # 4 rows each, flushed every 30 (the reservoir keeps 32 per flush)
        if i % 30 == 0:
            flusher.flush()
        body = {
            "inputs": {"card_id": rng.integers(0, N_CARDS, 4).tolist(), "amount": rng.uniform(10, 1000, 4).tolist()}
        }
        response = client.post(
            "/api/v1/endpoints/fraud-drift/predict", orjson.dumps(body), content_type="application/json"
        )
        assert response.status_code == 200, response.content
    flusher.flush()
    rollups.rollup_minutes(now=later(5))
    drift.drift_compute(now=later(5), window_minutes=30)

    scores = {
        (s.deployment, s.feature): s
        for s in DriftScore.objects.filter(endpoint="fraud-drift", kind=DriftScore.Kind.INPUT)
    }
    for label in ("fraud:1", "fraud:2"):  # both ensemble members saw the looked-up, scaled features
        assert scores[(label, "x[1]")].psi > 0.25, scores  # the store's average amount moved
        assert scores[(label, "x[1]")].ks_p_value < 1e-6
        assert scores[(label, "x[0]")].psi < 0.25  # the request's amount did not
        assert scores[(label, "x[0]")].n >= 200
    # The samples are the model's inputs, not the request's (entity keys, raw amounts).
    sampled = set().union(*InputSample.objects.filter(endpoint="fraud-drift").values_list("features", flat=True))
    assert sampled == {"x[0]", "x[1]", "x[2]", "x[3]"}


def test_nothing_is_kept_when_the_endpoint_samples_no_drift(
    client: Any, engineer: Any, fraud_versions: Any, shifted_cards: str, recorder: Recorder, settings: Any
) -> None:
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec(shifted_cards, 0.5), user=engineer)
    endpoint = endpoints.endpoint_create(name="fraud-quiet", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    MonitoringSettings.objects.update_or_create(endpoint=endpoint, defaults={"drift_sample_rate": 0.0})
    Flusher(recorder, redis_url=settings.REDIS_URL, interval_s=0).refresh_config()
    body = {"inputs": {"card_id": [1, 2], "amount": [10.0, 20.0]}}
    for _ in range(5):
        response = client.post(
            "/api/v1/endpoints/fraud-quiet/predict", orjson.dumps(body), content_type="application/json"
        )
        assert response.status_code == 200, response.content
    assert recorder.drain_step_inputs() == {}


def test_a_pipeline_named_like_its_model_keeps_its_own_output_series(
    client: Any, engineer: Any, fraud_versions: Any, recorder: Recorder, settings: Any
) -> None:
    """Pipeline "fraud" version 1 and model "fraud" version 1 would both be "fraud:1": the
    pipeline's answers (its outputs, named like the model's) would be counted in the model
    version's series and scored against its reference as its output drift."""
    rng = np.random.default_rng(5)
    drift.reference_stats_set(  # the model's reference: its "label" output all class 1
        model="fraud",
        version=1,
        features={f"x[{j}]": rng.normal(0, 1, 500) for j in range(4)},
        outputs={"label": {"kind": "class", "counts": {"1": 500}}},
        source="upload",
        user=None,
    )
    spec = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": ["label"],
        "steps": [{"name": "score", "kind": "model", "model": "fraud", "version": 1}],
    }
    pipeline_services.pipeline_create(name="fraud", spec=spec, user=engineer)
    endpoint = endpoints.endpoint_create(name="fraud-labels", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    flusher = Flusher(recorder, redis_url=settings.REDIS_URL, interval_s=0)
    for _ in range(10):
        body = {"inputs": {"x": rng.normal(0, 1, (8, 4)).astype(np.float32).tolist()}}
        response = client.post(
            "/api/v1/endpoints/fraud-labels/predict", orjson.dumps(body), content_type="application/json"
        )
        assert response.status_code == 200, response.content
    flusher.flush()
    rollups.rollup_minutes(now=later(5))
    drift.drift_compute(now=later(5), window_minutes=30)

    series = set(MetricRollup.objects.filter(endpoint="fraud-labels").values_list("deployment", flat=True))
    assert series == {"pipeline:fraud:1"}  # the pipeline's own series, not the model version's
    outputs = DriftScore.objects.filter(endpoint="fraud-labels", kind=DriftScore.Kind.OUTPUT)
    assert not outputs.filter(deployment="fraud:1").exists()  # nothing scored against the model's reference
