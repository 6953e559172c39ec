from __future__ import annotations

import time

import pytest
from django.core import mail

from registry import notifications, tasks
from registry.models import Webhook
from tests.registry import governance as g
from tests.registry.webhook_server import webhook_receiver

pytestmark = pytest.mark.django_db

SECRET = "s3cret-for-tests"


@pytest.fixture
def eager_retries(monkeypatch):
    """Eager Celery re-raises a Retry when it propagates errors; let it re-run the task
    instead (immediately: the real back-off is covered by the worker integration test)."""
    from workers.celery import app

    monkeypatch.setattr(app.conf, "task_eager_propagates", False)


def deliver(hook, payload=None):
    return tasks.webhook_deliver.apply(args=[hook.pk, "promotion.approved", payload or {"x": 1}, "d1"])


@pytest.fixture
def people(engineer, approver, django_user_model):
    from tests.conftest import make_user

    engineer.email = "erin@example.com"
    engineer.save(update_fields=["email"])
    watcher = make_user(django_user_model, "walt", "viewer")
    watcher.email = "walt@example.com"
    watcher.save(update_fields=["email"])
    return engineer, approver, watcher


def test_the_requester_and_watchers_are_emailed_the_decision(people):
    engineer, approver, watcher = people
    m = g.model()
    m.watchers.add(watcher)
    request = g.ask(g.version(m, 1), "Staging", engineer)
    mail.outbox.clear()
    g.approve(request, approver, comment="ship it")
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert sorted(message.to) == ["erin@example.com", "walt@example.com"]
    assert message.subject == "[Modelhub] churn v1 -> Staging: approved"
    assert "Decided by: alice" in message.body and "Comment: ship it" in message.body
    assert "[ok] smoke_inference" in message.body


def test_a_signed_webhook_is_delivered_and_verifies(people):
    engineer, approver, _ = people
    with webhook_receiver(SECRET) as receiver:
        Webhook.objects.create(url=receiver.url, secret=SECRET, events=["promotion.approved"])
        request = g.ask(g.version(g.model(), 1), "Staging", engineer)
        g.approve(request, approver)
    assert len(receiver.calls) == 1, receiver.calls
    call = receiver.calls[0]
    assert call["verified"]
    assert call["headers"]["X-Modelhub-Signature"].startswith("sha256=")
    assert call["headers"]["X-Modelhub-Event"] == "promotion.approved"
    assert call["body"]["promotion"]["id"] == request.pk
    assert (call["body"]["promotion"]["status"], call["body"]["promotion"]["reviewer"]) == ("approved", "alice")


def test_a_target_that_answers_500_then_200_is_retried(people, eager_retries):
    engineer, approver, _ = people
    with webhook_receiver(SECRET, statuses=[500, 200]) as receiver:
        Webhook.objects.create(url=receiver.url, secret=SECRET)
        g.approve(g.ask(g.version(g.model(), 1), "Staging", engineer), approver)
    approved = [c for c in receiver.calls if c["headers"]["X-Modelhub-Event"] == "promotion.approved"]
    assert len(approved) == 2
    # The same delivery, retried: the receiver can deduplicate on its id.
    assert approved[0]["headers"]["X-Modelhub-Delivery"] == approved[1]["headers"]["X-Modelhub-Delivery"]


def test_delivery_gives_up_after_its_retries(people, monkeypatch, eager_retries):
    monkeypatch.setattr(tasks.webhook_deliver, "max_retries", 2)
    with webhook_receiver(SECRET, statuses=[503]) as receiver:
        hook = Webhook.objects.create(url=receiver.url, secret=SECRET)
        result = deliver(hook)
    assert result.failed() and "answered 503" in str(result.result)
    assert len(receiver.calls) == 3


