"""Request decoding and V2 response encoding, checked against a model's Signature.

Two wire formats:

- Simple JSON requests: `{"instances": [row, ...]}` (a row is the input's row for a
  one-input model, or an object of name -> row) or `{"inputs": {name: nested list}}`.
  Their answer is written by the edge (`inference/edge.py`), not here.
- The Open Inference Protocol (KServe V2) REST body, as JSON tensors or with the binary
  tensor extension (`Inference-Header-Content-Length`), byte-compatible with
  tritonclient.http; requests and responses.

Nothing reaches ONNX Runtime unchecked: names, datatypes, rank, fixed dims, batch size,
element counts, binary sizes and (for float inputs, unless allowed) NaN/Inf. Datatypes
must match the signature exactly, with one documented exception: JSON has no integer
vs float distinction, so JSON integers are accepted for float inputs. JSON floats are
never truncated into integer inputs and strings are never parsed as numbers.

In JSON responses a NaN or Inf output is written as `null` (JSON has no NaN);
tritonclient reads `null` back as NaN.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from inference.runtime.errors import InputError
from inference.runtime.signature import (
    DATATYPES,
    Signature,
    TensorSpec,
    UnsupportedTypeError,
    datatype_from_numpy,
    numpy_dtype,
    shape_text,
)

Array = NDArray[Any]

HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"

_KIND_NAMES = {
    "f": "floating-point numbers",
    "i": "integers",
    "u": "integers",
    "b": "booleans",
    "U": "strings",
    "S": "strings",
    "O": "nulls, objects or mixed values",
}
# JSON value kinds (as numpy infers them) each datatype kind accepts.
_ACCEPTED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b", "O": "U"}


def _got(arr: Array) -> str:
    try:
        datatype = datatype_from_numpy(arr.dtype)
    except UnsupportedTypeError:
        datatype = str(arr.dtype)
    return f"{datatype} {shape_text(arr.shape)}"


def _check_declared(spec: TensorSpec, datatype: str, shape: Sequence[int]) -> None:
    if datatype != spec.datatype or not _shape_fits(spec, shape):
        raise InputError(f'input "{spec.name}": expected {spec.describe()}, got {datatype} {shape_text(shape)}')


def _shape_fits(spec: TensorSpec, shape: Sequence[int]) -> bool:
    if len(shape) != len(spec.shape):
        return False
    return all(want == -1 or want == got for want, got in zip(spec.shape, shape, strict=True))


def _check_tensor(
    spec: TensorSpec,
    arr: Array,
    *,
    max_batch_size: int | None,
    allow_non_finite: bool,
) -> None:
    expected = numpy_dtype(spec.datatype)
    # ORT takes numpy unicode arrays for string inputs as well as object arrays of str.
    dtype_ok = arr.dtype == expected or (spec.datatype == "BYTES" and arr.dtype.kind == "U")
    if not dtype_ok or not _shape_fits(spec, arr.shape):
        raise InputError(f'input "{spec.name}": expected {spec.describe()}, got {_got(arr)}')
    if max_batch_size is not None and spec.batched and arr.shape[0] > max_batch_size:
        raise InputError(
            f'input "{spec.name}": batch of {arr.shape[0]} rows exceeds the limit of {max_batch_size} rows'
        )
    if not allow_non_finite and arr.dtype.kind == "f" and not np.isfinite(arr).all():
        where = [int(i) for i in np.argwhere(~np.isfinite(arr))[0]]
        raise InputError(f'input "{spec.name}": NaN or Inf at {where}; non-finite values are not accepted')


def _check_names(names: Sequence[str] | Mapping[str, Any], signature: Signature) -> None:
    for name in names:
        if not signature.has_input(name):
            expected = ", ".join(f'"{n}"' for n in signature.input_names)
            raise InputError(f'unknown input "{name}"; the model takes {expected}')
    for spec in signature.inputs:
        if spec.name not in names:
            raise InputError(f'missing input "{spec.name}" ({spec.describe()})')


def _check_shared_dims(arrays: Mapping[str, Array], signature: Signature) -> None:
    # Dims that share a symbolic name ("batch") must agree across inputs, or the
    # batcher could not split the outputs back per request.
    seen: dict[str, tuple[str, int]] = {}
    for spec in signature.inputs:
        shape = arrays[spec.name].shape
        for dim_name, size in zip(spec.dim_names, shape, strict=True):
            if dim_name is None:
                continue
            first = seen.setdefault(dim_name, (spec.name, size))
            if first[1] != size:
                raise InputError(
                    f'inputs "{first[0]}" and "{spec.name}" disagree on dim "{dim_name}": {first[1]} vs {size}'
                )


def check_inputs(
    inputs: Mapping[str, Array],
    signature: Signature,
    *,
    max_batch_size: int | None = None,
    allow_non_finite: bool = False,
) -> dict[str, Array]:
    """Check ready-made numpy inputs against `signature`; InputError on the first problem."""
    _check_names(inputs, signature)
    for spec in signature.inputs:
        arr = inputs[spec.name]
        if not isinstance(arr, np.ndarray):
            raise InputError(f'input "{spec.name}": expected a numpy array, got {type(arr).__name__}')
        _check_tensor(spec, arr, max_batch_size=max_batch_size, allow_non_finite=allow_non_finite)
    if len(signature.inputs) > 1:
        _check_shared_dims(inputs, signature)
    return {spec.name: inputs[spec.name] for spec in signature.inputs}


def _nesting_depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _array_from_json(spec: TensorSpec, value: Any, *, max_depth: int) -> Array:
    """A JSON (nested) list as an array of the spec's dtype, without per-element loops."""
    depth = _nesting_depth(value)
    if depth > max_depth:
        raise InputError(
            f'input "{spec.name}": values nested {depth} levels deep, expected at most '
            f"{max_depth} for {spec.describe()}"
        )
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f'input "{spec.name}": ragged nested lists, every row must have the same length '
            f"(expected {spec.describe()})"
        ) from exc
    if arr.size == 0:
        raise InputError(f'input "{spec.name}": no values (expected {spec.describe()})')
    target = numpy_dtype(spec.datatype)
    if arr.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise InputError(
            f'input "{spec.name}": expected {spec.datatype} values, '
            f"got {_KIND_NAMES.get(arr.dtype.kind, str(arr.dtype))}"
        )
    if target.kind in "iu" and not np.can_cast(arr.dtype, target, "safe"):
        info = np.iinfo(target)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise InputError(f'input "{spec.name}": values out of range for {spec.datatype} [{info.min}, {info.max}]')
    with np.errstate(over="ignore"):
        out = arr.astype(target, copy=False)
    if target.kind == "f" and target.itemsize < arr.dtype.itemsize and not np.isfinite(out).all():
        raise InputError(f'input "{spec.name}": values out of range for {spec.datatype}')
    return out


