"""Rollout tasks: thin, safe to run twice. Their names predate the move out of inference/
(the beat schedule and monitoring's alert rollback enqueue them by these names)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from rollouts import services as rollouts


@shared_task(name="inference.rollouts_advance")
def rollouts_advance() -> dict[int, str]:
    """Beat: one evaluation of every running rollout (each under its row lock: safe twice)."""
    return rollouts.rollouts_advance()


@shared_task(name="inference.alert_rollback")
def alert_rollback(endpoint_id: int, alert: dict[str, Any]) -> str:
    """An alert rule with the rollback action fired: roll back the rollout or the canary."""
    return rollouts.alert_rollback(endpoint_id=endpoint_id, alert=alert)
