"""The worker pool's reconciler: make Redis say what the database wants, and the database say what runs.

The database is the desired state: every worker-pool deployment in state `ready` or
`loading` should be assigned to the inference workers of its device class. Redis holds
only a copy of it (`mh:assign:{device}`, see inference/pool_protocol.py) and what the
workers report (`mh:warm:{key}` from their heartbeats). Redis restarted without
persistence loses the copy; a worker restarted loses what it had loaded; a Celery
`deployment_pool_load` task is lost with Redis. One pass of `pool_reconcile`, run by
beat every MODELHUB_POOL_RECONCILE_INTERVAL_S (workers/celery.py), repairs all of them:

1. Assign: every desired deployment whose entry is missing (or differs in what a worker
   loads, or in `pinned`: the desired state says whether a deployment is evictable) is
   written back, with the `_desired` marker; entries of deployments the
   database says are retired, failed or gone are removed (workers unload them).
2. Record the truth (a deployment a live worker holds cold, unloaded under its memory
   budget and loaded on the next request, counts as served like a warm one): a
   `loading` deployment warm on a live worker becomes `ready` (with
   the provider it really got), one every reporting worker failed becomes `failed`; a
   `ready` one that no live worker holds warm for `settle_s` (longer than a heartbeat
   interval, so a worker that just reconnected is not counted as gone) becomes `loading`
   with the reason, so its endpoint stops routing to it (503 + Retry-After, or the last
   fully ready revision) until a worker reports it warm again and the next pass flips it
   back to `ready`.

Idempotent and short (a few queries and one Redis pipeline; at most `settle_s` of waiting
when something is cold), so it may run on any number of Celery workers at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from inference import pool_protocol as wire
from inference.loading import deployment_state_set
from inference.models import Deployment
from inference.pool import redis_client
from inference.pool_services import worker_load_failure, worker_provider
from inference.selectors import deployment_spec
from inference.spec import DeploymentSpec

log = logging.getLogger("modelhub.reconcile")

# What a worker needs to load the same session; role and weight changes need no reload.
# `pinned` too: it is the desired state's "evictable" flag (False: a worker may unload the
# deployment to make room under its memory budget), applied by workers without a reload.
_LOAD_FIELDS = (
    "deployment_id",
    "artifact_sha256",
    "artifact_path",
    "device",
    "max_batch_size",
    "max_queue_delay_ms",
    "pinned",
)
_DESIRED_STATES = (Deployment.State.READY, Deployment.State.LOADING)


@dataclass
class ReconcileReport:
    assigned: list[str] = field(default_factory=list)  # deployment keys written back to Redis
    withdrawn: list[str] = field(default_factory=list)  # assignments removed (retired, failed, gone)
    became_ready: list[str] = field(default_factory=list)
    became_loading: list[str] = field(default_factory=list)
    became_failed: list[str] = field(default_factory=list)
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v}


def _same_load(raw: bytes | None, spec: DeploymentSpec) -> bool:
    if raw is None:
        return False
    try:
        current = wire.spec_from_json(raw)
    except Exception:  # noqa: BLE001 - a foreign or broken entry is rewritten
        return False
    return all(getattr(current, name) == getattr(spec, name) for name in _LOAD_FIELDS)


def _assign(client: Any, specs: dict[str, DeploymentSpec], report: ReconcileReport) -> None:
    """Step 1: Redis's assignment hashes follow the database."""
    devices = sorted(set(Deployment.Device.values) | {s.device for s in specs.values()})
    pipe = client.pipeline(transaction=False)
    for device in devices:
        pipe.hgetall(wire.assign_key(device))
    current = dict(zip(devices, pipe.execute(), strict=True))
    # Entries the database does not want: withdraw only those whose row says so (retired,
    # failed, deleted). An entry is written after its row commits, so a row read now sees it.
    extra: dict[str, list[str]] = {}
    for device, entries in current.items():
        for raw_key in entries:
            key = raw_key.decode()
            if not key.startswith("_") and key not in specs:
                extra.setdefault(device, []).append(key)
    ids = {int(k[1:]) for keys in extra.values() for k in keys if k[1:].isdigit()}
    alive = set(
        Deployment.objects.filter(pk__in=ids, state__in=_DESIRED_STATES, placement=Deployment.Placement.WORKER_POOL)
        .values_list("pk", flat=True)
        .iterator()
    )
    pipe = client.pipeline(transaction=True)
    for device in devices:
        entries = current[device]
        writes: dict[str, bytes | int] = {
            key: wire.spec_to_json(spec)
            for key, spec in specs.items()
            if spec.device == device and not _same_load(entries.get(key.encode()), spec)
        }
        if writes or wire.ASSIGN_MARKER.encode() not in entries:
            writes[wire.ASSIGN_MARKER] = 1  # "this is the desired state", even when it is empty
            pipe.hset(wire.assign_key(device), mapping=writes)
        report.assigned += [k for k in writes if k != wire.ASSIGN_MARKER]
        gone = [k for k in extra.get(device, []) if not (k[1:].isdigit() and int(k[1:]) in alive)]
        if gone:
            pipe.hdel(wire.assign_key(device), *gone)
            report.withdrawn += gone
    pipe.execute()