def parse_json(body: bytes | bytearray | memoryview | str) -> Any:
    """orjson.loads with InputError for a body that is not JSON (or nests too deep)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"request body is not valid JSON: {exc}") from exc


def decode_simple(
    body: Mapping[str, Any] | bytes,
    signature: Signature,
    *,
    max_batch_size: int | None = None,
    allow_non_finite: bool = False,
) -> dict[str, Array]:
    """Decode `{"instances": [...]}` or `{"inputs": {...}}` into checked numpy inputs."""
    if isinstance(body, bytes):
        body = parse_json(body)
    if not isinstance(body, Mapping):
        raise InputError('request body must be a JSON object with "instances" or "inputs"')
    has_instances, has_inputs = "instances" in body, "inputs" in body
    if has_instances == has_inputs:
        raise InputError(
            'request body needs exactly one of "instances" (a list of rows) or "inputs" (tensors by input name)'
        )
    if has_instances:
        columns = _columns_from_instances(body["instances"], signature)
    else:
        columns = _columns_from_inputs(body["inputs"], signature)
    _check_names(columns, signature)
    arrays = {spec.name: _array_from_json(spec, columns[spec.name], max_depth=spec.rank) for spec in signature.inputs}
    return check_inputs(arrays, signature, max_batch_size=max_batch_size, allow_non_finite=allow_non_finite)


def _columns_from_instances(instances: Any, signature: Signature) -> dict[str, Any]:
    if not isinstance(instances, list) or not instances:
        raise InputError('"instances" must be a non-empty list of rows')
    if isinstance(instances[0], dict):
        names = list(instances[0])
        _check_names(names, signature)
        columns: dict[str, list[Any]] = {name: [] for name in names}
        for i, row in enumerate(instances):
            if not isinstance(row, dict) or row.keys() != columns.keys():
                raise InputError(
                    f"instance {i} must be an object with the same inputs as instance 0 ({', '.join(names)})"
                )
            for name, value in row.items():
                columns[name].append(value)
        return columns
    if len(signature.inputs) != 1:
        names_text = ", ".join(f'"{n}"' for n in signature.input_names)
        raise InputError(
            f"the model has {len(signature.inputs)} inputs ({names_text}): each instance "
            "must be an object of input name -> value"
        )
    return {signature.inputs[0].name: instances}


def _columns_from_inputs(inputs: Any, signature: Signature) -> dict[str, Any]:
    if isinstance(inputs, dict):
        return inputs
    if isinstance(inputs, list) and len(signature.inputs) == 1:
        return {signature.inputs[0].name: inputs}
    raise InputError('"inputs" must be an object of input name -> nested list')


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class V2RequestInfo:
    """What a V2 request asked for besides its tensors: id, outputs and their encoding."""

    id: str | None = None
    outputs: tuple[str, ...] = ()
    binary_outputs: frozenset[str] = frozenset()
    parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def timeout_s(self) -> float | None:
        """The request's `timeout` parameter (microseconds, as tritonclient sends it)."""
        timeout = self.parameters.get("timeout")
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0:
            return float(timeout) / 1e6
        return None


