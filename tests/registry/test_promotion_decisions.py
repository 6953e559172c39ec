from __future__ import annotations

import pytest
from django.test import TestCase

from audit.models import AuditEvent
from registry import promotions
from registry.models import ModelVersion
from tests.conftest import client_for
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


def post(user, path, body=None):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client_for(user).post(path, body or {}, format="json")


def test_an_approver_moves_the_version_to_staging(engineer, approver):
    v = g.version(g.model(), 1)
    request = g.ask(v, "Staging", engineer)
    response = post(approver, f"/api/v1/promotions/{request.pk}/approve", {"comment": "looks good"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["status"], body["reviewer"], body["comment"]) == ("approved", approver.username, "looks good")
    v.refresh_from_db()
    assert v.stage == "Staging" and v.stage_changed_by == approver
    assert AuditEvent.objects.filter(action="promotion.approve", actor=approver).count() == 1
    assert AuditEvent.objects.filter(action="version.stage", object_id=str(v.pk)).count() == 1


def test_promoting_to_production_archives_the_previous_production_version(engineer, approver):
    m = g.model()
    old = g.in_production(g.version(m, 1), engineer, approver)
    new = g.version(m, 2, stage="Staging")
    request = g.approve(g.ask(new, "Production", engineer), approver)
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.stage, new.stage) == ("Archived", "Production")
    assert request.replaced_version == old


def test_a_model_can_keep_the_previous_production_version_in_staging(engineer, approver):
    m = g.model(gates={"previous_production": "staging"})
    old = g.in_production(g.version(m, 1), engineer, approver)
    g.approve(g.ask(g.version(m, 2, stage="Staging"), "Production", engineer), approver)
    old.refresh_from_db()
    assert old.stage == "Staging"


def test_the_requester_can_never_approve_their_own_request_even_as_admin(admin_user):
    request = g.ask(g.version(g.model(), 1), "Staging", admin_user)
    response = post(admin_user, f"/api/v1/promotions/{request.pk}/approve")
    assert response.status_code == 403
    assert "someone else must decide it" in response.json()["error"]["message"]
    assert ModelVersion.objects.get().stage == "None"
    refused = AuditEvent.objects.get(action="promotion.approve.refused")
    assert refused.actor == admin_user and refused.after["http_status"] == 403


def test_an_engineer_cannot_approve(engineer, django_user_model):
    from tests.conftest import make_user

    other = make_user(django_user_model, "otto", "ml_engineer")
    request = g.ask(g.version(g.model(), 1), "Staging", other)
    response = post(engineer, f"/api/v1/promotions/{request.pk}/approve")
    assert response.status_code == 403
    assert "approver role" in response.json()["error"]["message"]


def test_approving_twice_is_refused_and_recorded(engineer, approver, admin_user):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    assert post(approver, f"/api/v1/promotions/{request.pk}/approve").status_code == 200
    response = post(admin_user, f"/api/v1/promotions/{request.pk}/approve")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "not_pending"
    assert "already approved by alice" in response.json()["error"]["message"]
    assert AuditEvent.objects.filter(action="promotion.approve.refused", actor=admin_user).count() == 1


def test_approving_a_cancelled_request_is_refused(engineer, approver):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    promotions.promotion_cancel(request_id=request.pk, user=engineer)
    response = post(approver, f"/api/v1/promotions/{request.pk}/approve")
    assert response.status_code == 409
    assert "already cancelled" in response.json()["error"]["message"]
    assert AuditEvent.objects.filter(action="promotion.approve.refused").count() == 1


def test_approving_a_version_that_failed_validation_is_refused_even_with_an_override(engineer, admin_user):
    v = g.version(g.model(), 1)
    request = g.ask(v, "Staging", engineer)
    ModelVersion.objects.filter(pk=v.pk).update(status="failed", validation_report=g.report(ok=False))
    response = post(admin_user, f"/api/v1/promotions/{request.pk}/approve", {"override_reason": "ship it"})
    assert response.status_code == 409
    assert "only validated (ready) versions" in response.json()["error"]["message"]
    assert AuditEvent.objects.filter(action="promotion.approve.refused").count() == 1


def test_a_request_gone_stale_is_refused(engineer, approver):
    m = g.model()
    v = g.version(m, 1)
    request = g.ask(v, "Staging", engineer)
    g.approve(g.ask(v, "Archived", engineer), approver)
    response = post(approver, f"/api/v1/promotions/{request.pk}/approve")
    assert response.status_code == 409
    assert "is in Archived" in response.json()["error"]["message"]


def test_an_approver_rejects_with_a_comment(engineer, approver):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    response = post(approver, f"/api/v1/promotions/{request.pk}/reject", {"comment": "needs more eval"})
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["comment"]) == ("rejected", "needs more eval")
    assert ModelVersion.objects.get().stage == "None"
    assert post(approver, f"/api/v1/promotions/{request.pk}/approve").status_code == 409


def test_unknown_requests_are_404(approver):
    assert post(approver, "/api/v1/promotions/999/approve").status_code == 404
    assert client_for(approver).get("/api/v1/promotions/999/").status_code == 404


@pytest.mark.parametrize("body", [{"comment": "x" * 10_001}, {"override_reason": ["a"]}])
def test_bad_decision_bodies_are_refused(engineer, approver, body):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    assert post(approver, f"/api/v1/promotions/{request.pk}/approve", body).status_code == 400


def test_the_detail_compares_with_production(engineer, approver):
    m = g.model()
    g.in_production(g.version(m, 1, metrics={"accuracy": 0.90, "f1": 0.8}), engineer, approver)
    changed = {
        "inputs": [{"name": "X", "datatype": "FP64", "shape": [-1, 5]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }
    request = g.ask(
        g.version(m, 2, stage="Staging", metrics={"accuracy": 0.93}, signature=changed), "Production", engineer
    )
    body = client_for(approver).get(f"/api/v1/promotions/{request.pk}/").json()
    comparison = body["comparison"]
    assert comparison["candidate"]["version"] == 2 and comparison["production"]["version"] == 1
    assert comparison["metrics"]["accuracy"]["delta"] == pytest.approx(0.03)
    assert comparison["metrics"]["f1"] == {"candidate": None, "production": 0.8, "delta": None}
    assert comparison["signature"]["compatible"] is False
    problems = " | ".join(comparison["signature"]["problems"])
    assert "production FP32, candidate FP64" in problems
    assert "shape [-1, 4] in production, [-1, 5] in candidate" in problems
    assert "output 'probabilities' is missing" in problems


def test_a_compatible_signature_is_reported_as_such(engineer, approver):
    m = g.model()
    g.in_production(g.version(m, 1), engineer, approver)
    fixed_batch = {**g.SIGNATURE, "inputs": [{"name": "X", "datatype": "FP32", "shape": [8, 4]}]}
    request = g.ask(g.version(m, 2, stage="Staging", signature=fixed_batch), "Production", engineer)
    comparison = client_for(approver).get(f"/api/v1/promotions/{request.pk}/").json()["comparison"]
    assert comparison["signature"] == {"compatible": True, "problems": [], "detail": "compatible"}
