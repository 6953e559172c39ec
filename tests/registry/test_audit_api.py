from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditEvent
from tests.conftest import client_for
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(engineer, approver):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    g.approve(request, approver, comment="fine")
    return request


def test_an_approver_reads_the_log_newest_first_with_who_what_and_when(approver, history):
    body = client_for(approver).get("/api/v1/audit/").json()
    actions = [e["action"] for e in body["results"]]
    assert actions[:3] == ["promotion.approve", "version.stage", "promotion.request"]
    first = body["results"][0]
    assert first["actor"] == "alice" and first["object_type"] == "registry.promotionrequest"
    assert first["object_id"] == str(history.pk)
    assert first["before"]["status"] == "pending" and first["after"]["status"] == "approved"
    assert first["source_ip"] is None or isinstance(first["source_ip"], str)


def test_the_source_address_of_an_api_call_is_recorded(engineer):
    g.version(g.model(), 1)
    client_for(engineer).post(
        "/api/v1/models/churn/versions/1/promotions/",
        {"to_stage": "Staging", "justification": "j"},
        format="json",
        REMOTE_ADDR="10.1.2.3",
    )
    assert AuditEvent.objects.get(action="promotion.request").source_ip == "10.1.2.3"


def test_filters_narrow_the_log(approver, history):
    api = client_for(approver)
    actions = lambda q: [e["action"] for e in api.get(f"/api/v1/audit/?{q}").json()["results"]]  # noqa: E731
    assert set(actions("actor=erin")) == {"promotion.request"}
    assert actions("action=promotion") == ["promotion.approve", "promotion.request"]
    assert actions("action=promotion.approve") == ["promotion.approve"]
    assert actions(f"object_type=registry.promotionrequest&object_id={history.pk}") == [
        "promotion.approve",
        "promotion.request",
    ]
    future = (timezone.now() + timedelta(hours=1)).isoformat().replace("+", "%2B")
    assert actions(f"since={future}") == []
    assert len(actions(f"until={future}")) == 3
    assert len(actions("since=2020-01-01")) == 3


@pytest.mark.parametrize("query", ["since=yesterday", "until=2026-13-45", "since=12:00"])
def test_bad_dates_are_refused(approver, query):
    response = client_for(approver).get(f"/api/v1/audit/?{query}")
    assert response.status_code == 400
    assert "ISO 8601" in response.json()["error"]["message"]


def test_the_log_is_paginated(approver, history):
    body = client_for(approver).get("/api/v1/audit/?page_size=2").json()
    assert body["count"] == 3 and len(body["results"]) == 2 and body["next"]


@pytest.mark.parametrize("path", ["/api/v1/audit/?format=csv", "/api/v1/audit/export.csv"])
def test_the_log_exports_as_streamed_csv(approver, history, path):
    response = client_for(approver).get(path + ("&" if "?" in path else "?") + "action=promotion")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["action"] for row in rows] == ["promotion.approve", "promotion.request"]
    assert rows[0]["actor"] == "alice" and '"status": "approved"' in rows[0]["after"].replace(":", ": ")


def test_csv_cells_that_look_like_formulas_are_defused(approver, engineer):
    g.version(g.model(), 1)
    g.ask(g.version(g.model("other"), 1), "Staging", engineer)
    AuditEvent.objects.filter(action="promotion.request").update(object_repr='=HYPERLINK("http://evil")')
    content = b"".join(client_for(approver).get("/api/v1/audit/export.csv").streaming_content).decode()
    assert "'=HYPERLINK" in content


def test_engineers_and_viewers_cannot_read_the_log(engineer, viewer):
    assert client_for(engineer).get("/api/v1/audit/").status_code == 403
    assert client_for(viewer).get("/api/v1/audit/export.csv").status_code == 403
    assert client_for(viewer).get("/api/v1/audit/?format=csv").status_code == 403


def test_other_teams_events_are_left_out(approver, engineer, admin_user, django_user_model):
    from tests.conftest import make_user

    bea = make_user(django_user_model, "bea", "ml_engineer")
    g.ask(g.version(g.model("blue-model", team=g.team("blue", bea)), 1), "Staging", bea)
    g.ask(g.version(g.model("open-model"), 1), "Staging", engineer)

    def seen(user):
        return {e["object_repr"].split(" ")[1] for e in client_for(user).get("/api/v1/audit/").json()["results"]}

    assert seen(approver) == {"open-model"}
    assert seen(admin_user) == {"open-model", "blue-model"}


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", ["/api/v1/audit/", "/api/v1/audit/export.csv"])
def test_the_api_refuses_to_write_the_log(admin_user, history, method, path):
    before = list(AuditEvent.objects.values_list("pk", "action", "after"))
    response = getattr(client_for(admin_user), method)(path, {"action": "forged"}, format="json")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert list(AuditEvent.objects.values_list("pk", "action", "after")) == before


def test_events_cannot_be_changed_or_deleted_through_the_orm(history):
    event = AuditEvent.objects.first()
    event.action = "forged"
    with pytest.raises(ValueError, match="append-only"):
        event.save()
    with pytest.raises(ValueError, match="append-only"):
        event.delete()
