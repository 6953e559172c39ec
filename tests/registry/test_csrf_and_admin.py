from __future__ import annotations

import pytest
from django.test import Client

from audit.models import AuditEvent
from registry.models import ModelVersion, PromotionRequest
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


def staff(user):
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


def test_a_forged_session_post_to_approve_without_a_csrf_token_is_refused(engineer, approver):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(approver)
    response = browser.post(f"/api/v1/promotions/{request.pk}/approve", {}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
    assert PromotionRequest.objects.get().status == "pending"


def test_the_same_session_post_with_its_csrf_token_goes_through(engineer, approver):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(approver)
    browser.get("/admin/login/")  # any page that sets the CSRF cookie
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        f"/api/v1/promotions/{request.pk}/approve", {}, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert response.status_code == 200, response.content


def admin_action(user, action, *requests):
    browser = Client()
    browser.force_login(staff(user))
    return browser.post(
        "/admin/registry/promotionrequest/",
        {"action": action, "_selected_action": [r.pk for r in requests]},
        follow=True,
    )


def messages_of(response):
    return " | ".join(str(message) for message in response.context["messages"])


def test_the_admin_shows_the_gates_of_a_request(engineer, admin_user):
    request = g.ask(g.version(g.model(), 1, smoke_ok=False), "Staging", engineer)
    browser = Client()
    browser.force_login(staff(admin_user))
    page = browser.get(f"/admin/registry/promotionrequest/{request.pk}/change/").content.decode()
    assert "smoke_inference" in page and "FAILED" in page


def test_the_admin_approves_through_the_service(engineer, admin_user):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    response = admin_action(admin_user, "approve_requests", request)
    assert f"request #{request.pk}: approved" in messages_of(response)
    assert ModelVersion.objects.get().stage == "Staging"
    assert AuditEvent.objects.filter(action="promotion.approve", actor=admin_user).count() == 1


def test_the_admin_refuses_an_admins_own_request_with_a_message(admin_user):
    request = g.ask(g.version(g.model(), 1), "Staging", admin_user)
    response = admin_action(admin_user, "approve_requests", request)
    assert "someone else must decide it" in messages_of(response)
    assert PromotionRequest.objects.get().status == "pending"
    assert AuditEvent.objects.filter(action="promotion.approve.refused").count() == 1


def test_the_admin_rejects_through_the_service(engineer, admin_user):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    admin_action(admin_user, "reject_requests", request)
    assert PromotionRequest.objects.get().status == "rejected"


def test_requests_and_audit_events_cannot_be_edited_in_the_admin(engineer, admin_user):
    request = g.ask(g.version(g.model(), 1), "Staging", engineer)
    browser = Client()
    browser.force_login(staff(admin_user))
    event = AuditEvent.objects.first()
    browser.post(f"/admin/registry/promotionrequest/{request.pk}/change/", {"status": "approved"})
    browser.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"})
    assert PromotionRequest.objects.get().status == "pending"
    assert AuditEvent.objects.filter(pk=event.pk).exists()
    assert browser.get("/admin/registry/promotionrequest/add/").status_code == 403
