"""Loading deployments: in-process ones are loaded and warmed here, worker-pool ones are asked
of the pool; `deployment_state_set` records readiness."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from audit.services import audit_record
from config import queue
from inference import routing_cache
from inference.models import Deployment
from inference.selectors import deployment_spec
from inference.transport import transport_for

log = logging.getLogger(__name__)


def deployments_load(*, deployment_ids: list[int]) -> None:
    """Load and warm in-process deployments here (READY/FAILED); ask the pool for the others."""
    for deployment in Deployment.objects.filter(pk__in=deployment_ids).select_related(
        "endpoint", "model_version__model"
    ):
        spec = deployment_spec(deployment)
        if deployment.placement == Deployment.Placement.WORKER_POOL:
            transaction.on_commit(lambda spec=spec: _pool_ask(spec))
            continue
        transport = transport_for(spec)
        try:
            transport.ensure_loaded(spec)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            log.warning("deployment %s failed to load: %s", deployment.pk, exc)
            deployment_state_set(deployment_id=deployment.pk, state=Deployment.State.FAILED, detail=str(exc)[:2000])
            continue
        provider = getattr(transport, "provider", lambda s: "")(spec)
        deployment_state_set(deployment_id=deployment.pk, state=Deployment.State.READY, provider=provider)


def _pool_ask(spec: Any) -> None:
    """Assign a worker-pool deployment, then let a Celery task mark it ready once warm."""
    try:
        transport_for(spec).ensure_loaded(spec)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not ask the worker pool to load %s: %s", spec.label, exc)
        deployment_state_set(deployment_id=spec.deployment_id, state=Deployment.State.FAILED, detail=str(exc)[:2000])
        return
    if queue.eager():
        # Waiting for a worker inside this request would block it; without a Celery
        # worker nothing marks the deployment ready (pool placement needs the full stack).
        log.warning("%s stays loading: worker-pool deployments need a Celery worker", spec.label)
        return
    queue.enqueue("inference.deployment_pool_load", args=[spec.deployment_id])


@transaction.atomic
def deployment_state_set(*, deployment_id: int, state: str, provider: str = "", detail: str = "") -> Deployment | None:
    """Record a deployment's readiness (the pool calls this when a worker reports it warm)."""
    deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
    if deployment is None:
        return None
    if state not in Deployment.State.values:
        raise ValueError(f"unknown deployment state {state!r}")
    if (
        deployment.state == state
        and (not provider or provider == deployment.provider)
        and detail == deployment.state_detail
    ):
        return deployment
    before = {"state": deployment.state, "provider": deployment.provider}
    deployment.state, deployment.state_detail = state, detail
    fields = ["state", "state_detail", "updated_at"]
    if provider:
        deployment.provider = provider
        fields.append("provider")
    deployment.save(update_fields=fields)
    audit_record(
        actor=None,
        action=f"deployment.{state}",
        obj=deployment,
        before=before,
        after={"state": state, "provider": deployment.provider, "detail": detail},
    )
    routing_cache.changed()
    return deployment
