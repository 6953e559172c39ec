"""Simple JSON requests ({"instances"} or {"inputs"}) decode into checked numpy inputs."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from inference.runtime.codec import decode_simple
from inference.runtime.session import LoadedModel


def test_it_decodes_instances_as_rows_of_a_one_input_model(tiny_model: LoadedModel) -> None:
    body = {"instances": [[0.1] * 10, [0.2] * 10]}

    inputs = decode_simple(body, tiny_model.signature)

    assert list(inputs) == ["x"]
    assert inputs["x"].dtype == np.float32
    assert inputs["x"].shape == (2, 10)


def test_it_decodes_raw_bytes_too(tiny_model: LoadedModel) -> None:
    inputs = decode_simple(orjson.dumps({"instances": [[1] * 10]}), tiny_model.signature)

    assert inputs["x"].dtype == np.float32  # JSON integers are accepted for float inputs


def test_it_decodes_named_instances_of_a_multi_input_model(two_inputs_model: LoadedModel) -> None:
    body = {"instances": [{"a": [1, 2, 3], "b": [2]}, {"a": [4, 5, 6], "b": [3]}]}

    inputs = decode_simple(body, two_inputs_model.signature)

    np.testing.assert_array_equal(inputs["a"], np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    assert inputs["b"].dtype == np.int64
    assert inputs["b"].tolist() == [[2], [3]]


def test_it_decodes_columnar_inputs_by_name(two_inputs_model: LoadedModel) -> None:
    body = {"inputs": {"a": [[1.5, 2, 3]], "b": [[7]]}}

    inputs = decode_simple(body, two_inputs_model.signature)

    assert inputs["a"].tolist() == [[1.5, 2.0, 3.0]]
    assert inputs["b"].tolist() == [[7]]


def test_it_decodes_strings_for_a_bytes_input(model_file) -> None:  # type: ignore[no-untyped-def]
    from inference.runtime.session import LoadedModel as Loaded
    from tests import onnx_models

    model = Loaded.load(model_file(onnx_models.identity("BYTES")))
    inputs = decode_simple({"instances": [["a", "bé"]]}, model.signature)

    assert inputs["x"].dtype == object
    out = model.predict(inputs)
    assert out["y"].tolist() == [["a", "bé"]]


@pytest.mark.parametrize(
    "body", [{"instances": [[0.5] * 10]}, {"inputs": {"x": [[0.5] * 10]}}, {"inputs": [[0.5] * 10]}]
)
def test_every_simple_form_gives_the_same_tensor(tiny_model: LoadedModel, body: dict[str, object]) -> None:
    inputs = decode_simple(body, tiny_model.signature)

    np.testing.assert_array_equal(inputs["x"], np.full((1, 10), 0.5, np.float32))
