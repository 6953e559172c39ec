"""A failed validation's report names the model, never where the server keeps it."""

from __future__ import annotations

import json

import pytest
from onnx import TensorProto, helper

from tests.conftest import upload

pytestmark = pytest.mark.django_db


def shapes_that_do_not_add() -> bytes:
    """Passes the ONNX checker; ONNX Runtime refuses it, naming the file it loaded."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_failed_validation_report_shows_no_server_path(api, artifact_store):
    api.post("/api/v1/models/", {"name": "m"}, format="json")
    body = upload(api, "m", shapes_that_do_not_add()).json()
    assert body["status"] == "failed"
    report = body["validation_report"]
    assert report["error"].startswith("ONNX Runtime cannot load the model: Load model from <model> failed")
    assert "Incompatible dimensions" in report["error"]
    text = json.dumps(body)
    assert str(artifact_store) not in text and "sha256/" not in text
