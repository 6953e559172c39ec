"""`endpoint_window_stats`: one window over rolled-up minutes and the live ones still in Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from config.errors import DomainError
from inference.telemetry.recorder import LATENCY_BUCKETS_MS
from monitoring import alerts, keys, rollups
from monitoring.models import AlertEvent, MetricRollup
from monitoring.selectors import endpoint_window_stats, window_minutes
from tests.monitoring.conftest import make_endpoint, rec

pytestmark = pytest.mark.django_db


def rolled_up(
    minute: datetime, *, count: int, errors: int = 0, deployment: str = "iris:1", role: str = "primary"
) -> None:
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[3] = count  # (2, 5] ms
    MetricRollup.objects.create(
        endpoint="iris",
        deployment=deployment,
        role=role,
        minute=minute.replace(second=0, microsecond=0),
        count=count,
        rows=count,
        error_count=errors,
        errors={"internal": errors} if errors else {},
        latency_buckets=buckets,
        latency_sum_ms=4.0 * count,
        batch_rows_sum=8 * count,
        batch_count=count,
        queue_ms_sum=0.5 * count,
        model_ms_sum=1.5 * count,
    )


def test_window_covers_every_minute_overlapping_it() -> None:
    at = datetime(2026, 1, 1, 12, 0, 20, tzinfo=UTC)
    first, last = window_minutes(60, at)
    assert (first * 60, last * 60) == (at.timestamp() - 80, at.timestamp() - 20)  # 11:59 and 12:00
    on_the_minute = at.replace(second=0)
    first, last = window_minutes(300, on_the_minute)  # exactly the five whole minutes before
    assert last * 60 == on_the_minute.timestamp() - 60 and last - first == 4


def test_rolled_up_and_live_minutes_add_up_without_double_counting(
    recorder: Any, redis_flusher: Any, redis_client: Any
) -> None:
    now = timezone.now()
    rolled_up(now - timedelta(minutes=2), count=100, errors=10)
    rolled_up(now - timedelta(minutes=20), count=1000, errors=1000)  # outside a 5-minute window
    for _ in range(30):
        recorder.record(rec(3.0, batch_rows=4, queue_ms=0.25, model_ms=1.0))
    for _ in range(20):
        recorder.record(rec(3.0, ok=False, error_kind="invalid_input"))
    recorder.record(rec(3.0, deployment="iris:2", role="shadow", ok=False, error_kind="internal"))
    redis_flusher.flush()  # live: in Redis, not rolled up

    stats = endpoint_window_stats("iris", window_s=300, now=timezone.now())
    assert stats["live_minutes"] == 2 and stats["live_error"] is None
    assert stats["count"] == 150  # shadow traffic is not the endpoint's
    assert stats["errors"] == {"internal": 10, "invalid_input": 20}
    assert stats["error_rate"] == pytest.approx(30 / 150)
    assert 2 < stats["p99_ms"] <= 5
    # Batch size, queue and model time are means over the calls that reported them.
    assert stats["batch_size"] == pytest.approx((100 * 8 + 30 * 4) / 130)
    assert stats["model_ms"] == pytest.approx((150 + 30) / 150)
    shadow = stats["versions"]["iris:2"]
    assert (shadow["role"], shadow["count"], shadow["error_rate"]) == ("shadow", 1, 1.0)
    assert stats["versions"]["iris:1"]["count"] == 150
    assert endpoint_window_stats("iris", "iris:2", window_s=300)["count"] == 1
    assert endpoint_window_stats("iris", window_s=300, include_shadow=True)["count"] == 151

    # A minute both rolled up and still in Redis (the roll-up committed, its delete not yet
    # done) counts once: Redis holds the same or a newer count.
    minute_keys = [k.decode() for k in redis_client.zrange(keys.MINUTES_INDEX, 0, -1)]
    raw = {k: redis_client.hgetall(k) for k in minute_keys}
    rollups.rollup_minutes(now=timezone.now() + timedelta(minutes=5))
    for key, fields in raw.items():
        redis_client.hset(key, mapping=fields)
        redis_client.zadd(keys.MINUTES_INDEX, {key: keys.parse_minute_key(key)[0]})
    again = endpoint_window_stats("iris", window_s=300, now=now + timedelta(seconds=1))
    assert again["count"] == 150 and again["live_minutes"] == 2


def test_the_embedded_default_reads_the_database_the_flusher_writes(recorder: Any, db_flusher: Any) -> None:
    for _ in range(4):
        recorder.record(rec(3.0, ok=False, error_kind="internal"))
    recorder.record(rec(3.0))
    db_flusher.flush()
    stats = endpoint_window_stats("iris", window_s=60)
    assert (stats["count"], stats["error_rate"], stats["live_minutes"]) == (5, 0.8, 0)


def test_redis_away_answers_from_the_database_and_says_so(settings: Any) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    rolled_up(timezone.now() - timedelta(minutes=1), count=10)
    stats = endpoint_window_stats("iris", window_s=300)
    assert stats["count"] == 10 and "live minutes unavailable" in stats["live_error"]


@pytest.mark.parametrize("window_s", [0, 30, 59, 8 * 24 * 3600, 90.5, True])
def test_a_window_the_platform_cannot_honour_is_refused(window_s: Any) -> None:
    with pytest.raises(DomainError, match="window_s must be a whole number of seconds from 60"):
        endpoint_window_stats("iris", window_s=window_s)


def test_a_one_minute_rule_fires_on_the_live_minute(recorder: Any, redis_flusher: Any) -> None:
    make_endpoint()
    rule = alerts.alert_rule_create(
        endpoint_name="iris",
        values={"metric": "error_rate", "comparison": ">", "threshold": 0.2, "window_minutes": 1},
        user=None,
    )
    for i in range(300):
        recorder.record(rec(3.0, ok=i >= 200, error_kind=None if i >= 200 else "internal"))
    redis_flusher.flush()  # in Redis only: beat has not rolled it up
    assert not MetricRollup.objects.exists()
    assert len(alerts.alerts_evaluate()) == 1
    rule.refresh_from_db()
    assert rule.state == "firing" and rule.last_value == pytest.approx(200 / 300)
    assert AlertEvent.objects.get().kind == "firing"


def test_rule_windows_the_platform_cannot_evaluate_are_a_400(api: Any, settings: Any) -> None:
    make_endpoint()
    settings.MONITORING_MINUTE_RETENTION_DAYS = 1
    too_long = api.post(
        "/api/v1/alerts/rules/",
        {"endpoint": "iris", "metric": "error_rate", "threshold": 0.2, "window_minutes": 24 * 60 + 1},
        format="json",
    )
    assert too_long.status_code == 400, too_long.content
    assert too_long.json()["error"]["details"] == {"field": "window_minutes", "min": 1, "max": 1440}
    # Drift is scored every 5 minutes by the beat schedule: a 1-minute drift window would
    # see a score only now and then.
    drift = api.post(
        "/api/v1/alerts/rules/",
        {"endpoint": "iris", "metric": "drift_score", "threshold": 0.2, "window_minutes": 1},
        format="json",
    )
    assert drift.status_code == 400 and "from 5 to" in drift.json()["error"]["message"]
    one_minute = api.post(
        "/api/v1/alerts/rules/",
        {"endpoint": "iris", "metric": "error_rate", "threshold": 0.2, "window_minutes": 1},
        format="json",
    )
    assert one_minute.status_code == 201


def test_the_window_api_answers_the_selector_and_refuses_windows_it_cannot_honour(
    api: Any, recorder: Any, redis_flusher: Any
) -> None:
    make_endpoint()
    for i in range(10):
        recorder.record(rec(3.0, ok=i < 8, error_kind=None if i < 8 else "internal"))
    redis_flusher.flush()
    body = api.get("/api/v1/endpoints/iris/metrics/window?window_s=60").json()
    assert (body["count"], body["error_rate"], body["live_minutes"]) == (10, 0.2, 1)
    assert api.get("/api/v1/endpoints/iris/metrics/window?version=iris:9").json()["count"] == 0
    short = api.get("/api/v1/endpoints/iris/metrics/window?window_s=30")
    assert short.status_code == 400 and short.json()["error"]["details"]["field"] == "window_s"
    assert api.get("/api/v1/endpoints/iris/metrics/window?window_s=abc").status_code == 400
    assert api.get("/api/v1/endpoints/nope/metrics/window").status_code == 404
