"""The fraud pipeline through the ASGI front (uvicorn's): model calls awaited on the loop,
the same answer as the blocking fronts."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from tests.inference.asgi_client import asgi_call
from tests.pipelines.conftest import expected_scores, fraud_spec

pytestmark = pytest.mark.django_db(transaction=True)
JSON = ("content-type", "application/json")


@pytest.fixture(autouse=True)
def orm_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the front's lifespan start-up does in a server (the test skips lifespan)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def test_the_asgi_front_serves_the_fraud_pipeline(engineer: Any, fraud_versions: Any, feature_set: str) -> None:
    pipeline_services.pipeline_create(name="fraud", spec=fraud_spec(feature_set, 0.5), user=engineer)
    endpoint = endpoints.endpoint_create(name="fraud", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "fraud", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    body = orjson.dumps({"inputs": {"card_id": [101, 103], "amount": [2500.0, 1800.0]}})
    status, headers, raw = asgi_call(
        "POST", "/api/v1/endpoints/fraud/predict", body, [JSON, ("x-request-id", "asgi-1")]
    )
    assert status == 200, raw
    answer = orjson.loads(raw)
    np.testing.assert_allclose(
        answer["outputs"]["fraud_score"], expected_scores([101, 103], [2500.0, 1800.0]), rtol=1e-4
    )
    assert answer["request_id"] == "asgi-1" and headers["x-request-id"] == "asgi-1"
    unknown = orjson.dumps({"inputs": {"card_id": [7], "amount": [1.0]}})
    status, _, raw = asgi_call("POST", "/api/v1/endpoints/fraud/predict", unknown, [JSON])
    assert status == 404 and b"unknown_entity" in raw


def test_a_graph_of_models_runs_on_the_event_loop(engineer: Any, fraud_versions: Any) -> None:
    """No lookup, switch or router: the model calls are awaited on the loop (run_async)."""
    import onnxruntime as ort

    from tests.pipelines.conftest import fraud_bytes

    spec = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": ["score"],
        "steps": [
            {
                "name": "both",
                "kind": "ensemble",
                "members": [{"model": "fraud:1"}, {"model": "fraud:2"}],
                "combine": "mean",
                "outputs": {"probabilities": "proba"},
            },
            {"name": "rule", "kind": "transform", "rules": ["score = proba[1]"]},
        ],
    }
    version = pipeline_services.pipeline_create(name="models-only", spec=spec, user=engineer)
    assert pipeline_services.compile_version(version).loop_safe
    endpoint = endpoints.endpoint_create(name="models-only", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[{"pipeline": "models-only", "version": 1, "role": "primary", "weight": 100}],
        user=engineer,
    )
    x = np.array([[0.1, -0.2, 0.3, 0.4], [1.0, 0.5, -0.5, 2.0]], dtype=np.float32)
    status, _, raw = asgi_call(
        "POST", "/api/v1/endpoints/models-only/predict", orjson.dumps({"inputs": {"x": x.tolist()}}), [JSON]
    )
    assert status == 200, raw
    each = [ort.InferenceSession(fraud_bytes(s)).run(["probabilities"], {"x": x})[0][:, 1] for s in (11, 21)]
    np.testing.assert_allclose(orjson.loads(raw)["outputs"]["score"], np.mean(each, axis=0), rtol=1e-5)
