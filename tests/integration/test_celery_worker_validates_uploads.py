from __future__ import annotations

import os
import signal

import pytest

from registry.models import ModelVersion
from tests import onnx_models
from tests.conftest import client_for, iris_bytes, upload
from tests.integration.conftest import wait_for
from workers.celery import app as celery_app

pytestmark = [pytest.mark.integration]


def status_of(version_id):
    return ModelVersion.objects.values_list("status", flat=True).get(pk=version_id)


def test_a_real_worker_validates_an_upload_on_postgresql(celery_worker, engineer):
    api = client_for(engineer)
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    response = upload(api, "iris", iris_bytes())
    assert response.status_code == 201
    assert response.json()["status"] == "pending"  # answered before validation ran
    version_id = ModelVersion.objects.get().pk
    wait_for(lambda: status_of(version_id) in ("ready", "failed"), timeout=90, what="validation by the worker")
    version = ModelVersion.objects.get()
    assert version.status == "ready", (version.validation_report, celery_worker.output())
    assert version.signature["inputs"][0]["name"] == "X"
    assert "model_version_validate" in celery_worker.output()


def test_a_pool_child_killed_mid_validation_does_not_lose_the_task(celery_worker, engineer):
    """acks_late + reject_on_worker_lost: the task comes back and the version still gets decided."""
    api = client_for(engineer)
    api.post("/api/v1/models/", {"name": "slow"}, format="json")
    upload(api, "slow", onnx_models.slow_model())
    version_id = ModelVersion.objects.get().pk
    wait_for(lambda: status_of(version_id) == "validating", timeout=60, what="validation to start")

    def busy_child_pid():
        active = (
            celery_app.control.inspect(
                destination=[celery_worker.name.replace("%h", os.uname().nodename)], timeout=2
            ).active()
            or {}
        )
        pids = [task["worker_pid"] for tasks in active.values() for task in tasks]
        return pids[0] if pids else None

    pid = wait_for(busy_child_pid, timeout=30, what="the pool child running the task")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: status_of(version_id) in ("ready", "failed"), timeout=120, what="the re-delivered validation")
    assert status_of(version_id) == "ready", celery_worker.output()
    assert "WorkerLostError" in celery_worker.output() or "lost" in celery_worker.output().lower()
