"""A pipeline's model steps on the worker pool (issue #14: model steps "in process or on
the worker pool"): a pipeline route of placement worker_pool runs its model and ensemble
steps on a real inference worker process over real Redis, with the pool's error model."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from inference import endpoints, traffic
from inference import pool_protocol as wire
from inference.pipelines import executor
from inference.pipelines import services as pipeline_services
from inference.reconcile import pool_reconcile
from inference.transport import in_process_transport
from tests.inference.conftest import fresh_edge_cache, version_add  # noqa: F401 - the autouse fixture
from tests.integration.pool.conftest import deployment_report, wait_until
from tests.onnx_models import tiny_classifier_model

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

X = [[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0]]


def _bytes(seed: int) -> bytes:
    return tiny_classifier_model(features=4, seed=seed).SerializeToString()


def _spec(*, step_placement: str | None = None) -> dict[str, Any]:
    single: dict[str, Any] = {
        "name": "first",
        "kind": "model",
        "model": "fraud",
        "version": 1,
        "inputs": {"x": "features"},
        "outputs": {"probabilities": "p1"},
    }
    if step_placement:
        single["placement"] = step_placement
    return {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": ["p1", "proba"],
        "steps": [
            single,
            {
                "name": "both",
                "kind": "ensemble",
                "members": [{"model": "fraud", "version": 1}, {"model": "fraud", "version": 2}],
                "combine": "mean",
                "inputs": {"x": "features"},
                "outputs": {"probabilities": "proba"},
            },
        ],
    }


def _serve(engineer: Any, name: str, spec: dict[str, Any], **route: Any) -> Any:
    pipeline_services.pipeline_create(name="fraud-pipe", spec=spec, user=engineer)
    endpoint = endpoints.endpoint_create(name=name, user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[{"pipeline": "fraud-pipe", "version": 1, "role": "primary", "weight": 100, **route}],
        user=engineer,
    )
    return endpoint


def _pool_specs() -> list[Any]:
    version = pipeline_services.pipeline_version_get(name="fraud-pipe", version=1, team_id=None, where="test")
    graph = pipeline_services.compile_version(version)
    return list({s.key: s for s in executor.step_specs(graph, "worker_pool") if s.placement == "worker_pool"}.values())


def _predict(client: Any, name: str) -> Any:
    body = orjson.dumps({"inputs": {"features": X}})
    return client.post(f"/api/v1/endpoints/{name}/predict", body, content_type="application/json")


def _expected(seed: int) -> np.ndarray:
    return ort.InferenceSession(_bytes(seed)).run(["probabilities"], {"x": np.array(X, np.float32)})[0]


@pytest.fixture
def two_versions(engineer: Any) -> list[Any]:
    return [version_add("fraud", _bytes(seed), engineer) for seed in (11, 21)]


def test_a_worker_pool_route_runs_its_model_steps_on_the_inference_worker(
    client, engineer, two_versions, transport, inference_workers
) -> None:
    _serve(engineer, "fraud-pool", _spec(), placement="worker_pool")
    specs = _pool_specs()
    assert sorted({s.key for s in specs}) == sorted(f"d-{v.pk}" for v in two_versions)
    assigned = {k.decode() for k in transport.client.hkeys(wire.assign_key("cpu"))}
    assert {s.key for s in specs} <= assigned  # the route's save assigned them to the workers
    worker = inference_workers()
    for spec in specs:
        wait_until(
            lambda s=spec: transport.ready(s), timeout=60, what=f"the worker to warm {spec.key}:\n{worker.output()}"
        )

    response = _predict(client, "fraud-pool")

    assert response.status_code == 200, response.content
    outputs = response.json()["outputs"]
    np.testing.assert_allclose(outputs["p1"], _expected(11), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["proba"], (_expected(11) + _expected(21)) / 2, rtol=1e-5, atol=1e-6)
    # It ran on the worker (its heartbeat counts the rows), not in this process.
    v1, v2 = (f"d-{v.pk}" for v in two_versions)
    reports = wait_until(
        lambda: (
            (r := {s.key: deployment_report(s) for s in specs})
            and all(x and x[0].get("batch_rows", 0) > 0 for x in r.values())
            and r
        ),
        timeout=10,
        what="the heartbeat to count the pipeline's rows",
    )
    assert reports[v1][0]["batch_rows"] == 4 and reports[v2][0]["batch_rows"] == 2  # v1: the step and the member
    assert in_process_transport().repository.find(v1) is None
    assert in_process_transport().repository.find(v2) is None


@pytest.mark.django_db(transaction=True)
def test_the_asgi_front_awaits_the_pool_steps_on_its_event_loop(
    engineer, two_versions, transport, inference_workers, monkeypatch
) -> None:
    """A graph of model and ensemble steps runs on the loop (run_async): each pool call is a
    task there (redis.asyncio), the ensemble's two members in flight together."""
    from tests.inference.asgi_client import asgi_call

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # what the front's lifespan start-up does
    _serve(engineer, "fraud-asgi", _spec(), placement="worker_pool")
    inference_workers()
    for spec in _pool_specs():
        wait_until(lambda s=spec: transport.ready(s), timeout=60, what=f"the worker to warm {spec.key}")

    status, _, raw = asgi_call(
        "POST",
        "/api/v1/endpoints/fraud-asgi/predict",
        orjson.dumps({"inputs": {"features": X}}),
        [("content-type", "application/json")],
    )

    assert status == 200, raw
    outputs = orjson.loads(raw)["outputs"]
    np.testing.assert_allclose(outputs["proba"], (_expected(11) + _expected(21)) / 2, rtol=1e-5, atol=1e-6)
    assert in_process_transport().repository.find(f"d-{two_versions[1].pk}") is None  # not loaded here