def parse_header_length(value: str | None) -> int | None:
    """The `Inference-Header-Content-Length` header as an int, InputError if malformed."""
    if value is None or value == "":
        return None
    try:
        length = int(value)
    except ValueError:
        raise InputError(f"{HEADER_LENGTH_HEADER} must be an integer, got {value!r}") from None
    if length < 0:
        raise InputError(f"{HEADER_LENGTH_HEADER} must not be negative, got {length}")
    return length


def decode_v2_request(
    body: bytes,
    content_type: str | None,
    header_length: int | None,
    signature: Signature,
    *,
    max_batch_size: int | None = None,
    allow_non_finite: bool = False,
) -> tuple[dict[str, Array], V2RequestInfo]:
    """Decode a V2 infer request body (JSON, or JSON header + binary tensors).

    `header_length` is the `Inference-Header-Content-Length` header (see
    `parse_header_length`); without it the whole body is JSON. `content_type` is
    accepted for the record only: tritonclient sends none, and the header length alone
    tells the two layouts apart, as in Triton.
    """
    del content_type
    if header_length is None:
        header: bytes | memoryview = body
        binary = memoryview(b"")
    else:
        if header_length > len(body):
            raise InputError(f"{HEADER_LENGTH_HEADER} is {header_length} but the body has {len(body)} bytes")
        view = memoryview(body)
        header, binary = view[:header_length], view[header_length:]
    request = parse_json(header)
    if not isinstance(request, dict):
        raise InputError("V2 request must be a JSON object")
    tensors = request.get("inputs")
    if not isinstance(tensors, list) or not tensors:
        raise InputError('V2 request needs a non-empty "inputs" list')

    arrays: dict[str, Array] = {}
    offset = 0
    for i, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise InputError(f"inputs[{i}] must be an object with name, shape, datatype, data")
        name, datatype, shape = _tensor_header(tensor, i)
        if not signature.has_input(name):
            expected = ", ".join(f'"{n}"' for n in signature.input_names)
            raise InputError(f'unknown input "{name}"; the model takes {expected}')
        if name in arrays:
            raise InputError(f'input "{name}" appears more than once')
        spec = signature.input(name)
        _check_declared(spec, datatype, shape)
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise InputError(f'input "{name}": "parameters" must be an object')
        if "shared_memory_region" in params:
            raise InputError(f'input "{name}": shared memory is not supported')
        size = params.get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise InputError(f'input "{name}" has both "data" and binary_data_size')
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InputError(f'input "{name}": binary_data_size must be a non-negative integer')
            if offset + size > len(binary):
                raise InputError(
                    f'input "{name}": binary_data_size is {size} bytes but only '
                    f"{len(binary) - offset} bytes of binary data remain"
                )
            arrays[name] = _array_from_binary(spec, shape, binary[offset : offset + size])
            offset += size
        elif "data" in tensor:
            arrays[name] = _array_from_v2_json(spec, shape, tensor["data"])
        else:
            raise InputError(f'input "{name}" has neither "data" nor binary_data_size')
    if offset != len(binary):
        raise InputError(f"{len(binary) - offset} bytes of binary data follow the last binary input")
    checked = check_inputs(arrays, signature, max_batch_size=max_batch_size, allow_non_finite=allow_non_finite)
    return checked, _request_info(request, signature)


def _tensor_header(tensor: Mapping[str, Any], index: int) -> tuple[str, str, list[int]]:
    name = tensor.get("name")
    if not isinstance(name, str):
        raise InputError(f'inputs[{index}] needs a "name" string')
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise InputError(f'input "{name}": unknown datatype {datatype!r}')
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InputError(f'input "{name}": "shape" must be a list of non-negative integers')
    return name, str(datatype), shape


def _array_from_v2_json(spec: TensorSpec, shape: list[int], data: Any) -> Array:
    if not isinstance(data, list):
        data = [data]
    arr = _array_from_json(spec, data, max_depth=max(len(shape), 1))
    expected = math.prod(shape)
    if arr.size != expected:
        raise InputError(f'input "{spec.name}": shape {shape_text(shape)} needs {expected} values, got {arr.size}')
    return arr.reshape(shape)


