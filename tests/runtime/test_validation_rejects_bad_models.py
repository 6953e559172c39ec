"""Every bad upload fails validation at the right check, with a reason a person can act on."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

from inference.runtime.validation import ValidationReport, validate_model_file
from tests import onnx_models


def _failed_at(report: ValidationReport, check: str) -> str:
    assert not report.ok
    assert report.failure is not None
    assert report.failure.name == check, report.checks
    # Checks stop at the first failure.
    assert report.checks[-1] is report.failure
    assert report.error == report.failure.detail
    return report.error


def test_it_rejects_a_model_with_external_data(model_file: Callable[[bytes], str]) -> None:
    report = validate_model_file(model_file(onnx_models.external_data("../../etc/passwd")))

    error = _failed_at(report, "external_data")
    assert 'initializer "W" refers to external data at "../../etc/passwd"' in error
    assert "only self-contained models are accepted" in error


def test_it_rejects_an_operator_from_an_unknown_domain(model_file: Callable[[bytes], str]) -> None:
    report = validate_model_file(model_file(onnx_models.custom_domain_op("com.example.evil")))

    error = _failed_at(report, "operator_domains")
    assert 'operator domain "com.example.evil" (op Frobnicate) is not supported' in error


def test_it_rejects_a_truncated_file(model_file: Callable[[bytes], str]) -> None:
    error = _failed_at(validate_model_file(model_file(onnx_models.truncated())), "parse")
    assert error.startswith("not a valid ONNX model: ")


def test_it_rejects_a_file_that_is_not_onnx(model_file: Callable[[bytes], str]) -> None:
    error = _failed_at(validate_model_file(model_file(onnx_models.not_onnx())), "parse")
    assert error.startswith("not a valid ONNX model: ")


def test_it_rejects_an_empty_file(model_file: Callable[[bytes], str]) -> None:
    error = _failed_at(validate_model_file(model_file(b"")), "parse")
    assert error == "not a valid ONNX model: no IR version or no graph"


def test_it_rejects_a_missing_file(tmp_path: object) -> None:
    error = _failed_at(validate_model_file(f"{tmp_path}/nope.onnx"), "parse")
    assert "No such file" in error


def test_it_rejects_an_ir_version_newer_than_onnxruntime_reads(model_file: Callable[[bytes], str]) -> None:
    report = validate_model_file(model_file(onnx_models.future_ir()))

    error = _failed_at(report, "ir_version")
    assert "IR version 14 is newer than onnxruntime" in error
    assert "(at most 13)" in error
    assert report.ir_version == 14


def test_it_rejects_a_model_whose_outputs_are_not_tensors(model_file: Callable[[bytes], str]) -> None:
    report = validate_model_file(model_file(onnx_models.iris_sklearn(zipmap=True)))

    error = _failed_at(report, "signature")
    assert "has type seq(map(int64,tensor(float)))" in error
    assert "zipmap" in error


def test_it_stops_a_sparse_bomb_at_the_memory_limit_without_eating_ram(
    model_file: Callable[[bytes], str],
) -> None:
    data = onnx_models.sparse_bomb()  # ~300 bytes that densify to 5 GB
    assert len(data) < 1000
    started = time.monotonic()

    report = validate_model_file(model_file(data), memory_limit_bytes=2 * 1024**3)

    error = _failed_at(report, "ort_load")
    assert "memory limit of 2 GiB" in error
    assert time.monotonic() - started < 60  # a generous bound: it must not hang
    # ru_maxrss is in KiB on Linux: the child never got near the 5 GB the bomb asks for.
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 2 * 1024**2


def test_it_kills_a_validation_that_takes_too_long(model_file: Callable[[bytes], str]) -> None:
    started = time.monotonic()

    report = validate_model_file(model_file(onnx_models.tiny_classifier()), timeout_s=0.05)

    assert not report.ok
    assert "validation took longer than 0.05 s" in report.error
    assert time.monotonic() - started < 30