def test_a_target_that_hangs_is_cut_off_by_the_read_timeout(people, settings, monkeypatch, eager_retries):
    settings.WEBHOOK_TIMEOUT_S = (0.5, 0.5)
    monkeypatch.setattr(tasks.webhook_deliver, "max_retries", 0)
    with webhook_receiver(SECRET, delay_s=3) as receiver:
        hook = Webhook.objects.create(url=receiver.url, secret=SECRET)
        result = deliver(hook)
    assert result.failed() and "timed out" in str(result.result)


def test_an_unreachable_target_fails_without_hanging(people, monkeypatch, eager_retries):
    monkeypatch.setattr(tasks.webhook_deliver, "max_retries", 0)
    hook = Webhook.objects.create(url="http://127.0.0.1:9/nothing-listens", secret=SECRET)
    result = deliver(hook)
    assert result.failed() and isinstance(result.result, tasks.WebhookDeliveryFailed)


def test_the_retry_policy_backs_off_exponentially():
    task = tasks.webhook_deliver
    assert task.autoretry_for == (tasks.WebhookDeliveryFailed, OSError)
    assert task.retry_backoff and task.retry_backoff_max == 600 and task.max_retries >= 3


def test_webhooks_only_get_their_teams_and_events(people):
    engineer, approver, _ = people
    red = g.team("red", engineer, approver)
    blue = g.team("blue")
    with webhook_receiver(SECRET) as receiver:
        Webhook.objects.create(url=receiver.url + "?red", secret=SECRET, team=red, events=["promotion.approved"])
        Webhook.objects.create(url=receiver.url + "?blue", secret=SECRET, team=blue)
        Webhook.objects.create(url=receiver.url + "?off", secret=SECRET, active=False)
        Webhook.objects.create(url=receiver.url + "?rejects", secret=SECRET, events=["promotion.rejected"])
        g.approve(g.ask(g.version(g.model(team=red), 1), "Staging", engineer), approver)
    assert [c["body"]["event"] for c in receiver.calls] == ["promotion.approved"]


def test_a_tampered_or_old_body_does_not_verify():
    body = b'{"event": "promotion.approved"}'
    headers = notifications.signed_headers(SECRET, body, event="promotion.approved", delivery_id="d")
    assert notifications.signature_verify(SECRET, headers, body)
    assert not notifications.signature_verify(SECRET, headers, body.replace(b"approved", b"rejected"))
    assert not notifications.signature_verify("other secret", headers, body)
    old = {**headers, "X-Modelhub-Timestamp": str(int(time.time()) - 3600)}
    old["X-Modelhub-Signature"] = notifications.signature(SECRET, old["X-Modelhub-Timestamp"], body)
    assert not notifications.signature_verify(SECRET, old, body)
    assert not notifications.signature_verify(SECRET, {**headers, "X-Modelhub-Timestamp": "soon"}, body)


def test_a_user_watches_and_unwatches_a_model(people):
    from tests.conftest import client_for

    _, _, watcher = people
    m = g.model()
    api = client_for(watcher)
    assert api.post("/api/v1/models/churn/watch").json() == {"watching": True}
    assert list(m.watchers.all()) == [watcher]
    assert api.delete("/api/v1/models/churn/watch").json() == {"watching": False}
    assert m.watchers.count() == 0
    from audit.models import AuditEvent

    assert list(AuditEvent.objects.values_list("action", flat=True).order_by("pk")) == ["model.watch", "model.unwatch"]
    assert api.post("/api/v1/models/nope/watch").status_code == 404


def test_webhook_changes_in_the_admin_are_audited_without_the_secret(admin_user):
    from django.test import Client

    from audit.models import AuditEvent

    admin_user.is_staff = admin_user.is_superuser = True
    admin_user.save(update_fields=["is_staff", "is_superuser"])
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post(
        "/admin/registry/webhook/add/",
        {
            "url": "https://hooks.example.com/x",
            "secret": "topsecret",
            "events": '["promotion.approved"]',
            "active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="webhook.create")
    assert event.after["url"] == "https://hooks.example.com/x"
    assert "topsecret" not in str(event.after)
