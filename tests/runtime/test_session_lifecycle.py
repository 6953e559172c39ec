"""A loaded model is ready only once warm, predicts correctly, and refuses work once unloaded."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from inference.runtime.errors import InputError, ModelLoadError, ModelNotReady
from inference.runtime.session import LoadedModel
from tests import onnx_models


def test_it_is_ready_only_after_warming(model_file: Callable[[bytes], str]) -> None:
    model = LoadedModel.load(model_file(onnx_models.mlp()), name="mlp", version="3", sha256="abc")

    assert model.loaded and not model.ready and not model.is_warm
    assert model.load_ms > 0
    assert (model.name, model.version, model.sha256) == ("mlp", "3", "abc")

    model.warm(runs=2)

    assert model.ready and model.is_warm
    assert model.warm_ms > 0


def test_it_predicts_what_the_graph_computes(two_inputs_model: LoadedModel) -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    b = np.array([[2], [-1]], dtype=np.int64)

    out = two_inputs_model.predict({"a": a, "b": b})

    np.testing.assert_array_equal(out["y"], a * b.astype(np.float32))


def test_it_returns_only_the_outputs_asked_for(tiny_model: LoadedModel) -> None:
    out = tiny_model.predict({"x": np.zeros((3, 10), np.float32)}, outputs=["label"])

    assert list(out) == ["label"]
    assert out["label"].shape == (3,)


def test_unloading_makes_predictions_fail_as_not_ready(model_file: Callable[[bytes], str]) -> None:
    model = LoadedModel.load(model_file(onnx_models.tiny_classifier()), name="tiny")
    model.warm()

    model.unload()

    assert not model.ready and not model.loaded
    with pytest.raises(ModelNotReady, match='model "tiny" is not loaded'):
        model.predict({"x": np.zeros((1, 10), np.float32)})


def test_a_file_onnxruntime_refuses_raises_a_load_error_naming_it(model_file: Callable[[bytes], str]) -> None:
    path = model_file(onnx_models.not_onnx())

    with pytest.raises(ModelLoadError, match="cannot load") as excinfo:
        LoadedModel.load(path)

    assert path in str(excinfo.value)
    assert excinfo.value.status == 500


def test_unchecked_inputs_that_onnxruntime_rejects_become_input_errors(tiny_model: LoadedModel) -> None:
    with pytest.raises(InputError):
        tiny_model.predict({"x": np.zeros((1, 10), np.float64)})
