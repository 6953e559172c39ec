"""Monitoring charts and alert rules from the browser, over pre-aggregated roll-ups."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from inference.models import Endpoint

pytestmark = pytest.mark.django_db


@pytest.fixture
def flowers(engineer):
    return Endpoint.objects.create(name="flowers", owner=engineer)


def rollups(endpoint: str, deployment: str, role: str, *, minutes: int = 5, count: int = 60, errors: int = 0):
    from inference.telemetry.recorder import LATENCY_BUCKETS_MS
    from monitoring.models import MetricRollup

    now = timezone.now().replace(second=0, microsecond=0)
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    buckets[3] = count
    MetricRollup.objects.bulk_create(
        MetricRollup(
            endpoint=endpoint,
            deployment=deployment,
            role=role,
            minute=now - timedelta(minutes=i + 1),
            count=count,
            rows=count,
            error_count=errors,
            errors={"invalid_input": errors} if errors else {},
            latency_buckets=buckets,
            latency_sum_ms=3.0 * count,
            batch_rows_sum=count * 4,
            batch_count=count,
            outputs={"label": {"kind": "class", "counts": {"0": count // 2, "1": count - count // 2}}},
        )
        for i in range(minutes)
    )


def test_the_monitoring_index_shows_last_hour_traffic(browser_client, flowers):
    rollups("flowers", "iris:1", "primary", minutes=3, count=120, errors=12)
    html = browser_client.get("/monitoring/").content.decode()
    assert "flowers" in html and ">360<" in html and "10%" in html


def test_the_endpoint_page_offers_ranges_and_versions_and_loads_local_plotly(browser_client, flowers):
    import plotly

    rollups("flowers", "iris:1", "primary")
    rollups("flowers", "iris:2", "canary", count=6)
    html = browser_client.get("/monitoring/flowers/").content.decode()
    assert f"/assets/plotly-{plotly.__version__}.min.js" in html
    assert 'value="iris:1"' in html and 'value="iris:2"' in html and "<option>24h</option>" in html


def test_the_charts_json_has_every_figure_with_the_traffic(browser_client, flowers):
    rollups("flowers", "iris:1", "primary", count=60)
    rollups("flowers", "iris:2", "canary", count=6)
    body = browser_client.get("/monitoring/flowers/charts.json?range=15m").json()
    assert set(body["figures"]) == {"rps", "latency", "errors", "batch", "timing", "outputs", "drift", "outliers"}
    assert body["requests"] == {"iris:1": 300, "iris:2": 30}
    names = [trace["name"] for trace in body["figures"]["rps"]["data"]]
    assert names == ["iris:1 (primary)", "iris:2 (canary)"]
    assert 1.0 in body["figures"]["rps"]["data"][0]["y"]


def test_the_charts_json_compares_only_the_chosen_versions(browser_client, flowers):
    rollups("flowers", "iris:1", "primary")
    rollups("flowers", "iris:2", "canary")
    body = browser_client.get("/monitoring/flowers/charts.json?range=1h&versions=iris:2").json()
    assert [trace["name"] for trace in body["figures"]["rps"]["data"]] == ["iris:2 (canary)"]


def test_an_unknown_range_is_a_json_400(browser_client, flowers):
    response = browser_client.get("/monitoring/flowers/charts.json?range=1y")
    assert response.status_code == 400
    assert "range must be one of" in response.json()["error"]["message"]


def test_an_unknown_endpoint_is_a_404(browser_client):
    assert browser_client.get("/monitoring/nope/").status_code == 404
    assert browser_client.get("/monitoring/nope/charts.json").status_code == 404


def rule_form(**values):
    return {
        "endpoint": "flowers",
        "metric": "error_rate",
        "comparison": ">",
        "threshold": "0.05",
        "window_minutes": "5",
        "cooldown_minutes": "0",
        "severity": "critical",
        "channel": "dashboard",
        "target": "",
        "name": "errors",
        **values,
    }


def test_an_engineer_creates_an_alert_rule_from_the_form(browser_client, flowers):
    from monitoring.models import AlertRule

    response = browser_client.post("/alerts/rules/new", rule_form(), follow=True)
    assert "created" in response.content.decode()
    rule = AlertRule.objects.get()
    assert (rule.metric, rule.comparison, rule.threshold, rule.window_minutes) == ("error_rate", ">", 0.05, 5)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold": "lots"}, "threshold must be a finite number"),
        ({"threshold": "5"}, "is a rate from 0 to 1"),
        ({"window_minutes": "five"}, "window minutes must be a whole number"),
        ({"metric": "vibes"}, "metric must be one of"),
        ({"channel": "webhook", "target": "not-a-url"}, "needs an http(s) URL"),
        ({"endpoint": "nope"}, "no endpoint named"),
    ],
    ids=["threshold-text", "rate-over-1", "window-text", "unknown-metric", "webhook-without-url", "unknown-endpoint"],
)
def test_a_bad_rule_is_refused_with_the_services_message(browser_client, flowers, values, message):
    from monitoring.models import AlertRule

    response = browser_client.post("/alerts/rules/new", rule_form(**values), follow=True, HTTP_REFERER="/alerts/")
    assert message in response.content.decode()
    assert not AlertRule.objects.exists()


def test_a_viewer_cannot_create_rules(viewer_client, flowers):
    response = viewer_client.post("/alerts/rules/new", rule_form(), follow=True, HTTP_REFERER="/alerts/")
    assert "needs the ml_engineer role" in response.content.decode()


def test_a_firing_rule_shows_on_the_alerts_page_and_home(browser_client, flowers):
    from monitoring import alerts

    browser_client.post("/alerts/rules/new", rule_form())
    rollups("flowers", "iris:1", "primary", count=100, errors=20)
    from monitoring.models import AlertRule

    event = alerts.alert_rule_evaluate(rule_id=AlertRule.objects.get().pk)
    assert event is not None and event.kind == "firing"
    html = browser_client.get("/alerts/").content.decode()
    assert "1 firing" in html and 'class="badge firing"' in html
    assert "firing alert" in browser_client.get("/").content.decode()


def test_a_rule_is_deleted_from_the_page(browser_client, flowers):
    from monitoring.models import AlertRule

    browser_client.post("/alerts/rules/new", rule_form())
    rule = AlertRule.objects.get()
    browser_client.post(f"/alerts/rules/{rule.pk}/delete")
    assert not AlertRule.objects.exists()


def test_a_fresh_endpoint_opens_on_the_last_15_minutes_an_older_one_on_the_hour(browser_client, flowers):
    html = browser_client.get("/monitoring/flowers/").content.decode()
    assert "<option selected>15m</option>" in html
    Endpoint.objects.filter(pk=flowers.pk).update(created_at=timezone.now() - timedelta(hours=2))
    assert "<option selected>1h</option>" in browser_client.get("/monitoring/flowers/").content.decode()


def test_refused_requests_are_a_labelled_series_that_can_be_picked(browser_client, flowers):
    rollups("flowers", "iris:1", "primary")
    rollups("flowers", "", "", count=5, errors=5)  # refused before a version was chosen
    html = browser_client.get("/monitoring/flowers/").content.decode()
    assert 'value="refused" checked> refused (no version)</label>' in html
    body = browser_client.get("/monitoring/flowers/charts.json?range=1h&versions=refused").json()
    assert [t["name"] for t in body["figures"]["errors"]["data"]] == ["refused (no version)"]
    assert [row["version"] for row in body["summary"]] == ["refused (no version)"]


def test_the_charts_carry_a_per_version_summary_and_markers_for_changes(browser_client, flowers, engineer):
    from inference.models import Rollout, RolloutEvent, TrafficPolicyRevision
    from monitoring.models import AlertEvent, AlertRule
    from tests.monitoring.conftest import make_version

    rollups("flowers", "iris:1", "primary", count=60, errors=6)
    rollups("flowers", "iris:2", "canary", count=6)
    rollout = Rollout.objects.create(endpoint=flowers, candidate=make_version("iris", 2), plan={"steps": []})
    RolloutEvent.objects.create(rollout=rollout, step=0, kind="step", detail="iris v2 takes 10 % of the traffic")
    RolloutEvent.objects.create(rollout=rollout, step=0, kind="analysis", detail="step 1 passed")  # not marked
    TrafficPolicyRevision.objects.create(
        endpoint=flowers,
        revision=2,
        routes=[{"model": "iris", "version": 2, "role": "canary", "weight": 10}],
    )
    rule = AlertRule.objects.create(endpoint=flowers, metric="error_rate", threshold=0.05, name="errors up")
    AlertEvent.objects.create(rule=rule, endpoint="flowers", kind="firing", value=0.1, threshold=0.05)
    body = browser_client.get("/monitoring/flowers/charts.json?range=15m").json()
    rows = {row["version"]: row for row in body["summary"]}
    assert rows["iris:1 (primary)"]["requests"] == 300 and rows["iris:1 (primary)"]["error_rate"] == 0.1
    assert rows["iris:2 (canary)"]["batch_size"] == 4.0
    assert [(a["kind"], a["text"]) for a in body["annotations"]] == [
        ("rollout", "rollout step: iris v2 takes 10 % of the traffic"),
        ("traffic", "traffic r2: iris:2 canary 10%"),
        ("alert", "alert firing: errors up (0.1)"),
    ]
    for key in ("rps", "latency", "errors", "batch", "timing"):
        marked = {t["name"] for t in body["figures"][key]["data"] if t.get("yaxis") == "y2"}
        assert marked == {"Traffic changes", "Rollouts", "Alerts"}, key


def test_the_charts_show_the_live_minute_before_it_is_rolled_up(browser_client, flowers, settings):
    from inference.telemetry.recorder import PredictionRecord, Recorder
    from monitoring.flusher import Flusher
    from monitoring.models import MetricRollup

    if not settings.REDIS_URL:
        pytest.skip("needs Redis")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter("mh:*"):
        client.delete(key)
    recorder = Recorder()
    for _ in range(7):
        recorder.record(PredictionRecord("flowers", "iris:1", "primary", 2.0, True, batch_rows=2, model_ms=0.4))
    Flusher(recorder, redis_url=settings.REDIS_URL, interval_s=0).flush()
    try:
        assert not MetricRollup.objects.exists()
        body = browser_client.get("/monitoring/flowers/charts.json?range=15m").json()
        assert body["requests"] == {"iris:1": 7}
        assert body["summary"][0]["requests"] == 7 and body["summary"][0]["model_ms"] == 0.4
    finally:
        for key in client.scan_iter("mh:*"):
            client.delete(key)


def test_the_alerts_page_says_when_no_scheduler_evaluates_rules(browser_client, flowers):
    from monitoring.models import SchedulerHeartbeat
    from monitoring.tasks import scheduler_heartbeat

    html = browser_client.get("/alerts/").content.decode()
    assert 'id="scheduler-notice"' in html and "No scheduler has run the periodic jobs yet" in html
    assert 'id="scheduler-notice"' in browser_client.get("/monitoring/flowers/").content.decode()
    scheduler_heartbeat()  # what beat (through a worker) or the embedded scheduler runs every 30 s
    assert 'id="scheduler-notice"' not in browser_client.get("/alerts/").content.decode()
    assert 'id="scheduler-notice"' not in browser_client.get("/monitoring/flowers/").content.decode()
    SchedulerHeartbeat.objects.update(last_run_at=timezone.now() - timedelta(minutes=5))  # it stopped
    html = browser_client.get("/alerts/").content.decode()
    assert 'id="scheduler-notice"' in html and "The periodic jobs last ran 300 s ago" in html


def test_the_heartbeat_is_a_job_of_the_one_beat_schedule():
    from workers.celery import app

    entry = app.conf.beat_schedule["monitoring-scheduler-heartbeat"]
    assert entry["task"] == "monitoring.scheduler_heartbeat" and entry["schedule"] <= 30
