"""Rules for worker-pool deployments: assign to workers, wait for warm, record the state.

The Celery tasks in inference/tasks.py call these with IDs. Loading is idempotent: the
assignment is a hash entry (`mh:assign:{device}`) that every inference worker of the
device class reconciles with, so running a task twice, or a worker joining later, ends
in the same place.
"""

from __future__ import annotations

import time

from django.db import transaction

from inference.models import Deployment
from inference.pool import WorkerPoolTransport, worker_pool_transport, worker_status
from inference.transport import DeploymentSpec
from registry import storage
from registry.audit import audit_record


def deployment_spec_build(deployment: Deployment) -> DeploymentSpec:
    """The plain-value spec of a deployment row (what crosses into workers)."""
    version = deployment.model_version
    return DeploymentSpec(
        deployment_id=deployment.pk,
        endpoint=deployment.endpoint.name,
        model=version.model.name,
        version=version.version,
        role=deployment.role,
        weight=deployment.weight,
        artifact_sha256=version.artifact_sha256,
        artifact_path=str(storage.artifact_path(version.artifact_sha256)),
        signature=version.signature or {},
        device=deployment.device,
        placement=deployment.placement,
        max_batch_size=deployment.max_batch_size,
        max_queue_delay_ms=deployment.max_queue_delay_ms,
    )


def _load_failure(spec: DeploymentSpec) -> str:
    """A worker's load error for this deployment, if every reporting worker failed it."""
    errors = []
    for beat in worker_status():
        report = beat.get("deployments", {}).get(spec.key)
        if report is None:
            continue
        if report.get("state") != "failed":
            return ""
        errors.append(f'{beat.get("worker")}: {report.get("error")}')
    return "; ".join(errors)


def _set_state(deployment_id: int, state: str, detail: str) -> Deployment:
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        before = {"state": deployment.state, "state_detail": deployment.state_detail}
        if (deployment.state, deployment.state_detail) != (state, detail):
            deployment.state, deployment.state_detail = state, detail
            deployment.save(update_fields=["state", "state_detail", "updated_at"])
            audit_record(
                actor=None, action=f"deployment.pool_{state}", obj=deployment,
                before=before, after={"state": state, "state_detail": detail},
            )
    return deployment


def deployment_pool_load(
    *, deployment_id: int, wait_s: float = 60.0, transport: WorkerPoolTransport | None = None
) -> str:
    """Assign a worker-pool deployment and wait until a worker reports it warm.

    Returns the deployment's state: ready once at least one live worker holds it warm;
    failed when every worker that tried reported a load error; loading when no worker
    answered within `wait_s` (the task retries later).
    """
    deployment = Deployment.objects.select_related("endpoint", "model_version__model").get(pk=deployment_id)
    if deployment.placement != Deployment.Placement.WORKER_POOL:
        return deployment.state
    if deployment.state == Deployment.State.RETIRED:
        return deployment.state
    spec = deployment_spec_build(deployment)
    transport = transport or worker_pool_transport()
    transport.ensure_loaded(spec)
    deadline = time.monotonic() + wait_s
    while True:
        if transport.warm_workers(spec) > 0:
            return _set_state(deployment_id, Deployment.State.READY, "").state
        failure = _load_failure(spec)
        if failure:
            return _set_state(deployment_id, Deployment.State.FAILED, failure[:2000]).state
        if time.monotonic() >= deadline:
            return _set_state(
                deployment_id, Deployment.State.LOADING,
                f'no inference worker for device "{spec.device}" reported it warm within {wait_s:.0f} s',
            ).state
        time.sleep(0.25)


def deployment_pool_unload(*, deployment_id: int, transport: WorkerPoolTransport | None = None) -> None:
    """Withdraw a deployment from the workers (idempotent; the row's state is left as is)."""
    deployment = Deployment.objects.select_related("endpoint", "model_version__model").get(pk=deployment_id)
    (transport or worker_pool_transport()).unload(deployment_spec_build(deployment))


def pool_readiness() -> dict[str, object]:
    """Readiness check: every worker-pool primary that takes traffic is warm on a worker."""
    deployments = (
        Deployment.objects.filter(
            placement=Deployment.Placement.WORKER_POOL,
            role=Deployment.Role.PRIMARY,
            state=Deployment.State.READY,
            weight__gt=0,
        )
        .select_related("endpoint", "model_version__model")
    )
    transport = worker_pool_transport()
    cold = []
    checked = 0
    try:
        for deployment in deployments:
            checked += 1
            spec = deployment_spec_build(deployment)
            if transport.warm_workers(spec) == 0:
                cold.append(f"{spec.endpoint} ({spec.label})")
    except Exception as exc:  # Redis down: not ready, with the reason
        return {"ok": False, "error": f"worker pool unreachable: {str(exc)[:200]}"}
    if cold:
        return {"ok": False, "error": "no warm inference worker for endpoint " + ", ".join(cold)}
    return {"ok": True, "pool_primaries": checked}
