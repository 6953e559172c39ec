"""Rules for worker-pool deployments: assign to workers, wait for warm, record the state.

The Celery tasks in inference/tasks.py call these with IDs. Loading is idempotent: the
assignment is a hash entry (`mh:assign:{device}`) that every inference worker of the
device class reconciles with, so running a task twice, or a worker joining later, ends
in the same place.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.db import transaction

from audit.services import audit_record
from inference.models import Deployment
from inference.pool import WorkerPoolTransport, worker_pool_transport, worker_status
from inference.selectors import deployment_spec
from inference.spec import DeploymentSpec


def worker_provider(spec: DeploymentSpec) -> str:
    """The execution provider a warm worker's session really got for this deployment."""
    for beat in worker_status():
        report = beat.get("deployments", {}).get(spec.key)
        if report and report.get("ready"):
            return str(report.get("provider", ""))
    return ""


def worker_load_failure(spec: DeploymentSpec) -> str:
    """A worker's load error for this deployment, if every reporting worker failed it."""
    errors = []
    for beat in worker_status():
        report = beat.get("deployments", {}).get(spec.key)
        if report is None:
            continue
        if report.get("state") != "failed":
            return ""
        errors.append(f"{beat.get('worker')}: {report.get('error')}")
    return "; ".join(errors)


def _set_state(deployment_id: int, state: str, detail: str, provider: str = "") -> Deployment:
    # The serving edge's service records state + provider, audits and tells every web
    # process's routing cache; use it where it exists.
    try:
        from inference.loading import deployment_state_set  # optional, as the comment above says
    except ImportError:
        deployment_state_set = None
    if deployment_state_set is not None:
        done = deployment_state_set(deployment_id=deployment_id, state=state, provider=provider, detail=detail)
        if done is not None:
            return done
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        before = {"state": deployment.state, "state_detail": deployment.state_detail}
        if (deployment.state, deployment.state_detail) != (state, detail):
            deployment.state, deployment.state_detail = state, detail
            deployment.save(update_fields=["state", "state_detail", "updated_at"])
            audit_record(
                actor=None,
                action=f"deployment.{state}",
                obj=deployment,
                before=before,
                after={"state": state, "state_detail": detail},
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
    spec = deployment_spec(deployment)
    transport = transport or worker_pool_transport()
    transport.ensure_loaded(spec)
    deadline = time.monotonic() + wait_s
    while True:
        if transport.ready(spec):  # warm on a live worker, or held cold there (evictable, memory budget)
            return _set_state(deployment_id, Deployment.State.READY, "", provider=worker_provider(spec)).state
        failure = worker_load_failure(spec)
        if failure:
            return _set_state(deployment_id, Deployment.State.FAILED, failure[:2000]).state
        if time.monotonic() >= deadline:
            return _set_state(
                deployment_id,
                Deployment.State.LOADING,
                f'no inference worker for device "{spec.device}" reported it warm within {wait_s:.0f} s',
            ).state
        time.sleep(0.25)


def deployment_pool_unload(*, deployment_id: int, transport: WorkerPoolTransport | None = None) -> None:
    """Withdraw a deployment from the workers (idempotent; the row's state is left as is)."""
    deployment = Deployment.objects.select_related("endpoint", "model_version__model").get(pk=deployment_id)
    (transport or worker_pool_transport()).unload(deployment_spec(deployment))


def pool_readiness() -> dict[str, object]:
    """Readiness check: every worker-pool primary that takes traffic is warm on a worker."""
    deployments = Deployment.objects.filter(
        placement=Deployment.Placement.WORKER_POOL,
        role=Deployment.Role.PRIMARY,
        state=Deployment.State.READY,
        weight__gt=0,
    ).select_related("endpoint", "model_version__model")
    transport = worker_pool_transport()
    cold = []
    checked = 0
    try:
        for deployment in deployments:
            checked += 1
            spec = deployment_spec(deployment)
            if transport.warm_workers(spec) == 0:
                cold.append(f"{spec.endpoint} ({spec.label})")
    except Exception as exc:  # Redis down: not ready, with the reason
        return {"ok": False, "error": f"worker pool unreachable: {str(exc)[:200]}"}
    if cold:
        return {"ok": False, "error": "no warm inference worker for endpoint " + ", ".join(cold)}
    return {"ok": True, "pool_primaries": checked}


def deployment_warmup(deployments: Iterable[Deployment]) -> dict[int, dict[str, int]]:
    """Warm-up progress of worker-pool deployments, read from the workers' last heartbeats
    (one Redis round trip): per deployment id, how many live workers of its device class
    there are and how many of them report it loading, loaded (warm) or failed. In-process
    deployments are left out; so is everything when the pool cannot be reached."""
    pooled = [d for d in deployments if d.placement == Deployment.Placement.WORKER_POOL]
    if not pooled:
        return {}
    try:
        beats = worker_status()
    except Exception:  # Redis down: no progress to show, the state column still says loading
        return {}
    out: dict[int, dict[str, int]] = {}
    for deployment in pooled:
        spec = deployment_spec(deployment)
        counts = {"workers": 0, "loading": 0, "loaded": 0, "failed": 0}
        for beat in beats:
            if beat.get("device") != spec.device:
                continue
            counts["workers"] += 1
            report = beat.get("deployments", {}).get(spec.key)
            if report is None:
                continue
            if report.get("ready"):
                counts["loaded"] += 1
            elif report.get("state") == "failed":
                counts["failed"] += 1
            else:
                counts["loading"] += 1
        out[deployment.pk] = counts
    return out
