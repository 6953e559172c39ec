"""Inference tasks: thin, take IDs, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from inference import pool_services
from inference.reconcile import pool_reconcile as reconcile


@shared_task(name="inference.deployment_pool_load", bind=True, max_retries=20)
def deployment_pool_load(self: object, deployment_id: int, wait_s: float = 60.0) -> str:
    """Assign a worker-pool deployment to the inference workers and wait until it is warm."""
    state = pool_services.deployment_pool_load(deployment_id=deployment_id, wait_s=wait_s)
    if state == "loading":
        raise self.retry(countdown=10)  # type: ignore[attr-defined]
    return state


@shared_task(name="inference.deployment_pool_unload")
def deployment_pool_unload(deployment_id: int) -> str:
    """Withdraw a deployment from the inference workers."""
    pool_services.deployment_pool_unload(deployment_id=deployment_id)
    return "unloaded"


@shared_task(name="inference.pool_reconcile")
def pool_reconcile() -> dict[str, object]:
    """Re-assign worker-pool deployments from the database and record which are really warm (beat)."""
    return reconcile().to_dict()
