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
    from monitoring.models import MetricRollup
    from monitoring.recorder import LATENCY_BUCKETS_MS

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
    assert set(body["figures"]) == {"rps", "latency", "errors", "batch", "outputs", "drift"}
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
    from monitoring import services

    browser_client.post("/alerts/rules/new", rule_form())
    rollups("flowers", "iris:1", "primary", count=100, errors=20)
    from monitoring.models import AlertRule

    event = services.alert_rule_evaluate(rule_id=AlertRule.objects.get().pk)
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