def _array_from_binary(spec: TensorSpec, shape: list[int], chunk: memoryview) -> Array:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        return _bytes_elements(spec, chunk, count).reshape(shape)
    dtype = numpy_dtype(spec.datatype)
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise InputError(
            f'input "{spec.name}": binary_data_size is {len(chunk)} bytes but '
            f"{spec.datatype} {shape_text(shape)} needs {expected}"
        )
    if dtype.kind == "b":
        raw = np.frombuffer(chunk, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            raise InputError(f'input "{spec.name}": BOOL bytes must be 0 or 1')
        return raw.view(np.bool_).reshape(shape)
    arr = np.frombuffer(chunk, dtype=dtype.newbyteorder("<")).reshape(shape)
    # The binary section starts right after a JSON header of any length, so the data
    # may be misaligned for its dtype; copy then rather than hand ORT an odd pointer.
    return arr if arr.flags.aligned else arr.copy()


_U32 = struct.Struct("<I")


def _bytes_elements(spec: TensorSpec, chunk: memoryview, count: int) -> Array:
    out = np.empty(count, dtype=object)
    offset, end, i = 0, len(chunk), 0
    while offset < end:
        if offset + 4 > end or i >= count:
            break
        (length,) = _U32.unpack_from(chunk, offset)
        offset += 4
        if offset + length > end:
            break
        try:
            out[i] = bytes(chunk[offset : offset + length]).decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f'input "{spec.name}": element {i} is not valid UTF-8') from None
        offset += length
        i += 1
    if i != count or offset != end:
        raise InputError(
            f'input "{spec.name}": binary BYTES data does not hold exactly {count} length-prefixed elements'
        )
    return out


def _request_info(request: Mapping[str, Any], signature: Signature) -> V2RequestInfo:
    params = request.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError('"parameters" must be an object')
    binary_default = params.get("binary_data_output") is True
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError('"id" must be a string')
    wanted = request.get("outputs")
    if wanted is None:
        names = signature.output_names
        binary = frozenset(names) if binary_default else frozenset()
        return V2RequestInfo(request_id, names, binary, params)
    if not isinstance(wanted, list):
        raise InputError('"outputs" must be a list')
    names_list: list[str] = []
    binary_names: set[str] = set()
    for i, out in enumerate(wanted):
        name = out.get("name") if isinstance(out, dict) else None
        if not isinstance(name, str):
            raise InputError(f'outputs[{i}] needs a "name" string')
        if not signature.has_output(name):
            expected = ", ".join(f'"{n}"' for n in signature.output_names)
            raise InputError(f'unknown output "{name}"; the model has {expected}')
        out_params = out.get("parameters") or {}
        if not isinstance(out_params, dict):
            raise InputError(f'output "{name}": "parameters" must be an object')
        if out_params.get("classification"):
            raise InputError(f'output "{name}": the classification extension is not supported')
        if "shared_memory_region" in out_params:
            raise InputError(f'output "{name}": shared memory is not supported')
        if out_params.get("binary_data", binary_default) is True:
            binary_names.add(name)
        if name not in names_list:
            names_list.append(name)
    return V2RequestInfo(request_id, tuple(names_list), frozenset(binary_names), params)


def _serialize_bytes(arr: Array) -> bytes:
    parts: list[bytes] = []
    for item in arr.ravel():
        raw = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_U32.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)


def encode_v2_response(
    model_name: str,
    model_version: str,
    outputs: Mapping[str, Array],
    info: V2RequestInfo,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A V2 infer response body and its headers (`parameters`: the response's own, if any).

    Outputs listed in `info.binary_outputs` go as raw little-endian bytes after the JSON
    header (BYTES as 4-byte-length-prefixed strings), with `Inference-Header-Content-
    Length` set; the others go as flat JSON `data`, NaN/Inf written as null.
    """
    names = info.outputs or tuple(outputs)
    entries: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name in names:
        arr = outputs[name]
        datatype = datatype_from_numpy(arr.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in info.binary_outputs:
            if datatype == "BYTES":
                raw: bytes | memoryview = _serialize_bytes(arr)
            else:
                contiguous = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
                raw = contiguous.reshape(-1).view(np.uint8).data
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif datatype == "BYTES":
            entry["data"] = [_text(v) for v in arr.ravel().tolist()]
        else:
            entry["data"] = np.ascontiguousarray(arr).reshape(-1)
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name}
    if model_version:
        response["model_version"] = model_version
    if info.id is not None:
        response["id"] = info.id
    if parameters:
        response["parameters"] = parameters
    response["outputs"] = entries
    # orjson writes numpy arrays natively, and NaN/Inf as null.
    header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"Content-Type": "application/json"}
    body = b"".join([header, *chunks])
    return body, {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH_HEADER: str(len(header)),
    }
