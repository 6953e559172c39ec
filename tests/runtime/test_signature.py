from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson
import pytest

from inference.runtime.session import LoadedModel
from inference.runtime.signature import (
    Signature,
    TensorSpec,
    UnsupportedTypeError,
    datatype_from_numpy,
    datatype_from_onnx,
    datatype_from_ort,
    numpy_dtype,
    onnx_elem_type,
    ort_type,
    signature_from_session,
)


def test_it_reads_names_datatypes_shapes_and_symbolic_dims_from_a_session(tiny_model: LoadedModel) -> None:
    signature = tiny_model.signature

    assert signature.inputs == (TensorSpec("x", "FP32", (-1, 10), ("batch", None)),)
    assert signature.outputs == (
        TensorSpec("probabilities", "FP32", (-1, 2), ("batch", None)),
        TensorSpec("label", "INT64", (-1,), ("batch",)),
    )


def test_it_round_trips_through_a_json_safe_dict(tiny_model: LoadedModel) -> None:
    data = orjson.loads(orjson.dumps(tiny_model.signature.to_dict()))

    assert data["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 10], "dim_names": ["batch", None]}
    assert Signature.from_dict(data) == tiny_model.signature


def test_input_lookup_names_the_inputs_the_model_has(two_inputs_model: LoadedModel) -> None:
    assert two_inputs_model.signature.input("b").datatype == "INT64"
    with pytest.raises(KeyError, match='no input "c"; inputs are "a", "b"'):
        two_inputs_model.signature.input("c")


@pytest.mark.parametrize(
    ("v2", "onnx_type", "ort", "dtype"),
    [
        ("FP32", 1, "tensor(float)", np.float32),
        ("FP64", 11, "tensor(double)", np.float64),
        ("FP16", 10, "tensor(float16)", np.float16),
        ("INT8", 3, "tensor(int8)", np.int8),
        ("INT32", 6, "tensor(int32)", np.int32),
        ("INT64", 7, "tensor(int64)", np.int64),
        ("UINT8", 2, "tensor(uint8)", np.uint8),
        ("BOOL", 9, "tensor(bool)", np.bool_),
        ("BYTES", 8, "tensor(string)", np.object_),
    ],
)
def test_it_maps_datatypes_between_v2_onnx_ort_and_numpy(v2: str, onnx_type: int, ort: str, dtype: type) -> None:
    assert datatype_from_onnx(onnx_type) == v2
    assert datatype_from_ort(ort) == v2
    assert datatype_from_numpy(np.dtype(dtype)) == v2
    assert numpy_dtype(v2) == np.dtype(dtype)
    assert onnx_elem_type(v2) == onnx_type
    assert ort_type(v2) == ort


def test_unicode_strings_map_to_bytes() -> None:
    assert datatype_from_numpy(np.array(["a"]).dtype) == "BYTES"


@dataclass
class _Arg:
    name: str
    type: str
    shape: list[int | str | None]


class _Session:
    def get_inputs(self) -> list[_Arg]:
        return [_Arg("X", "tensor(float)", [None, 4])]

    def get_outputs(self) -> list[_Arg]:
        return [_Arg("output_probability", "seq(map(int64,tensor(float)))", [])]


def test_it_refuses_a_model_with_a_sequence_of_maps_output() -> None:
    with pytest.raises(UnsupportedTypeError, match='output "output_probability" has type seq'):
        signature_from_session(_Session())


def test_a_spec_rejects_an_unknown_datatype() -> None:
    with pytest.raises(UnsupportedTypeError, match="unknown datatype FLOAT"):
        TensorSpec("x", "FLOAT", (1,))
