from __future__ import annotations

import pytest
from django.test import TestCase

from audit.models import AuditEvent
from registry.models import ModelVersion, RegisteredModel
from tests.conftest import client_for
from tests.registry import governance as g

pytestmark = pytest.mark.django_db

ACCURACY = {"metric": "accuracy", "max_drop": 0.01, "min": 0.8}


def approve(user, request, body=None):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client_for(user).post(f"/api/v1/promotions/{request.pk}/approve", body or {}, format="json")


def gate(request, name):
    return next(x for x in request.gates if x["name"] == name)


def test_a_metric_within_the_allowed_drop_passes(engineer, approver):
    m = g.model(gates=ACCURACY)
    g.in_production(g.version(m, 1, metrics={"accuracy": 0.93}), engineer, approver)
    request = g.ask(g.version(m, 2, stage="Staging", metrics={"accuracy": 0.925}), "Production", engineer)
    assert request.gates_ok, request.gates
    assert "worse by 0.005, allowed 0.01" in gate(request, "metric:accuracy:drop")["detail"]
    assert approve(approver, request).status_code == 200


def test_a_metric_that_drops_too_much_blocks_the_approval(engineer, approver):
    m = g.model(gates=ACCURACY)
    g.in_production(g.version(m, 1, metrics={"accuracy": 0.93}), engineer, approver)
    request = g.ask(g.version(m, 2, stage="Staging", metrics={"accuracy": 0.90}), "Production", engineer)
    assert gate(request, "metric:accuracy:drop")["ok"] is False
    response = approve(approver, request)
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "gates_failed"
    assert "metric:accuracy:drop" in error["message"] and "override_reason" in error["message"]
    assert ModelVersion.objects.get(version=2).stage == "Staging"


def test_a_metric_under_the_minimum_fails_its_gate(engineer):
    m = g.model(gates=ACCURACY)
    request = g.ask(g.version(m, 1, stage="Staging", metrics={"accuracy": 0.7}), "Production", engineer)
    threshold = gate(request, "metric:accuracy:threshold")
    assert threshold == {
        "name": "metric:accuracy:threshold",
        "ok": False,
        "detail": "accuracy = 0.7, expected at least 0.8",
    }
    assert gate(request, "metric:accuracy:drop") == {
        "name": "metric:accuracy:drop",
        "ok": True,
        "detail": "no production version to compare with",
    }


def test_lower_is_better_metrics_are_compared_the_other_way(engineer, approver):
    m = g.model(gates={"metric": "rmse", "max_drop": 0.1, "min": 2.0, "higher_is_better": False})
    g.in_production(g.version(m, 1, metrics={"rmse": 1.0}), engineer, approver)
    request = g.ask(g.version(m, 2, stage="Staging", metrics={"rmse": 1.5}), "Production", engineer)
    assert gate(request, "metric:rmse:threshold")["ok"] is True
    assert gate(request, "metric:rmse:drop")["ok"] is False


def test_a_version_without_the_metric_fails_the_gate(engineer):
    m = g.model(gates=ACCURACY)
    request = g.ask(g.version(m, 1, stage="Staging"), "Production", engineer)
    assert gate(request, "metric:accuracy") == {
        "name": "metric:accuracy",
        "ok": False,
        "detail": "the version carries no metadata.metrics.accuracy",
    }


def test_a_failed_smoke_inference_fails_its_gate(engineer):
    request = g.ask(g.version(g.model(), 1, smoke_ok=False), "Staging", engineer)
    assert gate(request, "smoke_inference")["ok"] is False
    assert gate(request, "validation")["ok"] is True


def test_gates_are_evaluated_again_at_approval(engineer, approver):
    m = g.model()
    request = g.ask(g.version(m, 1, stage="Staging", metrics={"accuracy": 0.7}), "Production", engineer)
    assert request.gates_ok
    RegisteredModel.objects.filter(pk=m.pk).update(gate_settings=ACCURACY)
    response = approve(approver, request)
    assert response.status_code == 409 and response.json()["error"]["code"] == "gates_failed"


def test_only_an_admin_can_override_a_failed_gate(engineer, approver, admin_user):
    m = g.model(gates=ACCURACY)
    request = g.ask(g.version(m, 1, stage="Staging", metrics={"accuracy": 0.7}), "Production", engineer)
    refused = approve(approver, request, {"override_reason": "urgent fix"})
    assert refused.status_code == 403
    assert "only an admin can override" in refused.json()["error"]["message"]
    response = approve(admin_user, request, {"override_reason": "hotfix for incident 42", "comment": "ok"})
    assert response.status_code == 200, response.content
    assert response.json()["override_reason"] == "hotfix for incident 42"
    event = AuditEvent.objects.get(action="promotion.approve")
    assert event.after["override_reason"] == "hotfix for incident 42"
    assert event.after["failed_gates"] == ["metric:accuracy:threshold"]


def test_an_override_needs_written_words(engineer, admin_user):
    m = g.model(gates=ACCURACY)
    request = g.ask(g.version(m, 1, stage="Staging", metrics={"accuracy": 0.7}), "Production", engineer)
    response = approve(admin_user, request, {"override_reason": "   "})
    assert response.status_code == 409 and response.json()["error"]["code"] == "gates_failed"


@pytest.mark.parametrize(
    "gate_settings, message",
    [
        ([], "gate_settings: Expected a dictionary"),
        ({"metric": "accuracy", "max_drop": "a lot"}, "max_drop: expected a number"),
        ({"metric": "accuracy", "max_drop": -1}, "expected a number >= 0"),
        ({"metric": "", "min": 1}, "needs a 'metric' name"),
        ({"metric": "accuracy", "higher_is_better": "yes"}, "expected true or false"),
        ({"metrics": "accuracy"}, "expected a list of objects"),
        ({"previous_production": "delete"}, "expected 'archive' or 'staging'"),
        ({"threshold": 1}, "unknown keys ['threshold']"),
    ],
)
def test_bad_gate_settings_are_refused(engineer, gate_settings, message):
    g.model()
    response = client_for(engineer).patch("/api/v1/models/churn/", {"gate_settings": gate_settings}, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]


def test_good_gate_settings_are_kept(engineer):
    g.model()
    wanted = {"metrics": [ACCURACY, {"metric": "latency_ms", "min": 50, "higher_is_better": False}]}
    response = client_for(engineer).patch("/api/v1/models/churn/", {"gate_settings": wanted}, format="json")
    assert response.status_code == 200
    assert RegisteredModel.objects.get().gate_settings == wanted
