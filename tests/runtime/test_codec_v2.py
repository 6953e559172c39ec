"""Open Inference Protocol (KServe V2) bodies: JSON tensors and the binary tensor extension."""

from __future__ import annotations

import struct

import numpy as np
import orjson
import pytest

from inference.runtime.codec import (
    HEADER_LENGTH_HEADER,
    V2RequestInfo,
    decode_v2_request,
    encode_v2_response,
    parse_header_length,
)
from inference.runtime.errors import InputError
from inference.runtime.session import LoadedModel
from inference.runtime.signature import Signature, TensorSpec

BYTES_SIGNATURE = Signature(inputs=(TensorSpec("s", "BYTES", (-1,)),), outputs=(TensorSpec("y", "BYTES", (-1,)),))
BOOL_SIGNATURE = Signature(inputs=(TensorSpec("m", "BOOL", (-1, 2)),), outputs=())


def _binary_request(tensors: list[tuple[str, str, list[int], bytes]], **extra: object) -> tuple[bytes, int]:
    inputs = [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(raw)}} for n, d, s, raw in tensors
    ]
    header = orjson.dumps({"inputs": inputs, **extra})
    return header + b"".join(raw for *_, raw in tensors), len(header)


def test_it_decodes_flat_json_data_with_the_declared_shape(tiny_model: LoadedModel) -> None:
    body = orjson.dumps(
        {"id": "42", "inputs": [{"name": "x", "shape": [2, 10], "datatype": "FP32", "data": list(range(20))}]}
    )

    inputs, info = decode_v2_request(body, "application/json", None, tiny_model.signature)

    np.testing.assert_array_equal(inputs["x"], np.arange(20, dtype=np.float32).reshape(2, 10))
    assert info.id == "42"
    assert info.outputs == ("probabilities", "label")
    assert info.binary_outputs == frozenset()


def test_it_decodes_nested_json_data(two_inputs_model: LoadedModel) -> None:
    body = orjson.dumps(
        {
            "inputs": [
                {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [[1, 2, 3]]},
                {"name": "b", "shape": [1, 1], "datatype": "INT64", "data": [[4]]},
            ]
        }
    )

    inputs, _ = decode_v2_request(body, None, None, two_inputs_model.signature)

    assert inputs["b"].dtype == np.int64 and inputs["b"].tolist() == [[4]]


def test_it_decodes_binary_tensors_after_the_json_header(two_inputs_model: LoadedModel) -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([[1], [2]], dtype=np.int64)
    body, header_length = _binary_request([("a", "FP32", [2, 3], a.tobytes()), ("b", "INT64", [2, 1], b.tobytes())])

    inputs, _ = decode_v2_request(body, "application/octet-stream", header_length, two_inputs_model.signature)

    np.testing.assert_array_equal(inputs["a"], a)
    np.testing.assert_array_equal(inputs["b"], b)
    assert all(arr.flags.aligned for arr in inputs.values())


def test_it_mixes_binary_and_json_inputs(two_inputs_model: LoadedModel) -> None:
    a = np.ones((1, 3), np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "b", "shape": [1, 1], "datatype": "INT64", "data": [5]},
                {"name": "a", "shape": [1, 3], "datatype": "FP32", "parameters": {"binary_data_size": 12}},
            ]
        }
    )

    inputs, _ = decode_v2_request(header + a.tobytes(), None, len(header), two_inputs_model.signature)

    assert list(inputs) == ["a", "b"]  # signature order, whatever the request's order


def test_it_decodes_length_prefixed_bytes_tensors() -> None:
    raw = b"".join(struct.pack("<I", len(s)) + s for s in (b"hello", b"", "é".encode()))
    body, header_length = _binary_request([("s", "BYTES", [3], raw)])

    inputs, _ = decode_v2_request(body, None, header_length, BYTES_SIGNATURE)

    assert inputs["s"].dtype == object
    assert inputs["s"].tolist() == ["hello", "", "é"]


def test_it_rejects_bytes_elements_that_do_not_add_up() -> None:
    raw = struct.pack("<I", 10) + b"short"
    body, header_length = _binary_request([("s", "BYTES", [1], raw)])

    with pytest.raises(InputError, match='input "s": binary BYTES data does not hold exactly 1 length-prefixed'):
        decode_v2_request(body, None, header_length, BYTES_SIGNATURE)


def test_it_checks_bool_bytes_are_zero_or_one() -> None:
    good, n = _binary_request([("m", "BOOL", [1, 2], b"\x00\x01")])
    bad, m = _binary_request([("m", "BOOL", [1, 2], b"\x00\x07")])

    assert decode_v2_request(good, None, n, BOOL_SIGNATURE)[0]["m"].tolist() == [[False, True]]
    with pytest.raises(InputError, match="BOOL bytes must be 0 or 1"):
        decode_v2_request(bad, None, m, BOOL_SIGNATURE)


