"""The dashboard's reads: per-version series from pre-aggregated rows, as plain values and JSON."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from inference.models import Endpoint
from monitoring.models import DriftScore, MetricRollup
from monitoring.selectors import endpoint_timeseries

pytestmark = pytest.mark.django_db


def rows(start: Any) -> None:
    for m in range(4):
        buckets = [0] * 15
        buckets[4] = 60  # (5, 10] ms
        MetricRollup.objects.create(
            endpoint="iris",
            deployment="iris:1",
            role="primary",
            minute=start + timedelta(minutes=m),
            count=60,
            error_count=6 if m == 0 else 0,
            errors={"internal": 6} if m == 0 else {},
            latency_buckets=buckets,
            batch_rows_sum=240,
            batch_count=60,
            queue_ms_sum=30.0,
            model_ms_sum=120.0,
            outputs={"label": {"kind": "class", "counts": {"0": 40, "1": 20}}},
        )
    MetricRollup.objects.create(
        endpoint="iris", deployment="iris:2", role="canary", minute=start, count=6, latency_buckets=[0] * 15
    )
    DriftScore.objects.create(
        endpoint="iris",
        deployment="iris:1",
        feature="x[0]",
        window_end=start + timedelta(minutes=2),
        window_minutes=60,
        psi=0.3,
        ks_statistic=0.4,
        ks_p_value=0.001,
    )


def test_series_per_version_with_rates_percentiles_outputs_and_drift() -> None:
    start = (timezone.now() - timedelta(minutes=30)).replace(second=0, microsecond=0)
    rows(start)
    data = endpoint_timeseries("iris", start, start + timedelta(minutes=4), 120)
    json.dumps(data)  # plain values only
    v1 = data["versions"]["iris:1"]
    assert len(v1["t"]) == 3 and v1["requests"][:2] == [120, 120]
    assert v1["rps"][0] == 1.0 and v1["error_rate"][0] == 0.05 and v1["error_rate"][1] == 0.0
    assert v1["p50_ms"][0] == 7.5 and v1["batch_size"][0] == 4.0 and v1["model_ms"][0] == 2.0
    assert v1["requests"][2] == 0 and v1["p99_ms"][2] is None
    assert v1["outputs"]["label"]["counts"] == {"0": 160, "1": 80}
    assert v1["drift"]["x[0]"]["psi"] == [0.3]
    assert data["versions"]["iris:2"]["role"] == "canary"


def test_the_metrics_api_answers_json_and_refuses_bad_parameters(api: Any) -> None:
    Endpoint.objects.create(name="iris")  # the API answers for endpoints the caller may see
    start = (timezone.now() - timedelta(minutes=30)).replace(second=0, microsecond=0)
    rows(start)
    ok = api.get("/api/v1/endpoints/iris/metrics", {"since": start.isoformat(), "step": 60})
    assert ok.status_code == 200 and ok.json()["versions"]["iris:1"]["requests"][0] == 60
    assert api.get("/api/v1/endpoints/iris/metrics", {"step": 45}).status_code == 400
    assert api.get("/api/v1/endpoints/iris/metrics", {"step": "fast"}).status_code == 400
    assert api.get("/api/v1/endpoints/iris/metrics", {"since": "last tuesday"}).status_code == 400
    assert api.get("/api/v1/endpoints/iris/metrics", {"since": "2020-01-01T00:00:00Z"}).status_code == 400
    later = (start + timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/endpoints/iris/metrics", {"since": later, "until": start.isoformat()}).status_code == 400
