"""Every kind of broken or hostile artifact ends as a failed version with the reason."""

from __future__ import annotations

import pytest

from tests import onnx_models
from tests.conftest import upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def model(api):
    api.post("/api/v1/models/", {"name": "m"}, format="json")
    return "m"


@pytest.mark.parametrize(
    ("builder", "reason"),
    [
        (onnx_models.truncated, "not a valid ONNX model"),
        (lambda: onnx_models.external_data(location="../../etc/passwd"), "external data"),
        (onnx_models.custom_domain_op, "domain"),
        (onnx_models.future_ir, "IR version"),
    ],
    ids=["truncated", "external-data-outside-store", "custom-op-domain", "future-ir"],
)
def test_a_bad_artifact_fails_with_its_reason(api, model, builder, reason):
    body = upload(api, model, builder()).json()
    assert body["status"] == "failed"
    assert reason.lower() in body["validation_report"]["error"].lower()
    assert body["signature"] == {}


def test_a_tiny_model_that_expands_to_gigabytes_fails_on_the_memory_limit(api, model, settings):
    settings.VALIDATION_MEMORY_LIMIT_BYTES = 1024**3
    data = onnx_models.sparse_bomb()
    assert len(data) < 4096
    body = upload(api, model, data).json()
    assert body["status"] == "failed"
    assert "memory" in body["validation_report"]["error"].lower()