def test_it_rejects_a_binary_size_that_does_not_match_the_shape(tiny_model: LoadedModel) -> None:
    body, header_length = _binary_request([("x", "FP32", [1, 10], np.zeros(9, np.float32).tobytes())])

    with pytest.raises(InputError) as excinfo:
        decode_v2_request(body, None, header_length, tiny_model.signature)

    assert excinfo.value.message == 'input "x": binary_data_size is 36 bytes but FP32 [1, 10] needs 40'


def test_it_rejects_a_binary_size_past_the_end_of_the_body(tiny_model: LoadedModel) -> None:
    body, header_length = _binary_request([("x", "FP32", [1, 10], np.zeros(10, np.float32).tobytes())])

    with pytest.raises(InputError, match="binary_data_size is 40 bytes but only 39 bytes of binary data remain"):
        decode_v2_request(body[:-1], None, header_length, tiny_model.signature)


def test_it_rejects_trailing_bytes_after_the_last_binary_input(tiny_model: LoadedModel) -> None:
    body, header_length = _binary_request([("x", "FP32", [1, 10], np.zeros(10, np.float32).tobytes())])

    with pytest.raises(InputError, match="3 bytes of binary data follow the last binary input"):
        decode_v2_request(body + b"abc", None, header_length, tiny_model.signature)


def test_it_rejects_a_header_length_longer_than_the_body(tiny_model: LoadedModel) -> None:
    with pytest.raises(InputError, match="Inference-Header-Content-Length is 99 but the body has 2 bytes"):
        decode_v2_request(b"{}", None, 99, tiny_model.signature)


def test_it_parses_the_header_length_header() -> None:
    assert parse_header_length(None) is None
    assert parse_header_length("120") == 120
    with pytest.raises(InputError, match="must be an integer"):
        parse_header_length("12a")


def test_it_rejects_malformed_tensor_descriptions(tiny_model: LoadedModel) -> None:
    cases = {
        b'{"inputs": []}': 'V2 request needs a non-empty "inputs" list',
        b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FLOAT", "data": []}]}': "unknown datatype 'FLOAT'",
        b'{"inputs": [{"name": "x", "shape": [1, -10], "datatype": "FP32", "data": []}]}': "list of non-negative",
        b'{"inputs": [{"name": "x", "shape": [1, 10], "datatype": "FP32"}]}': 'neither "data" nor binary_data_size',
    }
    for body, message in cases.items():
        with pytest.raises(InputError, match=message):
            decode_v2_request(body, None, None, tiny_model.signature)


def test_it_records_requested_outputs_and_which_are_binary(tiny_model: LoadedModel) -> None:
    tensor = {"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0] * 10}
    body = orjson.dumps(
        {
            "inputs": [tensor],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}],
            "parameters": {"timeout": 250_000},
        }
    )

    _, info = decode_v2_request(body, None, None, tiny_model.signature)

    assert info.outputs == ("label", "probabilities")
    assert info.binary_outputs == {"label"}
    assert info.timeout_s == 0.25


def test_binary_data_output_makes_every_output_binary(tiny_model: LoadedModel) -> None:
    tensor = {"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0] * 10}
    body = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})

    _, info = decode_v2_request(body, None, None, tiny_model.signature)

    assert info.binary_outputs == {"probabilities", "label"}


def test_it_rejects_an_unknown_requested_output(tiny_model: LoadedModel) -> None:
    tensor = {"name": "x", "shape": [1, 10], "datatype": "FP32", "data": [0] * 10}
    body = orjson.dumps({"inputs": [tensor], "outputs": [{"name": "logits"}]})

    with pytest.raises(InputError, match='unknown output "logits"; the model has "probabilities", "label"'):
        decode_v2_request(body, None, None, tiny_model.signature)


def test_it_encodes_json_outputs_with_nan_as_null() -> None:
    outputs = {"y": np.array([[1.5, np.nan]], np.float32), "n": np.array([3], np.int64)}
    info = V2RequestInfo(id="7", outputs=("y", "n"))

    body, headers = encode_v2_response("tiny", "2", outputs, info)

    assert headers == {"Content-Type": "application/json"}
    assert orjson.loads(body) == {
        "model_name": "tiny",
        "model_version": "2",
        "id": "7",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, None]},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [3]},
        ],
    }


def test_it_encodes_binary_outputs_after_the_json_header() -> None:
    y = np.array([[1.5, -2.0]], np.float32)
    info = V2RequestInfo(outputs=("y", "s"), binary_outputs=frozenset({"y", "s"}))

    body, headers = encode_v2_response("m", "", {"y": y, "s": np.array(["ab"], dtype=object)}, info)

    length = int(headers[HEADER_LENGTH_HEADER])
    header = orjson.loads(body[:length])
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [8, 6]
    assert body[length : length + 8] == y.tobytes()
    assert body[length + 8 :] == struct.pack("<I", 2) + b"ab"
