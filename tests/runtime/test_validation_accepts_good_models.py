from __future__ import annotations

from collections.abc import Callable

import orjson

from inference.runtime.signature import TensorSpec
from inference.runtime.validate_child import CHECKS
from inference.runtime.validation import ValidationReport, validate_model_file
from tests import onnx_models


def test_it_accepts_the_tiny_classifier_and_reports_its_signature_opset_and_producer(
    model_file: Callable[[bytes], str],
) -> None:
    report = validate_model_file(model_file(onnx_models.tiny_classifier()))

    assert report.ok, report.error
    assert [c.name for c in report.checks] == list(CHECKS)
    assert all(c.ok for c in report.checks)
    assert report.error == ""
    assert report.opset == {"ai.onnx": 17}
    assert report.producer == "modelhub-tests 1.0"
    assert report.ir_version == 9
    assert report.signature is not None
    assert report.signature.input("x") == TensorSpec("x", "FP32", (-1, 10), ("batch", None))
    assert report.signature.output_names == ("probabilities", "label")


def test_it_accepts_a_scikit_learn_model_converted_by_skl2onnx(iris_path: str) -> None:
    report = validate_model_file(iris_path)

    assert report.ok, report.error
    assert report.producer.startswith("skl2onnx ")
    assert report.opset["ai.onnx"] == 17
    assert "ai.onnx.ml" in report.opset
    assert report.signature is not None
    assert [(s.name, s.datatype, s.shape) for s in report.signature.inputs] == [("X", "FP32", (-1, 4))]
    assert {s.name for s in report.signature.outputs} == {"label", "probabilities"}


def test_it_accepts_string_and_multi_input_models(model_file: Callable[[bytes], str]) -> None:
    for data in (onnx_models.identity("BYTES"), onnx_models.two_inputs(), onnx_models.mlp()):
        report = validate_model_file(model_file(data))
        assert report.ok, report.error


def test_its_report_is_json_safe_and_round_trips(model_file: Callable[[bytes], str]) -> None:
    report = validate_model_file(model_file(onnx_models.two_inputs()))

    restored = ValidationReport.from_dict(orjson.loads(orjson.dumps(report.to_dict())))

    assert restored.signature == report.signature
    assert restored.checks[-1].name == "smoke_inference"
    assert restored.ok and restored.opset == report.opset and restored.ir_version == report.ir_version
