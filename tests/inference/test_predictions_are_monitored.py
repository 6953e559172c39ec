"""Predictions sent over HTTP to the prediction API are counted, rolled up and charted."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from inference.telemetry.recorder import recorder
from monitoring import rollups
from monitoring.flusher import flush_now
from tests.conftest import client_for
from tests.inference.conftest import ROWS, auth
from tests.monitoring.conftest import later, redis_client  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_client")]


def test_http_predictions_show_up_in_the_endpoint_metrics(client: Any, app_key: str, engineer: Any) -> None:
    recorder.drain()  # counts left in this process by earlier tests
    path = "/api/v1/endpoints/iris/predict"
    for _ in range(12):
        ok = client.post(path, orjson.dumps({"instances": ROWS}), content_type="application/json", **auth(app_key))
        assert ok.status_code == 200, ok.content
    bad = client.post(path, orjson.dumps({"instances": [[1.0, 2.0]]}), content_type="application/json", **auth(app_key))
    assert bad.status_code == 400

    flush_now()
    rollups.rollup_minutes(now=later())
    body = client_for(engineer).get("/api/v1/endpoints/iris/metrics?step=60").json()

    series = body["versions"]["iris:1"]
    assert sum(series["requests"]) == 13
    assert sum(sum((kinds or {}).values()) for kinds in series["errors"]) == 1  # by kind, per bucket
    assert series["role"] == "primary"
    assert any(p is not None and p > 0 for p in series["p99_ms"])
    assert sum(series["outputs"]["label"]["counts"].values()) == 24  # 12 requests x 2 rows


def test_counting_can_be_switched_off_to_measure_its_cost(client: Any, app_key: str, engineer: Any) -> None:
    recorder.drain()
    recorder.enabled = False
    try:
        ok = client.post(
            "/api/v1/endpoints/iris/predict",
            orjson.dumps({"instances": ROWS}),
            content_type="application/json",
            **auth(app_key),
        )
        assert ok.status_code == 200
        assert recorder.drain() == {}
    finally:
        recorder.enabled = True


@pytest.mark.parametrize("max_batch_size", [1, 8])
def test_in_process_predictions_record_batch_size_queue_and_model_time(
    client: Any, engineer: Any, make_endpoint: Any, iris_v1: Any, max_batch_size: int
) -> None:
    """Both in-process paths (the batcher, and direct calls when max_batch_size is 1) say
    how each request ran, so the batch-size and model-time charts are not empty."""
    from inference import api_keys

    endpoint = make_endpoint(
        "iris",
        [{"model": "iris", "version": 1, "role": "primary", "weight": 100, "max_batch_size": max_batch_size}],
    )
    _, key = api_keys.api_key_create(name="app", endpoints=[endpoint], user=engineer)
    recorder.drain()
    for _ in range(5):
        ok = client.post(
            "/api/v1/endpoints/iris/predict",
            orjson.dumps({"instances": ROWS}),
            content_type="application/json",
            **auth(key),
        )
        assert ok.status_code == 200, ok.content
    (stats,) = recorder.drain().values()
    assert stats.batch_count == 5 and stats.batch_rows_sum >= 5 * len(ROWS)  # every request, >= its own rows
    assert stats.model_ms_sum > 0 and stats.queue_ms_sum >= 0
    if max_batch_size == 1:
        assert stats.queue_ms_sum == 0 and stats.batch_rows_sum == 5 * len(ROWS)


def test_a_keys_last_use_is_written_by_the_flusher_not_per_request(
    client: Any, app_key: str, engineer: Any, settings: Any
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from inference.models import ApiKey
    from monitoring.flusher import Flusher

    recorder.drain()
    recorder.drain_keys_used()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            ok = client.post(
                "/api/v1/endpoints/iris/predict",
                orjson.dumps({"instances": ROWS}),
                content_type="application/json",
                **auth(app_key),
            )
            assert ok.status_code == 200
    assert not [q for q in queries.captured_queries if "UPDATE" in q["sql"]]
    key = ApiKey.objects.get(name="app")
    assert key.last_used_at is None

    Flusher(recorder, redis_url=settings.REDIS_URL, interval_s=0).flush()
    key.refresh_from_db()
    assert key.last_used_at is not None
    client.force_login(engineer)  # the endpoint page shows it instead of "never"
    row = client.get("/endpoints/iris/").content.decode().split(key.prefix, 1)[1].split("</tr>", 1)[0]
    assert "never" not in row and key.last_used_at.strftime("%Y-%m-%d") in row
