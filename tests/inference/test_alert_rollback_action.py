"""Alert rules with the "rollback" action roll back the endpoint's rollout or canary (issue #12)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import TestCase
from django.utils import timezone

from audit.models import AuditEvent
from inference import endpoints, traffic
from inference.models import Endpoint, Rollout, TrafficPolicyRevision
from monitoring import alerts
from monitoring.models import MetricRollup
from registry.models import ModelVersion
from rollouts import services as rollouts
from tests.conftest import client_for
from tests.inference.conftest import IRIS_META, iris_variant, version_add

pytestmark = pytest.mark.django_db


def split(endpoint: Endpoint) -> list[tuple[int, str, int]]:
    revision = TrafficPolicyRevision.objects.get(endpoint=endpoint, is_current=True)
    return [(r["version"], r["role"], r["weight"]) for r in revision.routes]


@pytest.fixture
def endpoint(engineer: Any) -> Endpoint:
    version_add("iris", iris_variant(0), engineer, IRIS_META)
    version_add("iris", iris_variant(1), engineer, IRIS_META)
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    return endpoint


def failing_minute() -> None:
    minute = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    MetricRollup.objects.create(
        endpoint="flowers", deployment="iris:2", role="canary", minute=minute, count=100, error_count=40
    )


def fire(engineer: Any, action: str) -> None:
    rule = alerts.alert_rule_create(
        endpoint_name="flowers",
        values={"metric": "error_rate", "threshold": 0.1, "deployment": "iris:2", "action": action},
        user=engineer,
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        event = alerts.alert_rule_evaluate(rule_id=rule.pk)
    assert event is not None and event.kind == "firing"


def test_a_firing_rollback_rule_rolls_back_the_running_rollout_with_the_alerts_values(
    endpoint: Endpoint, engineer: Any
) -> None:
    rollout = rollouts.rollout_start(endpoint=endpoint, version=2, user=engineer)
    assert split(endpoint) == [(1, "primary", 95), (2, "canary", 5)]
    failing_minute()
    fire(engineer, "rollback")
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and "alert rule" in rollout.reason
    assert split(endpoint) == [(1, "primary", 100)]
    alert = AuditEvent.objects.get(action="rollout.rollback").after["analysis"]["alert"]
    assert alert["metric"] == "error_rate" and alert["value"] == 0.4 and alert["threshold"] == 0.1


def test_without_a_rollout_it_drops_the_canary(endpoint: Endpoint, engineer: Any) -> None:
    routes = [
        {"model": "iris", "version": 1, "role": "primary", "weight": 90},
        {"model": "iris", "version": 2, "role": "canary", "weight": 10},
    ]
    traffic.traffic_policy_revise(endpoint=endpoint, routes=routes, user=engineer)
    failing_minute()
    fire(engineer, "rollback")
    assert split(endpoint) == [(1, "primary", 100)]
    assert AuditEvent.objects.filter(action="traffic.alert_rollback", actor_name="system").exists()


def test_a_notify_rule_changes_no_traffic(endpoint: Endpoint, engineer: Any) -> None:
    rollouts.rollout_start(endpoint=endpoint, version=2, user=engineer)
    failing_minute()
    fire(engineer, "notify")
    assert Rollout.objects.get().state == "running"
    assert split(endpoint) == [(1, "primary", 95), (2, "canary", 5)]


def test_an_unknown_action_is_refused(endpoint: Endpoint, engineer: Any) -> None:
    body = {"endpoint": "flowers", "metric": "error_rate", "threshold": 0.1, "action": "panic"}
    response = client_for(engineer).post("/api/v1/alerts/rules/", body, format="json")
    assert response.status_code == 400 and "action must be one of" in response.json()["error"]["message"]
    assert not ModelVersion.objects.filter(stage="Archived").exists()
