"""Loaded models have one owner (the process's ModelRepository), there is one pool client,
and each batching setting has one default."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from inference import pool
from inference.models import Deployment
from inference.runtime.repository import ModelRepository
from inference.spec import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_MS, DeploymentSpec
from inference.traffic import routes_check
from inference.transport import InProcessTransport, transport_for
from tests import onnx_models


def _spec(path: Path, *, deployment_id: int = 1, sha: str = "a" * 64, placement: str = "in_process") -> DeploymentSpec:
    return DeploymentSpec(
        deployment_id=deployment_id,
        endpoint="scores",
        model="tiny",
        version=1,
        role="primary",
        weight=100,
        artifact_sha256=sha,
        artifact_path=str(path),
        signature={},
        placement=placement,
    )


def test_the_in_process_transport_serves_what_its_repository_holds_and_nothing_else(tmp_path: Path) -> None:
    path = onnx_models.write_model(tmp_path, "tiny.onnx", onnx_models.tiny_classifier())
    repository = ModelRepository()
    transport = InProcessTransport(repository)
    spec = _spec(path)
    transport.ensure_loaded(spec)
    assert repository.keys() == [spec.key] == transport.loaded_keys()
    assert transport.ready(spec)

    repository.unload(spec.key)  # whoever unloads through the repository, the transport sees it

    assert not transport.ready(spec) and transport.loaded_keys() == [] and transport.served(spec) is None
    result = transport.infer(spec, {"x": np.ones((2, 10), np.float32)}, timeout_s=5)  # loads again
    assert result.outputs and repository.keys() == [spec.key]
    # Other bytes under the same key are not served from the old session.
    assert transport.served(_spec(path, sha="b" * 64)) is None
    repository.close()


def test_an_unload_of_a_replaced_model_leaves_its_successor_loaded(tmp_path: Path) -> None:
    repository = ModelRepository()
    first = repository.load("d1", str(onnx_models.write_model(tmp_path, "a.onnx", onnx_models.tiny_classifier())))
    second = repository.load("d1", str(onnx_models.write_model(tmp_path, "b.onnx", onnx_models.mlp())))

    assert not repository.unload("d1", expected=first)
    assert repository.find("d1") is second and second.ready
    assert repository.unload("d1", expected=second) and "d1" not in repository


def test_worker_pool_deployments_share_the_one_pool_client(tmp_path: Path) -> None:
    a = transport_for(_spec(tmp_path, deployment_id=1, placement="worker_pool"))
    b = transport_for(_spec(tmp_path, deployment_id=2, placement="worker_pool"))
    assert a is b is pool.worker_pool_transport()


def test_a_deployment_a_route_and_a_spec_default_to_the_same_batching() -> None:
    fields = {f.name: f.default for f in Deployment._meta.get_fields() if hasattr(f, "default")}
    assert fields["max_queue_delay_ms"] == DEFAULT_MAX_QUEUE_DELAY_MS == _spec(Path("x")).max_queue_delay_ms
    assert fields["max_batch_size"] == DEFAULT_MAX_BATCH_SIZE == _spec(Path("x")).max_batch_size
    [route] = routes_check([{"model": "m", "version": 1, "weight": 100}])
    assert route["max_batch_size"] == DEFAULT_MAX_BATCH_SIZE
    assert route["max_queue_delay_ms"] == DEFAULT_MAX_QUEUE_DELAY_MS
