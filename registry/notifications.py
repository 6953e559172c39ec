"""Telling people and systems about promotion decisions: email and signed webhooks.

A webhook body is JSON. Its signature is HMAC-SHA256 over `"<timestamp>.<body>"` with
the webhook's secret, sent as `X-Modelhub-Signature: sha256=<hex>` beside
`X-Modelhub-Timestamp: <unix seconds>`. Because the timestamp is signed, a receiver that
refuses old timestamps (say, older than 5 minutes) cannot be fed a replayed delivery.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from django.conf import settings
from django.core.mail import send_mail

from registry.models import PromotionRequest, Webhook

SIGNATURE_HEADER = "X-Modelhub-Signature"
TIMESTAMP_HEADER = "X-Modelhub-Timestamp"
EVENT_HEADER = "X-Modelhub-Event"
DELIVERY_HEADER = "X-Modelhub-Delivery"
EVENTS = (
    "promotion.requested",
    "promotion.approved",
    "promotion.rejected",
    "promotion.cancelled",
    "promotion.rollback",
)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_verify(secret: str, headers: dict[str, str], body: bytes, *, max_age_s: int = 300) -> bool:
    """What a receiver does (documented in docs/governance.md; used by the tests)."""
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > max_age_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), headers.get(SIGNATURE_HEADER, ""))


def signed_headers(secret: str, body: bytes, *, event: str, delivery_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "User-Agent": "Modelhub-Webhook/1",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
    }


def promotion_payload(request: PromotionRequest, event: str) -> dict[str, Any]:
    version = request.version
    return {
        "event": event,
        "promotion": {
            "id": request.pk,
            "kind": request.kind,
            "model": version.model.name,
            "version": version.version,
            "from_stage": request.from_stage,
            "to_stage": request.to_stage,
            "status": request.status,
            "requester": request.requester.get_username() if request.requester else None,
            "reviewer": request.reviewer.get_username() if request.reviewer else None,
            "justification": request.justification,
            "comment": request.comment,
            "override_reason": request.override_reason,
            "gates": request.gates,
            "created_at": request.created_at.isoformat(),
            "decided_at": request.decided_at.isoformat() if request.decided_at else None,
        },
    }


def recipients(request: PromotionRequest) -> list[str]:
    """The requester and the model's watchers that have an email address."""
    people = [request.requester, *request.version.model.watchers.all()]
    emails = {person.email for person in people if person is not None and person.email and person.is_active}
    return sorted(emails)


def promotion_email(request: PromotionRequest, event: str) -> int:
    to = recipients(request)
    if not to:
        return 0
    version = request.version
    verb = event.split(".", 1)[1]
    subject = f"[Modelhub] {version.model.name} v{version.version} -> {request.to_stage}: {verb}"
    lines = [
        f"Promotion request #{request.pk}: {version.model.name} v{version.version} "
        f"{request.from_stage} -> {request.to_stage} is {request.status}.",
        f"Requested by: {request.requester.get_username() if request.requester else '-'}",
        f"Justification: {request.justification}",
    ]
    if request.reviewer:
        lines.append(f"Decided by: {request.reviewer.get_username()}")
    if request.comment:
        lines.append(f"Comment: {request.comment}")
    if request.override_reason:
        lines.append(f"Failed gates overridden: {request.override_reason}")
    lines.append("Gates:")
    lines += [f"  [{'ok' if g.get('ok') else 'FAILED'}] {g.get('name')}: {g.get('detail')}" for g in request.gates]
    return send_mail(subject, "\n".join(lines), settings.DEFAULT_FROM_EMAIL, to, fail_silently=False)


def webhooks_for(event: str, team_id: int | None) -> list[Webhook]:
    return [hook for hook in Webhook.objects.filter(active=True) if hook.wants(event, team_id)]
