"""Bodies built by tritonclient's own HTTP helpers decode here, and our responses decode there."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput

from inference.runtime.codec import HEADER_LENGTH_HEADER, decode_v2_request, encode_v2_response
from inference.runtime.session import LoadedModel


def _round_trip(model: LoadedModel, inputs: list[InferInput], outputs: list[InferRequestedOutput] | None) -> object:
    body, json_size = InferenceServerClient.generate_request_body(inputs, outputs=outputs, request_id="req-1")

    arrays, info = decode_v2_request(body, None, json_size, model.signature)
    response, headers = encode_v2_response(model.name, model.version, model.predict(arrays), info)

    header_length = headers.get(HEADER_LENGTH_HEADER)
    return InferenceServerClient.parse_response_body(
        response, header_length=int(header_length) if header_length else None
    )


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_a_tritonclient_request_decodes_and_its_response_parses(tiny_model: LoadedModel, binary: bool) -> None:
    x = np.random.default_rng(0).normal(size=(3, 10)).astype(np.float32)
    infer_input = InferInput("x", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x, binary_data=binary)
    requested = [
        InferRequestedOutput("probabilities", binary_data=binary),
        InferRequestedOutput("label", binary_data=binary),
    ]

    result = _round_trip(tiny_model, [infer_input], requested)

    expected = tiny_model.predict({"x": x})
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected["probabilities"])  # type: ignore[attr-defined]
    np.testing.assert_array_equal(result.as_numpy("label"), expected["label"])  # type: ignore[attr-defined]
    assert result.get_response()["id"] == "req-1"  # type: ignore[attr-defined]


def test_without_requested_outputs_tritonclient_gets_every_output_in_binary(tiny_model: LoadedModel) -> None:
    x = np.ones((2, 10), np.float32)
    infer_input = InferInput("x", [2, 10], "FP32")
    infer_input.set_data_from_numpy(x)

    result = _round_trip(tiny_model, [infer_input], None)

    outputs = result.get_response()["outputs"]  # type: ignore[attr-defined]
    assert all("binary_data_size" in o["parameters"] for o in outputs)
    assert result.as_numpy("label").shape == (2,)  # type: ignore[attr-defined]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_bytes_tensors_round_trip(model_file, binary: bool) -> None:  # type: ignore[no-untyped-def]
    from tests import onnx_models

    model = LoadedModel.load(model_file(onnx_models.identity("BYTES")), name="strings")
    data = np.array([["a", "bé"], ["", "long string"]], dtype=object)
    infer_input = InferInput("x", [2, 2], "BYTES")
    infer_input.set_data_from_numpy(data, binary_data=binary)

    result = _round_trip(model, [infer_input], [InferRequestedOutput("y", binary_data=binary)])

    got = result.as_numpy("y")  # type: ignore[attr-defined]
    decoded = [[v.decode() if isinstance(v, bytes) else v for v in row] for row in got.tolist()]
    assert decoded == data.tolist()


def test_tritonclient_multi_input_binary_request(two_inputs_model: LoadedModel) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[2], [3]], dtype=np.int64)
    inputs = [InferInput("a", [2, 3], "FP32"), InferInput("b", [2, 1], "INT64")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)

    result = _round_trip(two_inputs_model, inputs, [InferRequestedOutput("y")])

    np.testing.assert_array_equal(result.as_numpy("y"), a * b)  # type: ignore[attr-defined]
