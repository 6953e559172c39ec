"""Every bad input is refused before ONNX Runtime sees it, with a message saying what was expected."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from inference.runtime.codec import check_inputs, decode_simple, decode_v2_request
from inference.runtime.errors import InputError
from inference.runtime.session import LoadedModel
from inference.runtime.signature import Signature, TensorSpec

ROW = [0.5] * 10


def _simple(signature: Signature, body: object, **kwargs: object) -> str:
    with pytest.raises(InputError) as excinfo:
        decode_simple(body, signature, **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.status == 400
    return excinfo.value.message


def _v2(signature: Signature, request: dict[str, object], **kwargs: object) -> str:
    with pytest.raises(InputError) as excinfo:
        decode_v2_request(orjson.dumps(request), "application/json", None, signature, **kwargs)  # type: ignore[arg-type]
    return excinfo.value.message


def _tensor(data: object, shape: list[int], datatype: str = "FP32", name: str = "x") -> dict[str, object]:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def test_it_rejects_an_unknown_input_name(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"inputs": {"x": [ROW], "z": [ROW]}})
    assert message == 'unknown input "z"; the model takes "x"'
    assert _v2(tiny_model.signature, _tensor(ROW, [1, 10], name="y")) == 'unknown input "y"; the model takes "x"'


def test_it_rejects_a_missing_input(two_inputs_model: LoadedModel) -> None:
    message = _simple(two_inputs_model.signature, {"inputs": {"a": [[1, 2, 3]]}})
    assert message == 'missing input "b" (INT64 [-1, 1])'


def test_it_rejects_a_declared_datatype_that_is_not_the_signatures(tiny_model: LoadedModel) -> None:
    message = _v2(tiny_model.signature, _tensor(list(range(10)) * 2, [2, 5], "INT64"))
    assert message == 'input "x": expected FP32 [-1, 10], got INT64 [2, 5]'


def test_it_rejects_json_floats_for_an_integer_input(two_inputs_model: LoadedModel) -> None:
    message = _simple(two_inputs_model.signature, {"inputs": {"a": [[1, 2, 3]], "b": [[1.5]]}})
    assert message == 'input "b": expected INT64 values, got floating-point numbers'


def test_it_rejects_strings_for_a_numeric_input(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [["1"] * 10]})
    assert message == 'input "x": expected FP32 values, got strings'


def test_it_rejects_nulls_and_objects_inside_a_tensor(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [[None] * 10]})
    assert message == 'input "x": expected FP32 values, got nulls, objects or mixed values'


def test_it_rejects_a_wrong_fixed_dimension(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [[0.5] * 9]})
    assert message == 'input "x": expected FP32 [-1, 10], got FP32 [1, 9]'


def test_it_rejects_a_wrong_rank(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"inputs": {"x": ROW}})
    assert message == 'input "x": expected FP32 [-1, 10], got FP32 [10]'
    assert _v2(tiny_model.signature, _tensor(ROW, [10])) == 'input "x": expected FP32 [-1, 10], got FP32 [10]'


def test_it_rejects_values_nested_deeper_than_the_rank(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [[[0.5]] * 10]})
    assert message == 'input "x": values nested 3 levels deep, expected at most 2 for FP32 [-1, 10]'


def test_it_rejects_absurdly_deep_nesting_without_recursion(tiny_model: LoadedModel) -> None:
    deep: object = [0.5]
    for _ in range(50_000):
        deep = [deep]
    message = _simple(tiny_model.signature, {"inputs": {"x": deep}})
    assert "values nested 50001 levels deep" in message


def test_it_rejects_json_nested_past_the_parser_limit(tiny_model: LoadedModel) -> None:
    body = b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert _simple(tiny_model.signature, body).startswith("request body is not valid JSON")


def test_it_rejects_ragged_rows(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [ROW, ROW[:5]]})
    assert message == 'input "x": ragged nested lists, every row must have the same length (expected FP32 [-1, 10])'


def test_it_rejects_a_batch_over_the_limit(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [ROW] * 9}, max_batch_size=8)
    assert message == 'input "x": batch of 9 rows exceeds the limit of 8 rows'


def test_it_rejects_nan_and_inf_in_float_inputs(tiny_model: LoadedModel) -> None:
    # JSON cannot carry NaN (orjson refuses it), but the binary extension can.
    values = np.full((2, 10), 0.5, np.float32)
    values[1, 1] = np.nan
    header = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [2, 10], "datatype": "FP32", "parameters": {"binary_data_size": 80}}]}
    )
    with pytest.raises(InputError) as excinfo:
        decode_v2_request(header + values.tobytes(), None, len(header), tiny_model.signature)
    assert excinfo.value.message == 'input "x": NaN or Inf at [1, 1]; non-finite values are not accepted'


def test_it_accepts_nan_when_the_deployment_allows_it(tiny_model: LoadedModel) -> None:
    arrays = {"x": np.full((1, 10), np.nan, np.float32)}
    assert check_inputs(arrays, tiny_model.signature, allow_non_finite=True)["x"].shape == (1, 10)


def test_it_rejects_huge_numbers_that_overflow_float32(tiny_model: LoadedModel) -> None:
    message = _simple(tiny_model.signature, {"instances": [[1e300] * 10]})
    assert message == 'input "x": values out of range for FP32'


def test_it_rejects_integers_out_of_range_for_the_datatype(two_inputs_model: LoadedModel) -> None:
    message = _simple(two_inputs_model.signature, {"inputs": {"a": [[1, 2, 3]], "b": [[2**63]]}})
    assert message.startswith('input "b": ')


def test_it_rejects_an_element_count_that_does_not_match_the_shape(tiny_model: LoadedModel) -> None:
    message = _v2(tiny_model.signature, _tensor(ROW + [0.5], [1, 10]))
    assert message == 'input "x": shape [1, 10] needs 10 values, got 11'


def test_it_rejects_inputs_that_disagree_on_the_batch_dim(two_inputs_model: LoadedModel) -> None:
    message = _simple(two_inputs_model.signature, {"inputs": {"a": [[1, 2, 3]] * 2, "b": [[1]] * 3}})
    assert message == 'inputs "a" and "b" disagree on dim "batch": 2 vs 3'


def test_it_rejects_bodies_in_neither_format(tiny_model: LoadedModel) -> None:
    assert "exactly one of" in _simple(tiny_model.signature, {"rows": [ROW]})
    assert "exactly one of" in _simple(tiny_model.signature, {"instances": [ROW], "inputs": {"x": [ROW]}})
    assert _simple(tiny_model.signature, {"instances": []}) == '"instances" must be a non-empty list of rows'
    assert _simple(tiny_model.signature, b"[1, 2").startswith("request body is not valid JSON")
    assert _simple(tiny_model.signature, b"[1, 2]").startswith("request body must be a JSON object")


def test_it_wants_named_instances_for_a_multi_input_model(two_inputs_model: LoadedModel) -> None:
    message = _simple(two_inputs_model.signature, {"instances": [[1, 2, 3]]})
    assert 'the model has 2 inputs ("a", "b")' in message
    message = _simple(two_inputs_model.signature, {"instances": [{"a": [1, 2, 3], "b": [1]}, {"a": [1, 2, 3]}]})
    assert message.startswith("instance 1 must be an object with the same inputs")


def test_it_rejects_an_empty_tensor(tiny_model: LoadedModel) -> None:
    assert _simple(tiny_model.signature, {"inputs": {"x": [[]]}}) == 'input "x": no values (expected FP32 [-1, 10])'


def test_it_rejects_non_arrays_handed_to_check_inputs(tiny_model: LoadedModel) -> None:
    with pytest.raises(InputError, match='input "x": expected a numpy array, got list'):
        check_inputs({"x": [ROW]}, tiny_model.signature)  # type: ignore[dict-item]


def test_check_inputs_takes_unicode_arrays_for_a_bytes_input() -> None:
    signature = Signature(inputs=(TensorSpec("s", "BYTES", (-1,)),))

    assert check_inputs({"s": np.array(["a", "b"])}, signature)["s"].tolist() == ["a", "b"]
    with pytest.raises(InputError, match='input "s": expected BYTES \\[-1\\], got INT64 \\[2\\]'):
        check_inputs({"s": np.array([1, 2])}, signature)
