"""Evidence attached to a promotion request for its approver (a compare job's diff report, ...).

The registry stores what it is shown, not what produced it: each entry is plain JSON
(kind, id, url, summary, who attached it and when), written by the app that made the
evidence (inference.batch for compare jobs), so the registry imports nothing above it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from config.errors import Conflict
from registry.models import PromotionRequest
from registry.selectors import promotion_get


class EvidenceRefused(Conflict):
    code = "evidence_refused"


def promotion_evidence_attach(
    *, request_id: int, user: Any, kind: str, ref: int, url: str, summary: str, source_ip: str | None = None
) -> PromotionRequest:
    """Add one entry to a pending request the user may see (404 otherwise); once per (kind, ref)."""
    promotion_get(request_id=request_id, user=user)  # team scope: another team's request is a 404
    with transaction.atomic():
        locked = PromotionRequest.objects.select_for_update().get(pk=request_id)
        if locked.status != PromotionRequest.Status.PENDING:
            raise EvidenceRefused(f"request #{locked.pk} is {locked.status}; evidence goes to a pending request")
        entries = [e for e in locked.evidence if (e.get("kind"), e.get("id")) != (kind, ref)]
        entry = {
            "kind": kind,
            "id": ref,
            "url": url,
            "summary": summary,
            "attached_by": user.get_username() if getattr(user, "is_authenticated", False) else "system",
            "attached_at": timezone.now().isoformat(),
        }
        locked.evidence = [*entries, entry]
        locked.save(update_fields=["evidence"])
        audit_record(actor=user, action="promotion.evidence", obj=locked, after=entry, source_ip=source_ip)
    return promotion_get(request_id=request_id, user=user)
