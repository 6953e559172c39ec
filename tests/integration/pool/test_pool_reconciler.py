"""The reconciler (inference/reconcile.py) against real Redis and a real inference worker.

Redis restarted empty loses the assignment; a worker restarted loses its sessions. The
database still says what should run: one reconcile pass writes it back, records the
truth about the deployment (not `ready` while nothing serves it) and, once a worker holds
it warm again, marks it ready; a retired deployment's assignment is withdrawn.
"""

from __future__ import annotations

import pytest

from inference import pool_protocol as wire
from inference.models import Deployment
from inference.reconcile import pool_reconcile
from inference.selectors import deployment_spec
from tests.integration.pool.conftest import wait_until
from tests.integration.pool.test_pool_deployments_load_through_celery import pool_deployment

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _assigned(transport) -> set[str]:
    return {k.decode() for k in transport.client.hkeys(wire.assign_key("cpu"))}


def test_redis_lost_the_assignment_the_reconciler_writes_it_back_and_tells_the_truth_about_state(
    transport, inference_workers, tmp_path
):
    deployment = pool_deployment(tmp_path)
    Deployment.objects.filter(pk=deployment.pk).update(state=Deployment.State.READY)  # it served before
    key = f"d{deployment.pk}"
    assert wire.ASSIGN_MARKER not in _assigned(transport)  # Redis came back empty

    report = pool_reconcile(settle_s=0.5)

    assert report.assigned == [key]
    assert report.became_loading == [key]  # no worker holds it: not `ready` any more
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.LOADING
    assert "no live inference worker" in deployment.state_detail
    assert _assigned(transport) == {wire.ASSIGN_MARKER, key}
    spec = deployment_spec(deployment)
    assert wire.spec_from_json(transport.client.hget(wire.assign_key("cpu"), key)) == spec

    inference_workers()  # a worker (re)started: it loads what the assignment says
    wait_until(lambda: transport.warm_workers(spec) > 0, timeout=60, what="the worker to warm the deployment")
    report = pool_reconcile(settle_s=0.5)

    assert report.became_ready == [key] and not report.assigned
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.READY
    assert deployment.provider == "CPUExecutionProvider"

    Deployment.objects.filter(pk=deployment.pk).update(state=Deployment.State.RETIRED)
    report = pool_reconcile(settle_s=0.5)

    assert report.withdrawn == [key]
    assert _assigned(transport) == {wire.ASSIGN_MARKER}  # "nothing", not "unknown": workers unload it
    wait_until(lambda: transport.warm_workers(spec) == 0, timeout=30, what="the worker to unload it")


def test_a_weight_change_does_not_rewrite_the_assignment(transport, tmp_path):
    deployment = pool_deployment(tmp_path)
    pool_reconcile(settle_s=0)
    Deployment.objects.filter(pk=deployment.pk).update(weight=40, role=Deployment.Role.CANARY)

    report = pool_reconcile(settle_s=0)

    assert report.assigned == []  # a rewrite would make every worker reload the session


def test_pinning_rewrites_the_assignment_so_workers_stop_evicting_it(transport, tmp_path):
    deployment = pool_deployment(tmp_path)
    pool_reconcile(settle_s=0)
    key = f"d{deployment.pk}"
    assert wire.spec_from_json(transport.client.hget(wire.assign_key("cpu"), key)).pinned is False  # evictable
    Deployment.objects.filter(pk=deployment.pk).update(pinned=True)

    report = pool_reconcile(settle_s=0)

    assert report.assigned == [key]
    assert wire.spec_from_json(transport.client.hget(wire.assign_key("cpu"), key)).pinned is True


def test_a_deployment_a_worker_holds_cold_is_not_moved_back_to_loading(transport, tmp_path):
    import time

    deployment = pool_deployment(tmp_path)
    Deployment.objects.filter(pk=deployment.pk).update(state=Deployment.State.READY)
    key = f"d{deployment.pk}"
    # A live worker holds it assigned but unloaded under its memory budget (what its heartbeat writes).
    transport.client.zadd(wire.cold_key(key), {"worker-1": time.time() + 60})

    report = pool_reconcile(settle_s=0.5)

    assert key not in report.became_loading
    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.READY
    transport.client.delete(wire.cold_key(key))


def test_without_redis_the_reconciler_does_nothing(settings):
    settings.REDIS_URL = ""
    assert pool_reconcile().skipped
