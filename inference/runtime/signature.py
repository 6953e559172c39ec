"""Model signatures: named tensors with Open Inference Protocol datatypes and shapes.

Datatypes use the Open Inference Protocol (KServe V2) names ("FP32", "INT64", "BYTES",
...). Shapes use -1 for a dimension of any size; `dim_names` keeps the symbolic name
the model gave it ("batch") or None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

import numpy as np


class UnsupportedTypeError(ValueError):
    """A type the serving API cannot carry (a sequence, a map, float8, ...)."""


@dataclass(frozen=True)
class _DataType:
    v2: str
    onnx: int  # onnx.TensorProto.DataType; stable numbers, kept literal to avoid importing onnx
    ort: str
    numpy: np.dtype[Any] | None


_DATATYPES: tuple[_DataType, ...] = (
    _DataType("BOOL", 9, "tensor(bool)", np.dtype(np.bool_)),
    _DataType("UINT8", 2, "tensor(uint8)", np.dtype(np.uint8)),
    _DataType("UINT16", 4, "tensor(uint16)", np.dtype(np.uint16)),
    _DataType("UINT32", 12, "tensor(uint32)", np.dtype(np.uint32)),
    _DataType("UINT64", 13, "tensor(uint64)", np.dtype(np.uint64)),
    _DataType("INT8", 3, "tensor(int8)", np.dtype(np.int8)),
    _DataType("INT16", 5, "tensor(int16)", np.dtype(np.int16)),
    _DataType("INT32", 6, "tensor(int32)", np.dtype(np.int32)),
    _DataType("INT64", 7, "tensor(int64)", np.dtype(np.int64)),
    _DataType("FP16", 10, "tensor(float16)", np.dtype(np.float16)),
    _DataType("FP32", 1, "tensor(float)", np.dtype(np.float32)),
    _DataType("FP64", 11, "tensor(double)", np.dtype(np.float64)),
    # numpy has no bfloat16: such tensors can be described but not decoded.
    _DataType("BF16", 16, "tensor(bfloat16)", None),
    # ONNX strings travel as BYTES; numpy holds them as an object array of str.
    _DataType("BYTES", 8, "tensor(string)", np.dtype(object)),
)

DATATYPES: frozenset[str] = frozenset(d.v2 for d in _DATATYPES)
_BY_V2 = {d.v2: d for d in _DATATYPES}
_BY_ONNX = {d.onnx: d for d in _DATATYPES}
_BY_ORT = {d.ort: d for d in _DATATYPES}
_BY_NUMPY = {d.numpy: d for d in _DATATYPES if d.numpy is not None}


def datatype_from_onnx(elem_type: int) -> str:
    """V2 datatype of an ONNX `TensorProto.DataType` number (1 -> "FP32")."""
    try:
        return _BY_ONNX[elem_type].v2
    except KeyError:
        raise UnsupportedTypeError(f"ONNX element type {elem_type} has no V2 datatype") from None


def datatype_from_ort(ort_type: str) -> str:
    """V2 datatype of an ONNX Runtime type string ("tensor(float)" -> "FP32")."""
    try:
        return _BY_ORT[ort_type].v2
    except KeyError:
        raise UnsupportedTypeError(f"type {ort_type} has no V2 datatype") from None


def datatype_from_numpy(dtype: np.dtype[Any] | type[Any]) -> str:
    """V2 datatype of a numpy dtype (float32 -> "FP32"; str, bytes and object -> "BYTES")."""
    dt = np.dtype(dtype)
    if dt.kind in "OUS":
        return "BYTES"
    try:
        return _BY_NUMPY[dt.newbyteorder("=")].v2
    except KeyError:
        raise UnsupportedTypeError(f"numpy dtype {dt} has no V2 datatype") from None


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """numpy dtype that holds a V2 datatype ("BYTES" -> object)."""
    dt = _BY_V2.get(datatype)
    if dt is None:
        raise UnsupportedTypeError(f"unknown datatype {datatype}")
    if dt.numpy is None:
        raise UnsupportedTypeError(f"datatype {datatype} has no numpy equivalent")
    return dt.numpy


def onnx_elem_type(datatype: str) -> int:
    """ONNX `TensorProto.DataType` number of a V2 datatype ("FP32" -> 1)."""
    try:
        return _BY_V2[datatype].onnx
    except KeyError:
        raise UnsupportedTypeError(f"unknown datatype {datatype}") from None


def ort_type(datatype: str) -> str:
    """ONNX Runtime type string of a V2 datatype ("FP32" -> "tensor(float)")."""
    try:
        return _BY_V2[datatype].ort
    except KeyError:
        raise UnsupportedTypeError(f"unknown datatype {datatype}") from None


def shape_text(shape: Sequence[int]) -> str:
    """A shape as error messages print it: `[-1, 4]`."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature: V2 datatype, shape (-1 = any size), dim names."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    dim_names: tuple[str | None, ...] = ()

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise UnsupportedTypeError(f'tensor "{self.name}": unknown datatype {self.datatype}')
        if any(d < -1 for d in self.shape):
            raise ValueError(f'tensor "{self.name}": bad shape {shape_text(self.shape)}')
        if not self.dim_names:
            object.__setattr__(self, "dim_names", (None,) * len(self.shape))
        elif len(self.dim_names) != len(self.shape):
            raise ValueError(f'tensor "{self.name}": {len(self.dim_names)} dim names for rank {len(self.shape)}')

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        """True when the first dimension is variable, the one a batcher may grow."""
        return bool(self.shape) and self.shape[0] == -1

    def describe(self) -> str:
        """`FP32 [-1, 4]`, the form error messages use."""
        return f"{self.datatype} {shape_text(self.shape)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datatype": self.datatype,
            "shape": list(self.shape),
            "dim_names": list(self.dim_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorSpec:
        shape = tuple(int(d) for d in data["shape"])
        names = data.get("dim_names") or ()
        return cls(
            name=str(data["name"]),
            datatype=str(data["datatype"]),
            shape=shape,
            dim_names=tuple(None if n is None else str(n) for n in names),
        )


@dataclass(frozen=True)
class Signature:
    """The named inputs and outputs of a model, in the model's order."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = field(default=())

    @cached_property
    def _inputs_by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in self.inputs}

    @cached_property
    def _outputs_by_name(self) -> dict[str, TensorSpec]:
        return {spec.name: spec for spec in self.outputs}

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.outputs)

    def input(self, name: str) -> TensorSpec:
        """The input called `name`; KeyError naming the known inputs otherwise."""
        try:
            return self._inputs_by_name[name]
        except KeyError:
            raise KeyError(f'no input "{name}"; inputs are {_names(self.input_names)}') from None

    def output(self, name: str) -> TensorSpec:
        """The output called `name`; KeyError naming the known outputs otherwise."""
        try:
            return self._outputs_by_name[name]
        except KeyError:
            raise KeyError(f'no output "{name}"; outputs are {_names(self.output_names)}') from None

    def has_input(self, name: str) -> bool:
        return name in self._inputs_by_name

    def has_output(self, name: str) -> bool:
        return name in self._outputs_by_name

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_dict(d) for d in data.get("inputs", ())),
            outputs=tuple(TensorSpec.from_dict(d) for d in data.get("outputs", ())),
        )


def _names(names: Sequence[str]) -> str:
    return ", ".join(f'"{n}"' for n in names) or "(none)"


class _NodeArg(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None] | None: ...


class _Session(Protocol):
    def get_inputs(self) -> Sequence[_NodeArg]: ...
    def get_outputs(self) -> Sequence[_NodeArg]: ...


def _spec_from_node_arg(arg: _NodeArg, role: str) -> TensorSpec:
    if not arg.type.startswith("tensor("):
        raise UnsupportedTypeError(
            f'{role} "{arg.name}" has type {arg.type}; only tensors can be served'
            " (for scikit-learn classifiers convert with zipmap disabled)"
        )
    try:
        datatype = datatype_from_ort(arg.type)
    except UnsupportedTypeError:
        raise UnsupportedTypeError(f'{role} "{arg.name}" has type {arg.type}, which has no V2 datatype') from None
    shape: list[int] = []
    dim_names: list[str | None] = []
    for dim in arg.shape or ():
        if isinstance(dim, int) and dim >= 0:
            shape.append(dim)
            dim_names.append(None)
        else:
            shape.append(-1)
            dim_names.append(dim if isinstance(dim, str) and dim else None)
    return TensorSpec(arg.name, datatype, tuple(shape), tuple(dim_names))


def signature_from_session(sess: _Session) -> Signature:
    """Signature of a loaded `onnxruntime.InferenceSession`.

    Raises UnsupportedTypeError for a non-tensor input or output (sequence, map).
    """
    return Signature(
        inputs=tuple(_spec_from_node_arg(a, "input") for a in sess.get_inputs()),
        outputs=tuple(_spec_from_node_arg(a, "output") for a in sess.get_outputs()),
    )
