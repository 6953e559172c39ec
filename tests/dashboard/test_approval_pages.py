"""Promotions from the browser: ask, review side by side, approve or reject, refusals shown."""

from __future__ import annotations

import pytest
from django.test import Client

from registry.models import ModelVersion
from tests.dashboard.conftest import seed_models

pytestmark = pytest.mark.django_db

PASSING_REPORT = {"ok": True, "checks": [{"name": "smoke_inference", "ok": True, "duration_ms": 1.0}]}


@pytest.fixture
def staged(engineer):
    """iris-like model: v1 in Production, v2 in Staging, both validated with a smoke inference."""
    seed_models(1, 2, user=engineer)
    ModelVersion.objects.update(validation_report=PASSING_REPORT)
    ModelVersion.objects.filter(version=2).update(stage="Staging", metadata={"metrics": {"accuracy": 0.93}})
    ModelVersion.objects.filter(version=1).update(stage="Production", metadata={"metrics": {"accuracy": 0.90}})
    return ModelVersion.objects.get(version=2)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def ask(client: Client, to_stage: str = "Production") -> int:
    response = client.post(
        "/models/model-000/versions/2/promote", {"to_stage": to_stage, "justification": "better accuracy"}
    )
    assert response.status_code == 302, response.content
    return int(response["Location"].rstrip("/").split("/")[-1])


def test_an_engineer_asks_for_a_promotion_from_the_version_page(browser_client, staged):
    html = browser_client.get("/models/model-000/versions/2/").content.decode()
    assert 'id="promote-form"' in html
    request_id = ask(browser_client)
    page = browser_client.get(f"/approvals/{request_id}/").content.decode()
    assert "better accuracy" in page and "Waiting for an approver" in page


def test_the_request_page_compares_candidate_and_production(browser_client, approver, staged):
    request_id = ask(browser_client)
    html = signed_in(approver).get(f"/approvals/{request_id}/").content.decode()
    assert "Candidate: " in html and "Production: " in html
    assert "+0.0300" in html
    assert "smoke_inference" in html
    assert 'aria-label="Signature comparison"' in html


def test_an_approver_sees_the_queue_and_approves_with_a_comment(browser_client, approver, staged):
    request_id = ask(browser_client)
    client = signed_in(approver)
    assert f'href="/approvals/{request_id}/"' in client.get("/approvals/").content.decode()
    response = client.post(f"/approvals/{request_id}/approve", {"comment": "ship it"}, follow=True)
    assert f"Promotion request #{request_id} approved." in response.content.decode()
    staged.refresh_from_db()
    assert staged.stage == "Production"


def test_an_approver_rejects_with_a_comment(browser_client, approver, staged):
    request_id = ask(browser_client)
    response = signed_in(approver).post(f"/approvals/{request_id}/reject", {"comment": "not yet"}, follow=True)
    assert "rejected" in response.content.decode()
    staged.refresh_from_db()
    assert staged.stage == "Staging"


def test_approving_ones_own_request_is_refused_with_a_clear_message(approver, staged):
    client = signed_in(approver)
    request_id = ask(client)
    response = client.post(f"/approvals/{request_id}/approve", {"comment": "me"}, follow=True)
    assert "someone else must decide it" in response.content.decode()
    staged.refresh_from_db()
    assert staged.stage == "Staging"


def test_only_someone_who_may_decide_is_offered_approve_and_reject(browser_client, approver, staged):
    mine = signed_in(approver)
    own_id = ask(mine)  # an approver's own request: they may not decide it
    own = mine.get(f"/approvals/{own_id}/").content.decode()
    assert 'id="decide-form"' not in own and ">Approve</button>" not in own and ">Reject</button>" not in own
    assert 'id="own-note"' in own and "Cancel my request" in own
    mine.post(f"/approvals/{own_id}/cancel", {})
    other_id = ask(browser_client)  # an engineer's request: the approver decides it
    theirs = mine.get(f"/approvals/{other_id}/").content.decode()
    assert ">Approve</button>" in theirs and ">Reject</button>" in theirs
    as_requester = browser_client.get(f"/approvals/{other_id}/").content.decode()
    assert ">Approve</button>" not in as_requester and "Cancel my request" in as_requester


def test_an_engineer_cannot_approve(browser_client, staged, django_user_model):
    from tests.conftest import make_user

    request_id = ask(browser_client)
    other = make_user(django_user_model, "olga", "ml_engineer")
    response = signed_in(other).post(f"/approvals/{request_id}/approve", {}, follow=True)
    assert "approver" in response.content.decode()
    staged.refresh_from_db()
    assert staged.stage == "Staging"


def test_the_requester_cancels_a_pending_request(browser_client, staged):
    request_id = ask(browser_client)
    response = browser_client.post(f"/approvals/{request_id}/cancel", {}, follow=True)
    assert "cancelled" in response.content.decode()


def test_a_request_without_justification_is_refused_with_a_message(browser_client, staged):
    response = browser_client.post(
        "/models/model-000/versions/2/promote",
        {"to_stage": "Production", "justification": ""},
        follow=True,
        HTTP_REFERER="/models/model-000/versions/2/",
    )
    assert "justification" in response.content.decode()


def test_an_unknown_decision_or_request_is_a_404(browser_client, approver, staged):
    request_id = ask(browser_client)
    assert signed_in(approver).post(f"/approvals/{request_id}/explode", {}).status_code == 404
    assert signed_in(approver).get("/approvals/99999/").status_code == 404


def test_the_queue_query_count_does_not_grow_with_requests(browser_client, approver, engineer):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    seed_models(6, 2, user=engineer)
    ModelVersion.objects.update(validation_report=PASSING_REPORT)
    client = signed_in(approver)

    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/approvals/").status_code == 200
        return len(captured)

    for i in range(2):
        browser_client.post(f"/models/model-00{i}/versions/2/promote", {"to_stage": "Staging", "justification": "x"})
    few = count()
    for i in range(2, 6):
        browser_client.post(f"/models/model-00{i}/versions/2/promote", {"to_stage": "Staging", "justification": "x"})
    assert count() == few
