"""An endpoint's monitoring settings: sample rates, payload size, redacted fields."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from audit.services import audit_record
from config.errors import DomainError, NotFound
from inference.models import Endpoint
from monitoring.models import MonitoringSettings

User = AbstractBaseUser | AnonymousUser | None


def _rate(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0 <= value <= 1:
        raise DomainError(f"{name} must be a number from 0 to 1, got {value!r}", details={"field": name})
    return float(value)


@transaction.atomic
def monitoring_settings_update(
    *, endpoint_name: str, changes: Mapping[str, Any], user: User, source_ip: str | None = None
) -> MonitoringSettings:
    endpoint = Endpoint.objects.filter(name=endpoint_name).first()
    if endpoint is None:
        raise NotFound(f"no endpoint named {endpoint_name!r}")
    row, _ = MonitoringSettings.objects.select_for_update().get_or_create(endpoint=endpoint)
    before = monitoring_settings_dict(row)
    allowed = {"payload_sample_rate", "drift_sample_rate", "max_payload_bytes", "redact_fields"}
    unknown = set(changes) - allowed
    if unknown:
        raise DomainError(f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(sorted(allowed))}")
    for name in ("payload_sample_rate", "drift_sample_rate"):
        if name in changes:
            setattr(row, name, _rate(name, changes[name]))
    if "max_payload_bytes" in changes:
        value = changes["max_payload_bytes"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1024 * 1024:
            raise DomainError(f"max_payload_bytes must be an integer from 1 to 1048576, got {value!r}")
        row.max_payload_bytes = value
    if "redact_fields" in changes:
        value = changes["redact_fields"]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise DomainError("redact_fields must be a list of field names")
        row.redact_fields = value
    row.save()
    audit_record(
        actor=user,
        action="monitoring_settings.update",
        obj=row,
        before=before,
        after=monitoring_settings_dict(row),
        source_ip=source_ip,
    )
    return row


def monitoring_settings_dict(row: MonitoringSettings) -> dict[str, Any]:
    return {
        "endpoint": row.endpoint.name,
        "payload_sample_rate": row.payload_sample_rate,
        "drift_sample_rate": row.drift_sample_rate,
        "max_payload_bytes": row.max_payload_bytes,
        "redact_fields": list(row.redact_fields or []),
    }
