"""A pipeline's model steps load their sessions into the process's one ModelRepository,
like a directly served version, so the model-memory budget (MODELHUB_MODEL_MEMORY_BUDGET_BYTES)
and its LRU eviction cover them: with room for one model, a pipeline step and a direct
endpoint take turns, and the repository never holds more than the budget."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from inference.runtime.repository import ModelRepository
from inference.transport import in_process_transport
from tests import onnx_models
from tests.density import charge_per_model
from tests.inference.conftest import fresh_edge_cache, version_add  # noqa: F401 - the autouse fixture

pytestmark = pytest.mark.django_db
FEATURES = 512


@pytest.fixture
def room_for_one(tmp_path: Any) -> Iterator[ModelRepository]:
    """The process's in-process repository, swapped for one with a budget for one model."""
    path = onnx_models.write_model(tmp_path, "probe.onnx", onnx_models.mlp(hidden=4096, features=FEATURES))
    repository = ModelRepository(budget_bytes=int(charge_per_model(str(path)) * 1.5))
    transport = in_process_transport()
    previous, transport.repository = transport.repository, repository
    yield repository
    transport.repository = previous
    repository.close()


def _predict(client: Any, name: str) -> Any:
    body = orjson.dumps({"inputs": {"x": np.ones((1, FEATURES), np.float32).tolist()}})
    return client.post(f"/api/v1/endpoints/{name}/predict", body, content_type="application/json")


def test_a_pipeline_step_and_a_direct_endpoint_share_one_budget(client, engineer, room_for_one) -> None:
    repository = room_for_one
    version_add("direct", onnx_models.mlp(hidden=4096, features=FEATURES), engineer)
    step_version = version_add("stepped", onnx_models.mlp(hidden=4000, features=FEATURES), engineer)
    direct = endpoints.endpoint_create(name="direct-ep", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=direct, routes=[{"model": "direct", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    spec = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": ["y"],
        "steps": [{"name": "score", "kind": "model", "model": "stepped", "version": 1}],
    }
    pipeline_services.pipeline_create(name="stepped-pipe", spec=spec, user=engineer)
    piped = endpoints.endpoint_create(name="piped-ep", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=piped,
        routes=[{"pipeline": "stepped-pipe", "version": 1, "role": "primary", "weight": 100}],
        user=engineer,
    )
    step_key = f"d-{step_version.pk}"

    for _ in range(3):
        for name in ("direct-ep", "piped-ep"):
            response = _predict(client, name)
            assert response.status_code == 200, response.content
            assert np.asarray(response.json()["outputs"]["y"]).shape == (1, 8)
            assert repository.used_bytes() <= repository.budget_bytes
            # Room for one: each turn unloaded the other's model (the step's is d-<version id>).
            assert len(repository.keys()) == 1
            assert (step_key in repository.keys()) == (name == "piped-ep")

    report = repository.memory_report()
    assert report["evictions"] >= 5 and report["cold_starts"] >= 5
