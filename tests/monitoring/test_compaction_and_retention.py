"""Old minutes fold into hour rows (once), and what is past retention is deleted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from monitoring import rollups
from monitoring.models import InputSample, MetricRollup, PayloadSample
from monitoring.stats import latency_percentiles

pytestmark = pytest.mark.django_db


def minute_row(at: Any, count: int, bucket: int = 3) -> None:
    buckets = [0] * 15
    buckets[bucket] = count
    MetricRollup.objects.create(
        endpoint="iris",
        deployment="iris:1",
        role="primary",
        minute=at,
        count=count,
        error_count=1,
        errors={"internal": 1},
        latency_buckets=buckets,
        outputs={"label": {"kind": "class", "counts": {"1": count}}},
    )


def test_old_minutes_become_one_hour_row_and_a_rerun_changes_nothing(settings: Any) -> None:
    settings.MONITORING_MINUTE_RETENTION_DAYS = 7
    now = timezone.now()
    old_hour = (now - timedelta(days=8)).replace(minute=0, second=0, microsecond=0)
    for m in range(3):
        minute_row(old_hour + timedelta(minutes=m), 10)
    minute_row(old_hour + timedelta(minutes=5), 20, bucket=8)
    minute_row(now - timedelta(minutes=3), 5)  # recent: stays a minute
    result = rollups.compact_rollups(now=now)
    assert result["folded_minutes"] == 4
    hour = MetricRollup.objects.get(granularity="hour")
    assert hour.minute == old_hour and hour.count == 50 and hour.errors == {"internal": 4}
    assert hour.outputs["label"]["counts"] == {"1": 50}
    assert latency_percentiles(hour.latency_buckets)["p99"] > 50
    assert MetricRollup.objects.filter(granularity="minute").count() == 1
    assert rollups.compact_rollups(now=now)["folded_minutes"] == 0
    assert MetricRollup.objects.get(granularity="hour").count == 50


def test_hours_samples_and_inputs_past_retention_are_deleted(settings: Any) -> None:
    settings.MONITORING_HOUR_RETENTION_DAYS = 30
    settings.MONITORING_SAMPLE_RETENTION_DAYS = 3
    now = timezone.now()
    MetricRollup.objects.create(
        endpoint="iris",
        deployment="iris:1",
        role="primary",
        granularity="hour",
        minute=now - timedelta(days=40),
        count=1,
    )
    MetricRollup.objects.create(
        endpoint="iris",
        deployment="iris:1",
        role="primary",
        granularity="hour",
        minute=now - timedelta(days=20),
        count=1,
    )
    InputSample.objects.create(endpoint="iris", deployment="iris:1", minute=now - timedelta(days=9), features={})
    PayloadSample.objects.create(
        sample_id="a", endpoint="iris", deployment="iris:1", role="primary", at=now - timedelta(days=4)
    )
    PayloadSample.objects.create(sample_id="b", endpoint="iris", deployment="iris:1", role="primary", at=now)
    result = rollups.compact_rollups(now=now)
    assert result["deleted_hours"] == 1 and result["deleted_inputs"] == 1 and result["deleted_samples"] == 1
    assert list(PayloadSample.objects.values_list("sample_id", flat=True)) == ["b"]
