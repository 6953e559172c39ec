"""A worker-pool deployment made through the API: Celery assigns it, an inference worker
warms it, the revision starts taking traffic, and predictions come back from the worker."""

from __future__ import annotations

import pytest

from inference.models import Deployment
from inference.routing_cache import edge_cache
from registry.models import ModelVersion
from tests.conftest import client_for, iris_bytes, upload
from tests.inference.conftest import ROWS
from tests.integration.pool.conftest import wait_until

pytestmark = [pytest.mark.integration]


def test_a_pool_deployment_set_through_the_api_serves_predictions_from_a_worker(
    celery_worker, inference_workers, transport, engineer
):
    worker = inference_workers()
    api = client_for(engineer)
    api.post("/api/v1/models/", {"name": "iris"}, format="json")
    upload(api, "iris", iris_bytes())  # validated by the real Celery worker
    wait_until(
        lambda: ModelVersion.objects.filter(model__name="iris", status="ready").exists(),
        timeout=90,
        what="validation",
    )
    assert api.post("/api/v1/endpoints/", {"name": "iris-pool"}, format="json").status_code == 201
    route = {"model": "iris", "version": 1, "role": "primary", "weight": 100, "placement": "worker_pool"}
    response = api.put("/api/v1/endpoints/iris-pool/traffic", {"routes": [route]}, format="json")
    assert response.status_code in (200, 201), response.content

    deployment = Deployment.objects.get(endpoint__name="iris-pool")
    wait_until(
        lambda: Deployment.objects.filter(pk=deployment.pk, state=Deployment.State.READY).exists(),
        timeout=90,
        what=f"the deployment to be warm on the worker\n{worker.output()}\n{celery_worker.output()}",
    )
    keys = api.post("/api/v1/endpoints/iris-pool/keys/", {"name": "app"}, format="json").json()
    edge_cache.clear()
    answer = api.generic(
        "POST",
        "/api/v1/endpoints/iris-pool/predict",
        b'{"instances": %s}' % str(ROWS).encode(),
        content_type="application/json",
        HTTP_X_API_KEY=keys["key"],  # the client already sends the user token as Authorization
    )
    assert answer.status_code == 200, answer.content
    assert answer.json()["outputs"]["label"] == [0, 2]
    assert Deployment.objects.get(pk=deployment.pk).provider == "CPUExecutionProvider"
