"""Monitoring's beat tasks and the notification task: thin, idempotent, take IDs."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from monitoring import alerts, drift, heartbeat, rollups

_NOTIFY_LIMIT = int(getattr(settings, "MONITORING_ALERT_NOTIFY_TIMEOUT_S", 5.0)) * 2 + 5


@shared_task(name="monitoring.rollup_minutes")
def rollup_minutes() -> int:
    return rollups.rollup_minutes()


@shared_task(name="monitoring.persist_samples")
def persist_samples() -> int:
    return rollups.persist_samples()


@shared_task(name="monitoring.compact_rollups")
def compact_rollups() -> dict[str, int]:
    return rollups.compact_rollups()


@shared_task(name="monitoring.compute_drift")
def compute_drift() -> int:
    return drift.drift_compute()


@shared_task(name="monitoring.reference_from_traffic")
def reference_from_traffic() -> int:
    return drift.reference_from_traffic()


@shared_task(name="monitoring.evaluate_alerts")
def evaluate_alerts() -> list[int]:
    return alerts.alerts_evaluate()


@shared_task(name="monitoring.scheduler_heartbeat")
def scheduler_heartbeat() -> str:
    return heartbeat.scheduler_heartbeat().isoformat()


@shared_task(name="monitoring.alert_notify", soft_time_limit=_NOTIFY_LIMIT, time_limit=_NOTIFY_LIMIT + 5)
def alert_notify(event_id: int) -> Any:
    return alerts.alert_notify(event_id=event_id)