def test_a_step_may_name_the_worker_pool_on_an_in_process_route(
    client, engineer, two_versions, transport, inference_workers
) -> None:
    _serve(engineer, "fraud-mixed", _spec(step_placement="worker_pool"))
    (first,) = [s for s in _pool_specs() if s.version == 1]
    inference_workers()
    wait_until(lambda: transport.ready(first), timeout=60, what="the worker to warm the step's model")

    response = _predict(client, "fraud-mixed")

    assert response.status_code == 200, response.content
    np.testing.assert_allclose(response.json()["outputs"]["p1"], _expected(11), rtol=1e-5, atol=1e-6)
    counted = wait_until(
        lambda: (r := deployment_report(first)) and r[0].get("batch_rows", 0) > 0 and r,
        timeout=10,
        what="the worker's heartbeat to count the step's rows",
    )
    assert counted[0]["batch_rows"] == 2  # the step on the worker; the ensemble's v1 member ran here
    # The ensemble follows its in-process route: both versions loaded here under d-<version id>.
    assert in_process_transport().repository.find(f"d-{two_versions[1].pk}") is not None


def test_no_worker_serving_the_steps_is_a_503_with_retry_after(client, engineer, two_versions, transport) -> None:
    _serve(engineer, "fraud-noworker", _spec(), placement="worker_pool")

    response = _predict(client, "fraud-noworker")

    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) >= 1
    assert "no inference worker" in response.json()["error"]["message"]


def test_the_reconciler_keeps_the_steps_assigned_and_withdraws_them_with_the_route(
    engineer, two_versions, transport
) -> None:
    endpoint = _serve(engineer, "fraud-reconciled", _spec(), placement="worker_pool")
    keys = {s.key for s in _pool_specs()}
    transport.client.delete(wire.assign_key("cpu"))  # Redis came back empty

    report = pool_reconcile(settle_s=0)

    assert keys <= set(report.assigned)
    assert keys <= {k.decode() for k in transport.client.hkeys(wire.assign_key("cpu"))}
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[{"pipeline": "fraud-pipe", "version": 1, "role": "primary", "weight": 100}],  # back in process
        user=engineer,
    )

    report = pool_reconcile(settle_s=0)

    assert keys <= set(report.withdrawn)
    assert not keys & {k.decode() for k in transport.client.hkeys(wire.assign_key("cpu"))}
