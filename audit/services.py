"""Writing audit events. Every service that changes state calls `audit_record`."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models

from audit.models import AuditEvent


def audit_record(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    action: str,
    obj: models.Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> AuditEvent:
    user = actor if actor is not None and actor.is_authenticated else None
    return AuditEvent.objects.create(
        actor=user,
        actor_name=user.get_username() if user is not None else "system",
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=str(obj)[:255],
        before=before or {},
        after=after or {},
        source_ip=source_ip,
        team_id=_team_id_of(obj),
    )


def _team_id_of(obj: models.Model) -> int | None:
    """The owning team of a model, version, promotion request or endpoint, if any.

    A model without a team of its own says how to find it with an `audit_team_id`
    property (the audit log knows none of the apps above it).
    """
    if hasattr(obj, "team_id"):
        return obj.team_id  # type: ignore[no-any-return]
    if hasattr(obj, "audit_team_id"):
        return obj.audit_team_id  # type: ignore[no-any-return]
    for parent in ("model", "version", "endpoint"):
        related = getattr(obj, parent, None)
        if isinstance(related, models.Model):
            return _team_id_of(related)
    return None
