from __future__ import annotations

import pytest

from audit.models import AuditEvent
from registry.models import RegisteredModel
from tests.conftest import iris_bytes, upload

pytestmark = pytest.mark.django_db


def test_it_registers_a_model_and_records_who_did_it(api, engineer):
    response = api.post("/api/v1/models/", {"name": "churn", "description": "d", "tags": ["tabular"]}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "churn"
    assert RegisteredModel.objects.get(name="churn").created_by == engineer
    assert AuditEvent.objects.filter(action="model.register", actor=engineer).count() == 1


def test_it_refuses_a_second_model_with_the_same_name(api):
    api.post("/api/v1/models/", {"name": "churn"}, format="json")
    response = api.post("/api/v1/models/", {"name": "churn"}, format="json")
    assert response.status_code == 409
    assert "already exists" in response.json()["error"]["message"]


@pytest.mark.parametrize("name", ["Churn", "../etc", "a b", "x" * 65, "-lead", "tail-", "naïve", ""])
def test_it_refuses_names_with_odd_characters(api, name):
    response = api.post("/api/v1/models/", {"name": name}, format="json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert RegisteredModel.objects.count() == 0


def test_it_lists_searches_and_filters_models(api):
    for name, tags in [("churn", ["tabular"]), ("fraud", ["tabular", "pci"]), ("vision", ["cv"])]:
        api.post("/api/v1/models/", {"name": name, "tags": tags, "description": f"{name} model"}, format="json")
    upload(api, "fraud", iris_bytes())

    names = lambda r: [m["name"] for m in r.json()["results"]]  # noqa: E731
    assert names(api.get("/api/v1/models/")) == ["churn", "fraud", "vision"]
    assert names(api.get("/api/v1/models/?search=vis")) == ["vision"]
    assert names(api.get("/api/v1/models/?tag=tabular")) == ["churn", "fraud"]
    assert names(api.get("/api/v1/models/?status=ready")) == ["fraud"]
    assert names(api.get("/api/v1/models/?stage=None")) == ["fraud"]


def test_it_pages_through_models(api):
    for i in range(7):
        api.post("/api/v1/models/", {"name": f"m{i}"}, format="json")
    first = api.get("/api/v1/models/?page_size=3").json()
    assert first["count"] == 7 and len(first["results"]) == 3 and first["next"]
    last = api.get("/api/v1/models/?page_size=3&page=3").json()
    assert [m["name"] for m in last["results"]] == ["m6"]


def test_it_updates_tags_and_description(api):
    api.post("/api/v1/models/", {"name": "churn"}, format="json")
    response = api.patch("/api/v1/models/churn/", {"tags": ["b", "a", "a"], "description": "new"}, format="json")
    assert response.status_code == 200
    assert response.json()["tags"] == ["a", "b"]
    assert response.json()["description"] == "new"


def test_it_answers_404_json_for_an_unknown_model(api):
    response = api.get("/api/v1/models/nope/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_viewer_reads_but_cannot_register(viewer):
    from tests.conftest import client_for

    client = client_for(viewer)
    assert client.get("/api/v1/models/").status_code == 200
    response = client.post("/api/v1/models/", {"name": "churn"}, format="json")
    assert response.status_code == 403
    assert "ml_engineer" in response.json()["error"]["message"]
