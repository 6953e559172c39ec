from __future__ import annotations

import pytest
from django.test import TestCase

from audit.models import AuditEvent
from registry.models import ModelVersion
from tests.conftest import client_for
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


def rollback(user, name="churn", body=None):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client_for(user).post(f"/api/v1/models/{name}/rollback", body or {}, format="json")


def stages():
    return dict(ModelVersion.objects.values_list("version", "stage"))


def test_one_call_puts_the_previous_production_version_back(engineer, approver):
    m = g.model()
    g.in_production(g.version(m, 1), engineer, approver)
    g.in_production(g.version(m, 2), engineer, approver)
    assert stages() == {1: "Archived", 2: "Production"}
    response = rollback(approver, body={"comment": "v2 errors in prod"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["kind"], body["status"], body["version"], body["replaced_version"]) == ("rollback", "approved", 1, 2)
    assert stages() == {1: "Production", 2: "Archived"}
    event = AuditEvent.objects.get(action="promotion.rollback")
    assert (event.actor, event.before, event.after["production"]) == (approver, {"production": 2}, 1)


def test_rolling_back_twice_flips_back(engineer, approver):
    m = g.model()
    g.in_production(g.version(m, 1), engineer, approver)
    g.in_production(g.version(m, 2), engineer, approver)
    rollback(approver)
    assert rollback(approver).json()["version"] == 2
    assert stages() == {1: "Archived", 2: "Production"}


def test_without_an_earlier_production_version_there_is_nothing_to_roll_back_to(engineer, approver):
    g.in_production(g.version(g.model(), 1), engineer, approver)
    response = rollback(approver)
    assert response.status_code == 409
    assert "no earlier production version" in response.json()["error"]["message"]


def test_without_a_production_version_rollback_is_refused(approver):
    g.version(g.model(), 1)
    response = rollback(approver)
    assert response.status_code == 409
    assert "has no production version" in response.json()["error"]["message"]


def test_an_engineer_cannot_roll_back(engineer, approver):
    m = g.model()
    g.in_production(g.version(m, 1), engineer, approver)
    g.in_production(g.version(m, 2), engineer, approver)
    assert rollback(engineer).status_code == 403
    assert rollback(approver, name="nope").status_code == 404
