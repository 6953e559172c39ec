"""Alert rules over the REST API: create, read, change, delete, audit; bad rules refused."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from tests.conftest import client_for
from tests.monitoring.conftest import make_endpoint

pytestmark = pytest.mark.django_db

GOOD = {
    "endpoint": "iris",
    "metric": "p99_latency_ms",
    "comparison": ">",
    "threshold": 250,
    "window_minutes": 5,
    "severity": "critical",
    "channel": "webhook",
    "target": "http://127.0.0.1:9/hook",
}


def test_an_engineer_creates_changes_and_deletes_a_rule_with_audit(api: Any) -> None:
    make_endpoint()
    created = api.post("/api/v1/alerts/rules/", GOOD, format="json")
    assert created.status_code == 201, created.content
    rule = created.json()
    assert rule["state"] == "ok" and rule["endpoint"] == "iris" and rule["threshold"] == 250
    changed = api.patch(f"/api/v1/alerts/rules/{rule['id']}/", {"threshold": 300, "enabled": False}, format="json")
    assert changed.status_code == 200 and changed.json()["threshold"] == 300
    assert api.get("/api/v1/alerts/rules/?endpoint=iris").json()["count"] == 1
    assert api.delete(f"/api/v1/alerts/rules/{rule['id']}/").status_code == 204
    assert api.get(f"/api/v1/alerts/rules/{rule['id']}/").status_code == 404
    actions = list(
        AuditEvent.objects.filter(object_type="monitoring.alertrule").order_by("id").values_list("action", flat=True)
    )
    assert actions == ["alert_rule.create", "alert_rule.update", "alert_rule.delete"]
    update = AuditEvent.objects.get(action="alert_rule.update")
    assert update.before["threshold"] == 250 and update.after["threshold"] == 300


def test_viewers_read_but_cannot_write_rules(api: Any, viewer: Any) -> None:
    make_endpoint()
    rule = api.post("/api/v1/alerts/rules/", GOOD, format="json").json()
    reader = client_for(viewer)
    assert reader.get("/api/v1/alerts/rules/").status_code == 200
    assert reader.post("/api/v1/alerts/rules/", GOOD, format="json").status_code == 403
    assert reader.patch(f"/api/v1/alerts/rules/{rule['id']}/", {"threshold": 1}, format="json").status_code == 403
    assert reader.delete(f"/api/v1/alerts/rules/{rule['id']}/").status_code == 403


@pytest.mark.parametrize(
    "change, message",
    [
        ({"window_minutes": -5}, "window_minutes must be a whole number"),
        ({"window_minutes": 0}, "window_minutes must be a whole number"),
        ({"window_minutes": 2.5}, "window_minutes must be a whole number"),
        ({"threshold": "NaN"}, "threshold must be a finite number"),
        ({"threshold": "Infinity"}, "threshold must be a finite number"),
        ({"threshold": "high"}, "threshold must be a finite number"),
        ({"threshold": None}, "threshold must be a finite number"),
        ({"metric": "error_rate", "threshold": 1.5}, "rate from 0 to 1"),
        ({"metric": "throughput_drop", "threshold": -0.2}, "rate from 0 to 1"),
        ({"metric": "cpu_temperature"}, "metric must be one of"),
        ({"comparison": "=="}, "comparison must be one of"),
        ({"severity": "apocalyptic"}, "severity must be one of"),
        ({"channel": "pager"}, "channel must be one of"),
        ({"target": "not a url"}, "http(s) URL"),
        ({"channel": "email", "target": "nobody"}, "e-mail address"),
        ({"cooldown_minutes": -1}, "cooldown_minutes"),
        ({"deployment": "iris"}, "model:version"),
        ({"colour": "red"}, "unknown fields"),
        ({"endpoint": ""}, "endpoint"),
    ],
)
def test_invalid_rules_are_refused_with_a_clear_400(api: Any, change: dict[str, Any], message: str) -> None:
    make_endpoint()
    response = api.post("/api/v1/alerts/rules/", {**GOOD, **change}, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]


def test_a_nan_literal_in_the_body_is_refused(api: Any) -> None:
    make_endpoint()
    body = '{"endpoint": "iris", "metric": "error_rate", "threshold": NaN}'
    response = api.post("/api/v1/alerts/rules/", body, content_type="application/json")
    assert response.status_code == 400 and "error" in response.json()


def test_unknown_endpoint_and_rule_give_404(api: Any) -> None:
    assert api.post("/api/v1/alerts/rules/", GOOD, format="json").status_code == 404
    assert api.patch("/api/v1/alerts/rules/999/", {"threshold": 1}, format="json").status_code == 404


def test_an_invalid_change_leaves_the_rule_as_it_was(api: Any) -> None:
    make_endpoint()
    rule = api.post("/api/v1/alerts/rules/", GOOD, format="json").json()
    response = api.patch(f"/api/v1/alerts/rules/{rule['id']}/", {"window_minutes": -1}, format="json")
    assert response.status_code == 400
    assert api.get(f"/api/v1/alerts/rules/{rule['id']}/").json()["window_minutes"] == 5


def test_events_are_listed_with_filters(api: Any) -> None:
    from django.utils import timezone

    from monitoring import alerts
    from monitoring.models import MetricRollup

    make_endpoint()
    api.post(
        "/api/v1/alerts/rules/",
        {**GOOD, "metric": "no_traffic", "comparison": "<", "threshold": 1, "channel": "dashboard", "target": ""},
        format="json",
    )
    alerts.alerts_evaluate(now=timezone.now())
    assert MetricRollup.objects.count() == 0
    events = api.get("/api/v1/alerts/events/?endpoint=iris&kind=firing").json()
    assert events["count"] == 1 and events["results"][0]["metric"] == "no_traffic"
    assert api.get("/api/v1/alerts/events/?kind=resolved").json()["count"] == 0
    assert api.get("/api/v1/alerts/events/?since=2999-01-01T00:00:00Z").json()["count"] == 0
    assert api.get("/api/v1/alerts/events/?since=yesterday").status_code == 400
