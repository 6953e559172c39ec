from __future__ import annotations

import pytest

from registry import notifications, tasks
from registry.models import Webhook
from tests.conftest import make_user
from tests.integration.conftest import wait_for
from tests.registry import governance as g
from tests.registry.webhook_server import webhook_receiver

pytestmark = pytest.mark.integration


def test_a_real_worker_retries_a_webhook_that_answered_500_with_back_off(celery_worker, django_user_model):
    engineer = make_user(django_user_model, "erin", "ml_engineer")
    approver = make_user(django_user_model, "alice", "approver")
    with webhook_receiver("s3cret", statuses=[500, 200]) as receiver:
        hook = Webhook.objects.create(url=receiver.url, secret="s3cret", events=["promotion.approved"])
        request = g.approve(g.ask(g.version(g.model(), 1), "Staging", engineer), approver)
        # Queued from here, so that it lands on the test worker's queue (tasks that the
        # worker itself queues go to the default queue, which this worker does not read).
        payload = notifications.promotion_payload(request, "promotion.approved")
        tasks.webhook_deliver.delay(hook.pk, "promotion.approved", payload, "delivery-1")
        wait_for(lambda: len(receiver.calls) >= 2, timeout=60, what=f"a retried delivery\n{celery_worker.output()}")
    first, second = receiver.calls[:2]
    assert first["verified"] and second["verified"]
    assert first["headers"]["X-Modelhub-Delivery"] == second["headers"]["X-Modelhub-Delivery"] == "delivery-1"
    assert first["body"]["promotion"]["status"] == "approved"
    assert "Retry in" in celery_worker.output()
