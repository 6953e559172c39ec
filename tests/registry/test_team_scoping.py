from __future__ import annotations

import pytest
from django.test import TestCase

from accounts.permissions import can_access_team
from audit.models import AuditEvent
from inference.models import Endpoint
from inference.selectors import visible_endpoints
from registry.models import ModelVersion
from registry.selectors import visible_models
from tests.conftest import client_for, make_user
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


@pytest.fixture
def teams(engineer, approver, django_user_model):
    """erin and alice are in red; bea (engineer) and bob (approver) in blue."""
    bea = make_user(django_user_model, "bea", "ml_engineer")
    bob = make_user(django_user_model, "bob", "approver")
    red, blue = g.team("red", engineer, approver), g.team("blue", bea, bob)
    g.version(g.model("red-model", team=red), 1)
    g.version(g.model("blue-model", team=blue), 1)
    g.version(g.model("shared-model"), 1)
    return {"red": red, "blue": blue, "bea": bea, "bob": bob}


def names(response):
    return [m["name"] for m in response.json()["results"]]


def test_a_user_lists_their_teams_models_and_those_with_no_team(engineer, teams):
    assert names(client_for(engineer).get("/api/v1/models/")) == ["red-model", "shared-model"]
    assert names(client_for(teams["bea"]).get("/api/v1/models/")) == ["blue-model", "shared-model"]


def test_an_admin_sees_every_model(admin_user, teams):
    assert names(client_for(admin_user).get("/api/v1/models/")) == ["blue-model", "red-model", "shared-model"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/api/v1/models/blue-model/"),
        ("patch", "/api/v1/models/blue-model/"),
        ("get", "/api/v1/models/blue-model/versions/"),
        ("get", "/api/v1/models/blue-model/versions/1/"),
        ("patch", "/api/v1/models/blue-model/versions/1/"),
        ("get", "/api/v1/models/blue-model/versions/1/artifact"),
        ("post", "/api/v1/models/blue-model/versions/1/archive"),
        ("post", "/api/v1/models/blue-model/versions/1/promotions/"),
        ("post", "/api/v1/models/blue-model/rollback"),
    ],
)
def test_another_teams_model_is_not_found(engineer, teams, method, path):
    response = getattr(client_for(engineer), method)(path, {"description": "x"}, format="json")
    assert response.status_code == 404, response.content
    assert "blue-model" in response.json()["error"]["message"]


def test_registering_a_model_for_another_team_is_refused(engineer, teams):
    response = client_for(engineer).post("/api/v1/models/", {"name": "sneaky", "team": "blue"}, format="json")
    assert response.status_code == 403
    assert "not a member" in response.json()["error"]["message"]
    assert (
        client_for(engineer).post("/api/v1/models/", {"name": "mine", "team": "red"}, format="json").status_code == 201
    )


def test_an_approver_from_another_team_cannot_decide_and_it_is_recorded(approver, teams):
    request = g.ask(ModelVersion.objects.get(model__name="blue-model"), "Staging", teams["bea"])
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client_for(approver).post(f"/api/v1/promotions/{request.pk}/approve", {}, format="json")
    assert response.status_code == 403
    assert "belongs to team 'blue'" in response.json()["error"]["message"]
    assert AuditEvent.objects.filter(action="promotion.approve.refused", actor=approver).count() == 1
    # bob, blue's approver, may decide it.
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client_for(teams["bob"]).post(f"/api/v1/promotions/{request.pk}/approve", {}, format="json")
    assert response.status_code == 200


def test_the_queue_shows_only_visible_requests(engineer, teams):
    g.ask(ModelVersion.objects.get(model__name="blue-model"), "Staging", teams["bea"])
    mine = g.ask(ModelVersion.objects.get(model__name="red-model"), "Staging", engineer)
    listed = client_for(engineer).get("/api/v1/promotions/").json()["results"]
    assert [r["id"] for r in listed] == [mine.pk]
    assert client_for(teams["bea"]).get(f"/api/v1/promotions/{mine.pk}/").status_code == 404


def test_the_helpers_scope_endpoints_too(engineer, teams, admin_user):
    Endpoint.objects.create(name="red-ep", team=teams["red"])
    Endpoint.objects.create(name="blue-ep", team=teams["blue"])
    Endpoint.objects.create(name="open-ep")
    assert sorted(visible_endpoints(engineer).values_list("name", flat=True)) == ["open-ep", "red-ep"]
    assert visible_endpoints(admin_user).count() == 3
    assert sorted(visible_models(teams["bea"]).values_list("name", flat=True)) == ["blue-model", "shared-model"]
    assert can_access_team(engineer, None) and can_access_team(engineer, teams["red"].pk)
    assert not can_access_team(engineer, teams["blue"].pk)
