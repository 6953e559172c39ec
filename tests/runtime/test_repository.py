"""The repository loads each key once, reports readiness and provider, and unloads cleanly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from inference.runtime import repository as repository_module
from inference.runtime.errors import ModelLoadError, ModelNotFound
from inference.runtime.repository import ModelRepository
from inference.runtime.session import LoadedModel
from tests import onnx_models


def test_concurrent_loads_of_one_key_load_it_once(
    model_file: Callable[[bytes], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_file(onnx_models.tiny_classifier())
    loads: list[str] = []
    original = LoadedModel.load

    def counting_load(*args: Any, **kwargs: Any) -> LoadedModel:
        loads.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(repository_module.LoadedModel, "load", staticmethod(counting_load))
    repo = ModelRepository()
    start = threading.Barrier(8)

    def load(_: int) -> object:
        start.wait()
        return repo.load("tiny", path, max_batch_size=8, max_queue_delay_ms=1)

    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(load, range(8)))

    assert loads == [path]
    assert all(s is served[0] for s in served)
    repo.close()


def test_it_lists_models_with_ready_flag_and_provider(model_file: Callable[[bytes], str]) -> None:
    repo = ModelRepository()
    repo.load("d1", model_file(onnx_models.tiny_classifier()), name="tiny", version="1", device="gpu")

    [status] = repo.list()

    assert (status.key, status.name, status.version, status.ready) == ("d1", "tiny", "1", True)
    assert status.device_requested == "gpu"
    assert status.provider in ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert repo.ready("d1") and "d1" in repo and len(repo) == 1
    repo.close()


def test_a_served_model_predicts_with_and_without_batching(model_file: Callable[[bytes], str]) -> None:
    path = model_file(onnx_models.two_inputs())
    repo = ModelRepository()
    direct = repo.load("direct", path)
    batched = repo.load("batched", path, max_batch_size=8, max_queue_delay_ms=1)
    inputs = {"a": np.ones((2, 3), np.float32), "b": np.array([[2], [3]], np.int64)}

    assert direct.batcher is None and batched.batcher is not None
    np.testing.assert_array_equal(direct.predict(inputs)["y"], batched.predict(inputs, timeout_s=30)["y"])
    assert batched.submit(inputs).result(timeout=30)["y"].shape == (2, 3)
    assert batched.stats() is not None and direct.stats() is None
    repo.close()


def test_loading_again_with_the_same_spec_is_a_no_op_and_a_new_spec_swaps(model_file: Callable[[bytes], str]) -> None:
    repo = ModelRepository()
    first = repo.load("d", model_file(onnx_models.tiny_classifier()))

    assert repo.load("d", first.spec.path) is first

    second = repo.load("d", model_file(onnx_models.mlp()))

    assert repo.get("d") is second
    assert not first.ready and second.ready
    repo.close()


def test_unloading_removes_the_model(model_file: Callable[[bytes], str]) -> None:
    repo = ModelRepository()
    served = repo.load("d", model_file(onnx_models.tiny_classifier()), max_batch_size=4)

    assert repo.unload("d") is True
    assert repo.unload("d") is False
    assert not served.ready and not repo.ready("d")
    with pytest.raises(ModelNotFound, match='no model loaded under "d"') as excinfo:
        repo.get("d")
    assert excinfo.value.status == 404


def test_a_failed_load_leaves_the_current_model_serving(model_file: Callable[[bytes], str]) -> None:
    repo = ModelRepository()
    current = repo.load("d", model_file(onnx_models.tiny_classifier()))

    with pytest.raises(ModelLoadError):
        repo.load("d", model_file(onnx_models.not_onnx()))

    assert repo.get("d") is current and current.ready
    repo.close()
