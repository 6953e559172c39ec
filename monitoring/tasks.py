"""Monitoring's beat tasks and the notification task: thin, idempotent, take IDs."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from monitoring import services

_NOTIFY_LIMIT = int(getattr(settings, "MONITORING_ALERT_NOTIFY_TIMEOUT_S", 5.0)) * 2 + 5


@shared_task(name="monitoring.rollup_minutes")
def rollup_minutes() -> int:
    return services.rollup_minutes()


@shared_task(name="monitoring.persist_samples")
def persist_samples() -> int:
    return services.persist_samples()


@shared_task(name="monitoring.compact_rollups")
def compact_rollups() -> dict[str, int]:
    return services.compact_rollups()


@shared_task(name="monitoring.compute_drift")
def compute_drift() -> int:
    return services.drift_compute()


@shared_task(name="monitoring.reference_from_traffic")
def reference_from_traffic() -> int:
    return services.reference_from_traffic()


@shared_task(name="monitoring.evaluate_alerts")
def evaluate_alerts() -> list[int]:
    return services.alerts_evaluate()


@shared_task(name="monitoring.scheduler_heartbeat")
def scheduler_heartbeat() -> str:
    return services.scheduler_heartbeat().isoformat()


@shared_task(name="monitoring.alert_notify", soft_time_limit=_NOTIFY_LIMIT, time_limit=_NOTIFY_LIMIT + 5)
def alert_notify(event_id: int) -> Any:
    return services.alert_notify(event_id=event_id)
