from __future__ import annotations

import pytest

from audit.models import AuditEvent
from registry.models import RegisteredModel

pytestmark = pytest.mark.django_db


def test_an_engineer_registers_a_model_from_the_form(browser_client):
    response = browser_client.post(
        "/models/new", {"name": "churn", "description": "who leaves", "tags": "tabular, b2c"}
    )
    assert response.status_code == 302 and response["Location"] == "/models/churn/"
    model = RegisteredModel.objects.get(name="churn")
    assert model.tags == ["b2c", "tabular"]
    assert AuditEvent.objects.filter(action="model.register", object_id=str(model.pk)).exists()


def test_a_bad_name_comes_back_as_a_message(browser_client):
    response = browser_client.post("/models/new", {"name": "Bad Name!"}, follow=True, HTTP_REFERER="/models/")
    assert "is not allowed" in response.content.decode()
    assert not RegisteredModel.objects.exists()


def test_a_duplicate_name_comes_back_as_a_message(browser_client):
    browser_client.post("/models/new", {"name": "churn"})
    response = browser_client.post("/models/new", {"name": "churn"}, follow=True, HTTP_REFERER="/models/")
    assert "already exists" in response.content.decode()


def test_a_viewer_cannot_register_a_model(viewer_client):
    response = viewer_client.post("/models/new", {"name": "churn"}, follow=True, HTTP_REFERER="/models/")
    assert "needs the ml_engineer role" in response.content.decode()
    assert not RegisteredModel.objects.exists()
