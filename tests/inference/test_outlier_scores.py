"""Outlier scores: an endpoint with outlier_scoring scores each request against the serving
version's reference statistics, answers the scores when asked, and counts outliers in the
roll-ups, /metrics, the window statistics and an `outlier_rate` alert."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from django.utils import timezone

from inference import api_keys
from inference.runtime.outliers import chi2_quantile, scorer_from_reference
from inference.runtime.signature import Signature
from monitoring import alerts, drift, rollups
from monitoring.flusher import flush_now
from monitoring.models import AlertRule, MetricRollup
from monitoring.selectors import endpoint_window_stats
from tests import onnx_models
from tests.inference.conftest import auth, version_add
from tests.monitoring.conftest import later, no_live_minutes_from_other_tests

pytestmark = pytest.mark.django_db

RNG = np.random.default_rng(11)
# Three correlated features: x1 follows x0, x2 is independent.
COV = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 4.0]])
MEAN = np.array([10.0, 10.0, -3.0])


def reference_rows(n: int) -> np.ndarray:
    return RNG.multivariate_normal(MEAN, COV, size=n)


@pytest.fixture
def scored(make_endpoint: Callable[..., Any], engineer: Any) -> str:
    """Endpoint "guard" serving a 3-feature linear model with outlier scoring on, its
    reference 1,500 rows of the distribution above; returns an app key."""
    version_add("guard", onnx_models.linear(np.ones((3, 1)), np.zeros(1)), engineer)
    endpoint = make_endpoint(
        "guard", [{"model": "guard", "version": 1, "role": "primary", "weight": 100}], outlier_scoring=True
    )
    reference = reference_rows(1500)
    drift.reference_stats_set(
        model="guard",
        version=1,
        features={f"x[{j}]": reference[:, j] for j in range(3)},
        source="upload",
        user=engineer,
    )
    _, key = api_keys.api_key_create(name="app", endpoints=[endpoint], user=engineer)
    return key


def predict(client: Any, key: str, rows: np.ndarray, query: str = "?outlier=1") -> Any:
    body = orjson.dumps({"instances": rows.astype(np.float32).tolist()})
    response = client.post(
        f"/api/v1/endpoints/guard/predict{query}", body, content_type="application/json", **auth(key)
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_shifted_traffic_separates_from_reference_traffic(client: Any, scored: str) -> None:
    normal = np.concatenate([predict(client, scored, reference_rows(50))["outliers"] for _ in range(4)])
    shifted_rows = reference_rows(200) + np.array([0.0, 0.0, 12.0])  # x2 moved by 6 sigma
    shifted = np.concatenate([predict(client, scored, shifted_rows[i : i + 50])["outliers"] for i in range(0, 200, 50)])
    normal_rate = np.mean([r["outlier"] for r in normal])
    shifted_rate = np.mean([r["outlier"] for r in shifted])
    assert normal_rate <= 0.02 and shifted_rate >= 0.9, (normal_rate, shifted_rate)
    assert all(r["feature"] == "x[2]" for r in shifted if r["outlier"])
    # Mahalanobis sees what no single feature shows: x1 against x0's correlation.
    broken = np.array([[11.5, 8.5, -3.0]])  # each value within 1.5 sigma of its median
    row = predict(client, scored, broken)["outliers"][0]
    assert row["max_abs_z"] < 2.0 and row["mahalanobis"] > np.sqrt(chi2_quantile(3)) and row["outlier"]


@pytest.fixture
def no_live_minutes(settings: Any) -> None:
    """Start without what earlier tests recorded: flushed, then removed from Redis."""
    flush_now()
    no_live_minutes_from_other_tests.__wrapped__(settings)  # type: ignore[attr-defined]


def test_outliers_are_counted_charted_exposed_and_alerted(
    client: Any, scored: str, engineer: Any, no_live_minutes: None
) -> None:
    predict(client, scored, reference_rows(40), query="")  # not asked: answered without scores
    shifted = reference_rows(60) + np.array([0.0, 0.0, 12.0])
    assert "outliers" not in predict(client, scored, shifted, query="")
    flush_now()
    window = endpoint_window_stats("guard", window_s=300)
    assert window["scored_rows"] == 100 and 0.55 <= window["outlier_rate"] <= 0.65
    metrics = client.get("/metrics").content.decode()
    assert 'modelhub_outlier_scored_rows_total{endpoint="guard",version="guard:1",role="primary"} 100' in metrics
    assert 'modelhub_outlier_rows_total{endpoint="guard",version="guard:1",role="primary"}' in metrics
    rule = alerts.alert_rule_create(
        endpoint_name="guard",
        values={"metric": "outlier_rate", "comparison": ">", "threshold": 0.2, "window_minutes": 5},
        user=engineer,
    )
    alerts.alerts_evaluate(now=timezone.now())
    rule.refresh_from_db()
    assert rule.state == AlertRule.State.FIRING and 0.55 <= rule.last_value <= 0.65
    rollups.rollup_minutes(now=later())
    rows = MetricRollup.objects.filter(endpoint="guard")
    assert sum(r.scored_rows for r in rows) == 100 and 55 <= sum(r.outlier_rows for r in rows) <= 65


def test_an_endpoint_without_scoring_counts_nothing(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    version_add("plain", onnx_models.linear(np.ones((3, 1)), np.zeros(1)), engineer)
    endpoint = make_endpoint("plain", [{"model": "plain", "version": 1, "role": "primary", "weight": 100}])
    _, key = api_keys.api_key_create(name="app", endpoints=[endpoint], user=engineer)
    response = client.post(
        "/api/v1/endpoints/plain/predict?outlier=1",
        orjson.dumps({"instances": [[1.0, 2.0, 3.0]]}),
        content_type="application/json",
        **auth(key),
    )
    assert response.json()["outliers"] is None


def test_v2_answers_the_scores_in_its_parameters(client: Any, scored: str) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [10.0, 10.0, 30.0]}]}
    response = client.post(
        "/v2/models/guard/infer?outlier=1", orjson.dumps(body), content_type="application/json", **auth(scored)
    )
    assert response.status_code == 200, response.content
    [row] = response.json()["parameters"]["outliers"]
    assert row["outlier"] and row["feature"] == "x[2]"


def test_a_reference_without_a_stored_covariance_still_scores() -> None:
    """References stored before covariances were: computed from the whole-column samples."""
    rows = reference_rows(500)
    features = {f"x[{j}]": {"sample": rows[:, j].tolist(), "n": 500, "mean": 0.0, "std": 1.0} for j in range(3)}
    signature = Signature.from_dict({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}], "outputs": []})
    scorer = scorer_from_reference({"features": features}, signature.inputs)
    assert scorer is not None
    scores = scorer.score({"x": np.array([[11.5, 8.5, -3.0], [10.0, 10.0, -3.0]])})
    assert scores.outlier.tolist() == [True, False]
