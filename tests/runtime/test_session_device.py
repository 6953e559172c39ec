"""Asking for a GPU is a wish: the model reports the provider ONNX Runtime really gave it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from inference.runtime.session import LoadedModel, available_providers
from tests import onnx_models

HAS_GPU = Path("/dev/nvidia0").exists()


def test_it_lists_the_providers_this_onnxruntime_build_has() -> None:
    assert "CPUExecutionProvider" in available_providers()


def test_asking_for_a_gpu_reports_the_provider_really_given_and_warns_on_cpu(
    model_file: Callable[[bytes], str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.runtime.session"):
        model = LoadedModel.load(model_file(onnx_models.tiny_classifier()), device="gpu", name="tiny")

    assert model.device_requested == "gpu"
    fell_back = model.provider == "CPUExecutionProvider"
    warned = any("GPU requested but ONNX Runtime gave CPUExecutionProvider" in r.message for r in caplog.records)
    assert warned == fell_back
    if not HAS_GPU:
        assert fell_back
    model.warm()
    assert model.ready


def test_asking_for_the_cpu_gets_the_cpu_without_a_warning(
    model_file: Callable[[bytes], str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.runtime.session"):
        model = LoadedModel.load(model_file(onnx_models.tiny_classifier()), device="cpu")

    assert model.provider == "CPUExecutionProvider"
    assert not caplog.records


def test_an_unknown_device_is_refused(model_file: Callable[[bytes], str]) -> None:
    with pytest.raises(ValueError, match='device must be "cpu" or "gpu", got "tpu"'):
        LoadedModel.load(model_file(onnx_models.tiny_classifier()), device="tpu")  # type: ignore[arg-type]
