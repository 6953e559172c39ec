from __future__ import annotations

import pytest

from audit.models import AuditEvent
from registry.models import PromotionRequest
from tests.conftest import client_for
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


def test_an_engineer_asks_for_staging_and_the_gates_are_recorded(engineer):
    v = g.version(g.model(), 1)
    response = client_for(engineer).post(
        "/api/v1/models/churn/versions/1/promotions/",
        {"to_stage": "Staging", "justification": "passes offline eval"},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["from_stage"], body["to_stage"], body["status"]) == ("None", "Staging", "pending")
    assert body["requester"] == engineer.username
    assert [gate["name"] for gate in body["gates"]] == ["validation", "smoke_inference"]
    assert body["gates_ok"] is True
    request = PromotionRequest.objects.get()
    assert request.version == v
    event = AuditEvent.objects.get(action="promotion.request")
    assert event.actor == engineer and event.object_id == str(request.pk)


def test_it_refuses_to_skip_staging(engineer):
    g.version(g.model(), 1)
    response = client_for(engineer).post(
        "/api/v1/models/churn/versions/1/promotions/", {"to_stage": "Production", "justification": "j"}, format="json"
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_transition"
    assert "can move to Staging, Archived, not Production" in response.json()["error"]["message"]


@pytest.mark.parametrize("status", ["failed", "pending", "validating"])
def test_only_validated_versions_can_be_promoted(engineer, status):
    g.version(g.model(), 1, status=status)
    response = client_for(engineer).post(
        "/api/v1/models/churn/versions/1/promotions/", {"to_stage": "Staging", "justification": "j"}, format="json"
    )
    assert response.status_code == 409
    assert "only validated (ready) versions" in response.json()["error"]["message"]


def test_a_failed_version_can_still_be_archived(engineer):
    g.version(g.model(), 1, status="failed")
    response = client_for(engineer).post(
        "/api/v1/models/churn/versions/1/promotions/",
        {"to_stage": "Archived", "justification": "broken"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["gates"] == []


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"to_stage": "Staging"}, "justification"),
        ({"to_stage": "Staging", "justification": "   "}, "justification"),
        ({"to_stage": "Prod", "justification": "j"}, "to_stage"),
        ({"to_stage": "None", "justification": "j"}, "to_stage"),
        ({"justification": "j"}, "to_stage"),
        ({"to_stage": "Staging", "justification": "x" * 10_001}, "justification"),
    ],
)
def test_it_refuses_bad_request_bodies(engineer, payload, message):
    g.version(g.model(), 1)
    response = client_for(engineer).post("/api/v1/models/churn/versions/1/promotions/", payload, format="json")
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]["message"]
    assert PromotionRequest.objects.count() == 0


def test_a_second_pending_request_for_the_same_move_is_refused(engineer):
    g.version(g.model(), 1)
    api = client_for(engineer)
    body = {"to_stage": "Staging", "justification": "j"}
    assert api.post("/api/v1/models/churn/versions/1/promotions/", body, format="json").status_code == 201
    response = api.post("/api/v1/models/churn/versions/1/promotions/", body, format="json")
    assert response.status_code == 409
    assert "already has a pending request" in response.json()["error"]["message"]


def test_a_viewer_cannot_ask_for_a_promotion(viewer):
    g.version(g.model(), 1)
    response = client_for(viewer).post(
        "/api/v1/models/churn/versions/1/promotions/", {"to_stage": "Staging", "justification": "j"}, format="json"
    )
    assert response.status_code == 403


def test_unknown_models_and_versions_are_404(engineer):
    g.version(g.model(), 1)
    api = client_for(engineer)
    body = {"to_stage": "Staging", "justification": "j"}
    assert api.post("/api/v1/models/nope/versions/1/promotions/", body, format="json").status_code == 404
    assert api.post("/api/v1/models/churn/versions/9/promotions/", body, format="json").status_code == 404


def test_the_queue_filters_by_status_and_mine(engineer, approver, django_user_model):
    from tests.conftest import make_user

    other = make_user(django_user_model, "olga", "ml_engineer")
    m = g.model()
    mine = g.ask(g.version(m, 1), "Staging", engineer)
    g.ask(g.version(m, 2), "Staging", other)
    g.approve(mine, approver)
    api = client_for(engineer)
    ids = lambda r: [p["id"] for p in r.json()["results"]]  # noqa: E731
    assert len(ids(api.get("/api/v1/promotions/"))) == 2
    assert ids(api.get("/api/v1/promotions/?mine=1")) == [mine.pk]
    assert len(ids(api.get("/api/v1/promotions/?status=pending"))) == 1
    assert ids(api.get("/api/v1/promotions/?status=approved")) == [mine.pk]
    assert api.get("/api/v1/promotions/?status=maybe").status_code == 400


def test_the_requester_cancels_a_pending_request_and_nobody_else_can(engineer, approver):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    refused = client_for(approver).post(f"/api/v1/promotions/{request.pk}/cancel", {}, format="json")
    assert refused.status_code == 403
    response = client_for(engineer).post(f"/api/v1/promotions/{request.pk}/cancel", {"comment": "oops"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    again = client_for(engineer).post(f"/api/v1/promotions/{request.pk}/cancel", {}, format="json")
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="promotion.cancel.refused").count() == 2
