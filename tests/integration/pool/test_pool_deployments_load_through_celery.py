"""Celery tells the inference workers to load and unload worker-pool deployments."""

from __future__ import annotations

import hashlib

import pytest

from audit.models import AuditEvent
from config.health import READINESS_CHECKS
from inference import tasks
from inference.models import Deployment, Endpoint
from inference.pool import worker_pool_transport
from inference.selectors import deployment_spec
from registry import storage
from registry.models import ModelVersion, RegisteredModel
from tests.integration.pool.conftest import deployment_report, mlp_model, wait_until

pytestmark = [pytest.mark.integration]


def pool_deployment(tmp_path, *, name: str = "scores") -> Deployment:
    path = mlp_model(tmp_path / "mlp.onnx")
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    target = storage.artifact_path(sha)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    model = RegisteredModel.objects.create(name=f"{name}-model")
    version = ModelVersion.objects.create(
        model=model,
        version=1,
        artifact_sha256=sha,
        artifact_size=len(data),
        status=ModelVersion.Status.READY,
        signature={
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}],
            "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
        },
    )
    endpoint = Endpoint.objects.create(name=name)
    return Deployment.objects.create(
        endpoint=endpoint,
        model_version=version,
        placement=Deployment.Placement.WORKER_POOL,
        max_batch_size=16,
        max_queue_delay_ms=1,
    )


def test_a_celery_task_loads_a_pool_deployment_on_every_worker_and_marks_it_ready(
    celery_worker, inference_workers, transport, tmp_path
):
    deployment = pool_deployment(tmp_path)
    inference_workers(), inference_workers()

    assert tasks.deployment_pool_load.delay(deployment.pk).get(timeout=90) == "ready"

    deployment.refresh_from_db()
    assert deployment.state == Deployment.State.READY
    assert AuditEvent.objects.filter(action="deployment.ready", object_id=str(deployment.pk)).exists()
    spec = deployment_spec(deployment)
    wait_until(lambda: transport.warm_workers(spec) == 2, timeout=60, what="both workers to warm it")
    assert READINESS_CHECKS["workers"]()["ok"] is True

    # Twice is the same as once.
    assert tasks.deployment_pool_load.delay(deployment.pk).get(timeout=90) == "ready"
    assert AuditEvent.objects.filter(action="deployment.ready", object_id=str(deployment.pk)).count() == 1

    assert tasks.deployment_pool_unload.delay(deployment.pk).get(timeout=30) == "unloaded"
    wait_until(
        lambda: not deployment_report(spec) and transport.warm_workers(spec) == 0,
        timeout=30,
        what="the workers to unload it",
    )


def test_readiness_names_the_endpoint_whose_pool_primary_no_worker_holds_warm(transport, tmp_path, db):
    deployment = pool_deployment(tmp_path, name="fraud")
    Deployment.objects.filter(pk=deployment.pk).update(state=Deployment.State.READY)

    result = READINESS_CHECKS["workers"]()

    assert result["ok"] is False
    assert "fraud" in result["error"]


def test_a_deployment_no_worker_can_load_is_marked_failed_with_the_reason(inference_workers, transport, tmp_path, db):
    deployment = pool_deployment(tmp_path, name="broken")
    storage.artifact_path(deployment.model_version.artifact_sha256).write_bytes(b"not an onnx model")
    inference_workers()

    state = tasks.deployment_pool_load.apply(args=[deployment.pk], kwargs={"wait_s": 60}).get()

    assert state == "failed"
    deployment.refresh_from_db()
    assert "cannot load" in deployment.state_detail
    assert worker_pool_transport().warm_workers(deployment_spec(deployment)) == 0
