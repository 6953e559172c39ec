"""Fixtures for the serving core's tests: model files, loaded models, a gated model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.runtime.session import LoadedModel
from tests import onnx_models


@pytest.fixture
def model_file(tmp_path: Path) -> Callable[[bytes], str]:
    """Write model bytes to a fresh file and return its path."""
    counter = iter(range(1_000_000))

    def write(data: bytes) -> str:
        return str(onnx_models.write_model(tmp_path, f"model-{next(counter)}.onnx", data))

    return write


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def _load(models_dir: Path, name: str, data: bytes, **kwargs: Any) -> LoadedModel:
    path = onnx_models.write_model(models_dir, f"{name}.onnx", data)
    model = LoadedModel.load(str(path), name=name, version="1", intra_op_threads=1, **kwargs)
    model.warm()
    return model


@pytest.fixture(scope="session")
def tiny_model(models_dir: Path) -> LoadedModel:
    return _load(models_dir, "tiny", onnx_models.tiny_classifier())


@pytest.fixture(scope="session")
def identity_model(models_dir: Path) -> LoadedModel:
    return _load(models_dir, "identity", onnx_models.identity("FP32"))


@pytest.fixture(scope="session")
def two_inputs_model(models_dir: Path) -> LoadedModel:
    return _load(models_dir, "two_inputs", onnx_models.two_inputs())


@pytest.fixture(scope="session")
def slow_model(models_dir: Path) -> LoadedModel:
    return _load(models_dir, "slow", onnx_models.slow_model())


@pytest.fixture(scope="session")
def iris_path(models_dir: Path) -> str:
    return str(onnx_models.write_model(models_dir, "iris.onnx", onnx_models.iris_sklearn()))


class GatedModel:
    """Wraps a LoadedModel: counts calls, can hold them at a gate, can fail them."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.signature = model.signature
        self.name = model.name
        self.label = model.label
        self.calls: list[int] = []  # rows per call
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next: Exception | None = None

    def predict(self, inputs: Mapping[str, Any], *, timeout_s: float | None = None) -> dict[str, Any]:
        first = next(iter(inputs.values()))
        self.calls.append(int(first.shape[0]))
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        return self.model.predict(inputs, timeout_s=timeout_s)


@pytest.fixture
def gated(identity_model: LoadedModel) -> Iterator[GatedModel]:
    model = GatedModel(identity_model)
    yield model
    model.gate.set()


def rows(n: int, width: int = 4, start: float = 0.0) -> dict[str, np.ndarray]:
    """Identity-model input with `n` distinct rows."""
    values = np.arange(n * width, dtype=np.float32).reshape(n, width) + np.float32(start)
    return {"x": values}
