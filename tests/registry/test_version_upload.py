from __future__ import annotations

import hashlib

import pytest

from audit.models import AuditEvent
from registry import storage
from registry.models import ModelVersion
from tests.conftest import iris_bytes, upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def churn(api):
    assert api.post("/api/v1/models/", {"name": "churn"}, format="json").status_code == 201
    return "churn"


def leftovers(store):
    """Files in the store's tmp folder: an upload that failed must leave none."""
    tmp = store / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_it_stores_an_upload_by_sha256_and_validates_it(api, churn, artifact_store):
    data = iris_bytes()
    response = upload(api, churn, data, metadata='{"metrics": {"accuracy": 0.97}, "code_commit": "abc123"}')
    assert response.status_code == 201, response.content
    body = response.json()
    digest = hashlib.sha256(data).hexdigest()
    assert body["version"] == 1
    assert body["artifact_sha256"] == digest
    assert body["artifact_size"] == len(data)
    assert body["status"] == "ready", body["validation_report"]
    assert body["metadata"]["metrics"] == {"accuracy": 0.97}
    assert storage.artifact_path(digest).read_bytes() == data
    assert leftovers(artifact_store) == []


def test_the_signature_opset_and_producer_are_extracted(api, churn):
    body = upload(api, churn, iris_bytes()).json()
    inputs = body["signature"]["inputs"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in inputs] == [("X", "FP32", [-1, 4])]
    assert {o["name"] for o in body["signature"]["outputs"]} == {"label", "probabilities"}
    assert body["opset"]["ai.onnx"] == 17
    assert "skl2onnx" in body["producer"]
    assert body["ir_version"] == 9
    check_names = [c["name"] for c in body["validation_report"]["checks"]]
    assert check_names[0] and all(c["ok"] for c in body["validation_report"]["checks"])
    assert any("smoke" in name for name in check_names)


def test_versions_are_numbered_in_order(api, churn):
    from tests import onnx_models

    assert upload(api, churn, iris_bytes()).json()["version"] == 1
    assert upload(api, churn, onnx_models.tiny_classifier()).json()["version"] == 2
    listed = api.get(f"/api/v1/models/{churn}/versions/").json()["results"]
    assert [v["version"] for v in listed] == [2, 1]


def test_it_refuses_the_same_artifact_twice_and_keeps_nothing_new(api, churn, artifact_store):
    upload(api, churn, iris_bytes())
    response = upload(api, churn, iris_bytes())
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "duplicate_artifact"
    assert "already version 1" in response.json()["error"]["message"]
    assert ModelVersion.objects.count() == 1
    assert leftovers(artifact_store) == []


def test_the_same_artifact_may_serve_two_models_from_one_file(api, churn, artifact_store):
    api.post("/api/v1/models/", {"name": "other"}, format="json")
    upload(api, churn, iris_bytes())
    assert upload(api, "other", iris_bytes()).status_code == 201
    assert len(list((artifact_store / "sha256").rglob("*.onnx"))) == 1


def test_a_file_that_is_not_onnx_fails_validation_with_the_reason(api, churn):
    body = upload(api, churn, b"this is a text file, not a model\n" * 10, filename="notes.txt").json()
    assert body["status"] == "failed"
    assert "not a valid ONNX model" in body["validation_report"]["error"]


def test_an_upload_over_the_size_limit_is_refused_and_leaves_nothing(api, churn, settings, artifact_store):
    settings.MAX_ARTIFACT_BYTES = 1000
    response = upload(api, churn, b"\0" * 5000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert ModelVersion.objects.count() == 0
    assert leftovers(artifact_store) == []
    assert not (artifact_store / "sha256").exists()


def test_an_upload_without_a_file_is_a_clear_400(api, churn):
    response = api.post(f"/api/v1/models/{churn}/versions/", {"metadata": "{}"}, format="multipart")
    assert response.status_code == 400
    assert "artifact" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ("{not json", "metadata: malformed JSON"),
        ("[1, 2]", "metadata: expected a JSON object"),
        ('{"metrics": {"accuracy": "high"}}', "metadata.metrics"),
    ],
)
def test_bad_metadata_is_refused_and_the_upload_discarded(api, churn, artifact_store, metadata, message):
    response = upload(api, churn, iris_bytes(), metadata=metadata)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert ModelVersion.objects.count() == 0
    assert leftovers(artifact_store) == []
    assert not list((artifact_store / "sha256").rglob("*.onnx")) if (artifact_store / "sha256").exists() else True


def test_the_artifact_downloads_byte_for_byte(api, churn):
    upload(api, churn, iris_bytes())
    response = api.get(f"/api/v1/models/{churn}/versions/1/artifact")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == iris_bytes()
    assert response["X-Content-SHA256"] == hashlib.sha256(iris_bytes()).hexdigest()
    assert "churn-v1.onnx" in response["Content-Disposition"]


def test_the_uploaded_filename_never_becomes_a_path(api, churn, artifact_store):
    body = upload(api, churn, iris_bytes(), filename="../../../../tmp/evil.onnx").json()
    assert body["artifact_filename"] == "evil.onnx"
    assert all(p.is_relative_to(artifact_store) for p in artifact_store.rglob("*"))


def test_metadata_is_merged_and_tags_replaced(api, churn):
    upload(api, churn, iris_bytes(), metadata='{"metrics": {"accuracy": 0.9}}')
    response = api.patch(
        f"/api/v1/models/{churn}/versions/1/",
        {"metadata": {"params": {"C": 1.0}, "training_data": "s3://bucket/iris.csv"}, "tags": ["candidate"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["metadata"]["metrics"] == {"accuracy": 0.9}
    assert body["metadata"]["params"] == {"C": 1.0}
    assert body["tags"] == ["candidate"]
    assert AuditEvent.objects.filter(action="version.update").count() == 1


def test_a_version_can_be_archived_once(api, churn):
    upload(api, churn, iris_bytes())
    response = api.post(f"/api/v1/models/{churn}/versions/1/archive")
    assert response.status_code == 200
    assert response.json()["stage"] == "Archived"
    again = api.post(f"/api/v1/models/{churn}/versions/1/archive")
    assert again.status_code == 409
    assert api.get(f"/api/v1/models/{churn}/versions/?stage=Archived").json()["count"] == 1


def test_an_unknown_version_is_a_404(api, churn):
    assert api.get(f"/api/v1/models/{churn}/versions/9/").status_code == 404
