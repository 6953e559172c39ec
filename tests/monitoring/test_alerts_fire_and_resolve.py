"""An alert rule fires when its metric crosses the threshold and resolves when it comes back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from inference.telemetry.recorder import LATENCY_BUCKETS_MS
from monitoring import alerts
from monitoring.models import AlertEvent, AlertRule, DriftScore, MetricRollup
from monitoring.tasks import evaluate_alerts
from tests.monitoring.conftest import make_endpoint

pytestmark = pytest.mark.django_db


def minute(now: Any, minutes_ago: int, *, count: int, errors: int = 0, slow: int = 0, role: str = "primary") -> None:
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[2] = count - slow  # (1, 2] ms
    buckets[9] = slow  # (200, 500] ms
    MetricRollup.objects.update_or_create(
        endpoint="iris",
        deployment="iris:1",
        role=role,
        granularity="minute",
        minute=(now - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0),
        defaults={
            "count": count,
            "error_count": errors,
            "errors": {"internal": errors} if errors else {},
            "latency_buckets": buckets,
            "outputs": {"score": {"kind": "float", "n": count, "sum": 0.9 * count}},
        },
    )


def rule(**fields: Any) -> AlertRule:
    values = {"metric": "error_rate", "comparison": ">", "threshold": 0.1, "window_minutes": 5, **fields}
    return alerts.alert_rule_create(endpoint_name="iris", values=values, user=None)


def test_error_rate_fires_once_then_resolves() -> None:
    make_endpoint()
    now = timezone.now()
    r = rule()
    for ago in (1, 2, 3):
        minute(now, ago, count=100, errors=30)
    assert len(alerts.alerts_evaluate(now=now)) == 1
    assert len(alerts.alerts_evaluate(now=now + timedelta(seconds=30))) == 0  # de-duplicated while firing
    r.refresh_from_db()
    assert r.state == "firing" and r.last_value == pytest.approx(0.3)
    for ago in (1, 2, 3):
        minute(now, ago, count=100, errors=0)
    alerts.alerts_evaluate(now=now + timedelta(seconds=60))
    kinds = list(AlertEvent.objects.order_by("id").values_list("kind", "value"))
    assert kinds == [("firing", pytest.approx(0.3)), ("resolved", 0.0)]
    assert AlertEvent.objects.first().notification == "not_needed"  # dashboard channel


def test_cooldown_holds_back_a_second_firing() -> None:
    make_endpoint()
    now = timezone.now()
    rule(cooldown_minutes=30)
    minute(now, 1, count=100, errors=50)
    alerts.alerts_evaluate(now=now)
    minute(now, 1, count=100, errors=0)
    alerts.alerts_evaluate(now=now + timedelta(minutes=1))
    minute(now, 1, count=100, errors=50)
    assert alerts.alerts_evaluate(now=now + timedelta(minutes=2)) == []
    assert AlertRule.objects.get().state == "ok"
    # After the cool-down, it may fire again.
    minute(now + timedelta(minutes=31), 1, count=100, errors=50)
    assert len(alerts.alerts_evaluate(now=now + timedelta(minutes=31))) == 1


def test_each_metric_computes_its_value() -> None:
    make_endpoint()
    now = timezone.now()
    for ago in (1, 2):
        minute(now, ago, count=100, slow=5)
    minute(now, 7, count=400)  # the window before: throughput fell from 400 to 200
    p99 = rule(metric="p99_latency_ms", threshold=100)
    drop = rule(metric="throughput_drop", threshold=0.4)
    mean = rule(metric="output_mean", threshold=0.5)
    silent = rule(metric="no_traffic", comparison="<", threshold=1, deployment="iris:9")  # never served
    DriftScore.objects.create(
        endpoint="iris", deployment="iris:1", feature="x[0]", window_end=now, window_minutes=60, psi=0.4
    )
    drift = rule(metric="drift_score", threshold=0.25)
    evaluate_alerts()  # the task, at the real now
    values = {r.metric: r.last_value for r in AlertRule.objects.all()}
    assert values["no_traffic"] == 0.0
    assert 200 < values["p99_latency_ms"] <= 500
    assert values["throughput_drop"] == pytest.approx(0.5)
    assert values["output_mean"] == pytest.approx(0.9)
    assert values["drift_score"] == pytest.approx(0.4)
    firing = set(AlertRule.objects.filter(state="firing").values_list("pk", flat=True))
    assert {p99.pk, drop.pk, mean.pk, drift.pk, silent.pk} <= firing


def test_no_data_does_not_resolve_or_fire() -> None:
    make_endpoint()
    now = timezone.now()
    rule()
    assert alerts.alerts_evaluate(now=now) == []
    assert AlertRule.objects.get().last_value is None


def test_shadow_traffic_is_not_counted_for_the_endpoint() -> None:
    make_endpoint()
    now = timezone.now()
    rule()
    minute(now, 1, count=100, errors=90, role="shadow")
    assert alerts.alerts_evaluate(now=now) == []


def test_one_broken_rule_does_not_stop_the_others() -> None:
    make_endpoint()
    now = timezone.now()
    broken = rule()
    good = rule()
    AlertRule.objects.filter(pk=broken.pk).update(comparison="!!")  # corrupt row: KeyError in evaluation
    minute(now, 1, count=100, errors=50)
    events = alerts.alerts_evaluate(now=now)
    assert [AlertEvent.objects.get(pk=e).rule_id for e in events] == [good.pk]
