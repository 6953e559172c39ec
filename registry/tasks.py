"""Registry tasks: thin, take IDs, safe to run twice."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db import connection

from config.db import retry_if_locked
from config.renderers import dumps
from inference.runtime.validation import validate_model_file
from registry import notifications, services, storage
from registry.models import PromotionRequest, Webhook

log = logging.getLogger(__name__)


@shared_task(name="registry.model_version_validate", bind=True)
def model_version_validate(self: Task, version_id: int) -> str:
    """Validate an uploaded artifact in a child process with memory and time limits,
    holding the version's lease (renewed while it runs) so that a dead worker's
    validation is picked up again by `validation_sweep`."""
    owner = self.request.id or uuid.uuid4().hex
    lease_s = settings.VALIDATION_LEASE_S
    version = retry_if_locked(
        lambda: services.model_version_start_validation(
            version_id=version_id, owner=owner, lease_s=lease_s, max_attempts=settings.VALIDATION_MAX_ATTEMPTS
        )
    )
    if version is None:
        return "nothing to do"
    path = storage.artifact_path(version.artifact_sha256)
    progress: dict[str, Any] = {"running": "", "done": 0}

    def on_event(event: dict[str, Any]) -> None:
        # Kept in memory; the lease renewal writes it (no database write per check).
        if event.get("event") == "running":
            progress["running"] = str(event.get("name", ""))
        elif event.get("event") == "check":
            progress["done"] += 1

    with _lease_renewed(version_id, owner, lease_s, progress):
        report = validate_model_file(
            str(path),
            memory_limit_bytes=settings.VALIDATION_MEMORY_LIMIT_BYTES,
            timeout_s=settings.VALIDATION_TIMEOUT_S,
            on_event=on_event,
        )
    # The result of seconds of work: a lost race for SQLite's write lock must not drop it.
    version = retry_if_locked(
        lambda: services.model_version_record_validation(version_id=version_id, report=report.to_dict())
    )
    log.info("validated %s: %s", version, version.status)
    return version.status


@contextmanager
def _lease_renewed(
    version_id: int, owner: str, lease_s: float, progress: dict[str, Any] | None = None
) -> Iterator[None]:
    """Renew the lease every third of its length from a thread while the body runs,
    writing a copy of `progress` (the running check) with each renewal."""
    stop = threading.Event()

    def renew() -> None:
        try:
            while not stop.wait(lease_s / 3):
                try:
                    services.model_version_renew_validation_lease(
                        version_id=version_id,
                        owner=owner,
                        lease_s=lease_s,
                        progress=dict(progress) if progress is not None else None,
                    )
                except Exception:  # a missed renewal is retried; the lease has slack for two
                    log.exception("could not renew the validation lease of version %s", version_id)
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=renew, name=f"lease-v{version_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


@shared_task(name="registry.validation_sweep")
def validation_sweep() -> int:
    """Re-enqueue validations whose worker died (lease lapsed) or that never started; fail
    those out of attempts. Idempotent and short: beat (or the embedded scheduler) runs it
    every VALIDATION_SWEEP_INTERVAL_S."""
    version_ids = services.model_version_validation_sweep(
        lease_s=settings.VALIDATION_LEASE_S,
        pending_grace_s=settings.VALIDATION_PENDING_GRACE_S,
        max_attempts=settings.VALIDATION_MAX_ATTEMPTS,
    )
    for version_id in version_ids:
        try:
            model_version_validate.delay(version_id)
        except Exception:  # the broker is away: the version is picked again after its lease
            log.exception("could not re-enqueue the validation of version %s", version_id)
    return len(version_ids)


class WebhookDeliveryFailed(Exception):
    """The receiver answered with a non-2xx status; the delivery is retried."""


@shared_task(name="registry.promotion_notify")
def promotion_notify(request_id: int, event: str) -> int:
    """Email the requester and watchers, and queue one signed delivery per webhook."""
    import uuid

    request = (
        PromotionRequest.objects.select_related("version__model", "requester", "reviewer").filter(pk=request_id).first()
    )
    if request is None:
        return 0
    payload = notifications.promotion_payload(request, event)
    try:
        notifications.promotion_email(request, event)
    except Exception:
        # A mail outage must not stop the webhooks; the decision itself is already made.
        log.exception("could not email the decision on promotion request %s", request_id)
    hooks = notifications.webhooks_for(event, request.version.model.team_id)
    for hook in hooks:
        # The delivery id is fixed here, so that a retried or repeated delivery can be
        # recognised (deduplicated) by the receiver.
        webhook_deliver.delay(hook.pk, event, payload, f"{request_id}-{event}-{hook.pk}-{uuid.uuid4().hex[:8]}")
    return len(hooks)


@shared_task(
    name="registry.webhook_deliver",
    autoretry_for=(WebhookDeliveryFailed, OSError),
    retry_backoff=2,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=settings.WEBHOOK_MAX_RETRIES,
)
def webhook_deliver(webhook_id: int, event: str, payload: dict, delivery_id: str) -> int:
    """POST one signed event to one webhook; non-2xx and network errors are retried with
    exponential back-off (2, 4, 8 ... s, capped at 10 min). Short timeouts: nothing hangs."""
    import requests

    hook = Webhook.objects.filter(pk=webhook_id, active=True).first()
    if hook is None:
        return 0
    body = dumps(payload)
    headers = notifications.signed_headers(hook.secret, body, event=event, delivery_id=delivery_id)
    try:
        response = requests.post(
            hook.url, data=body, headers=headers, timeout=settings.WEBHOOK_TIMEOUT_S, allow_redirects=False
        )
    except requests.RequestException as exc:
        raise WebhookDeliveryFailed(f"webhook {hook.pk} ({hook.url}): {exc}") from exc
    if not 200 <= response.status_code < 300:
        raise WebhookDeliveryFailed(f"webhook {hook.pk} ({hook.url}) answered {response.status_code}")
    return response.status_code
