"""Shadow comparisons travel the monitoring pipeline like request counts: recorded in the
process that ran the shadow, flushed to Redis (or, on the embedded default, straight to
the database), rolled up into MetricRollup, and read back through the one window selector
from any process."""

from __future__ import annotations

from typing import Any

import pytest

from monitoring import rollups
from monitoring.models import MetricRollup
from monitoring.selectors import endpoint_window_stats
from tests.monitoring.conftest import later, rec

pytestmark = pytest.mark.django_db


def feed(recorder: Any) -> None:
    for i in range(40):
        recorder.record(rec(2.0, deployment="iris:2", role="shadow", agreed=i % 4 != 0))  # 30 of 40 agree
    recorder.record(rec(2.0, deployment="iris:2", role="shadow", ok=False, error_kind="timeout"))  # not compared
    recorder.record(rec(1.0))  # the primary's answer: nothing compared


def test_shadow_agreement_reaches_the_live_window_and_the_rolled_up_minutes_with_redis(
    recorder: Any, redis_flusher: Any
) -> None:
    feed(recorder)
    assert redis_flusher.flush() == 42
    live = endpoint_window_stats("iris", window_s=120)
    assert live["live_minutes"] >= 1 and not MetricRollup.objects.exists()
    shadow = live["versions"]["iris:2"]
    assert (shadow["count"], shadow["shadow_compared"], shadow["shadow_agreed"]) == (41, 40, 30)
    assert shadow["shadow_agreement"] == 0.75
    assert live["versions"]["iris:1"]["shadow_agreement"] is None
    assert rollups.rollup_minutes(now=later()) == 2
    row = MetricRollup.objects.get(deployment="iris:2")
    assert (row.shadow_compared, row.shadow_agreed) == (40, 30)
    assert endpoint_window_stats("iris", "iris:2", window_s=120)["shadow_agreement"] == 0.75


def test_shadow_agreement_reaches_the_database_on_the_embedded_default(
    recorder: Any, db_flusher: Any, settings: Any
) -> None:
    settings.REDIS_URL = ""
    feed(recorder)
    db_flusher.flush()
    feed(recorder)  # a second flush into the same minute adds up
    db_flusher.flush()
    row = MetricRollup.objects.get(deployment="iris:2")
    assert (row.shadow_compared, row.shadow_agreed) == (80, 60)
    window = endpoint_window_stats("iris", "iris:2", window_s=120)
    assert (window["shadow_compared"], window["shadow_agreement"], window["live_error"]) == (80, 0.75, None)