def _warm(client: Any, keys: list[str]) -> dict[str, int]:
    """Live workers serving each deployment: holding it warm, or (evictable, under a
    memory budget) holding it cold, to load on its next request."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.zcount(wire.warm_key(key), now, "+inf")
        pipe.zcount(wire.cold_key(key), now, "+inf")
    counts = pipe.execute()
    return {key: int(counts[2 * i]) + int(counts[2 * i + 1]) for i, key in enumerate(keys)}


def pool_reconcile(*, settle_s: float = 3.0, client: Any = None) -> ReconcileReport:
    """One reconcile pass over every worker-pool deployment (see the module's docstring)."""
    report = ReconcileReport()
    if client is None:
        if not (getattr(settings, "MODELHUB_POOL_REDIS_URL", "") or settings.REDIS_URL):
            report.skipped = "no Redis: worker-pool placement is off"
            return report
        client = redis_client()
    deployments = list(
        Deployment.objects.filter(placement=Deployment.Placement.WORKER_POOL, state__in=_DESIRED_STATES)
        .select_related("endpoint", "model_version__model")
        .order_by("pk")
    )
    specs = {f"d{d.pk}": deployment_spec(d) for d in deployments}
    states = {f"d{d.pk}": d.state for d in deployments}
    # Pipeline model steps placed on the pool (keys d-<version id>, no Deployment row):
    # assigned like deployments, withdrawn once no current route uses them.
    from inference.pipelines.serving import pool_step_specs  # the pipelines package sits above

    _assign(client, {**pool_step_specs(), **specs}, report)
    if not specs:
        return report

    warm = _warm(client, list(specs))
    cold = [k for k, n in warm.items() if n == 0 and states[k] == Deployment.State.READY]
    deadline = time.monotonic() + settle_s
    while cold and time.monotonic() < deadline:
        time.sleep(0.25)
        now_warm = _warm(client, cold)
        warm.update(now_warm)
        cold = [k for k in cold if now_warm[k] == 0]
    for key, spec in specs.items():
        state = states[key]
        if warm[key] > 0 and state == Deployment.State.LOADING:
            deployment_state_set(
                deployment_id=spec.deployment_id, state=Deployment.State.READY, provider=worker_provider(spec)
            )
            report.became_ready.append(key)
        elif warm[key] == 0 and state == Deployment.State.LOADING:
            failure = worker_load_failure(spec)
            if failure:
                deployment_state_set(
                    deployment_id=spec.deployment_id, state=Deployment.State.FAILED, detail=failure[:2000]
                )
                report.became_failed.append(key)
        elif key in cold:
            detail = (
                f'no live inference worker for device "{spec.device}" holds it warm '
                "(a worker restarted, or Redis lost its state); re-assigned, it serves again once a "
                "worker reports it warm"
            )
            deployment_state_set(deployment_id=spec.deployment_id, state=Deployment.State.LOADING, detail=detail)
            report.became_loading.append(key)
    changes = report.to_dict()
    if changes:
        log.info("worker pool reconciled: %s", changes)
    return report
