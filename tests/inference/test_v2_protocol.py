"""The Open Inference Protocol through Django's test client (tritonclient: test_tritonclient.py)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest

from tests.inference.conftest import ROWS, auth

pytestmark = pytest.mark.django_db

FLAT = [v for row in ROWS for v in row]


def infer(client: Any, body: Any, key: str | None, path: str = "/v2/models/iris/infer", **extra: Any) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(path, data, content_type="application/json", **(auth(key) if key else {}), **extra)


def tensor(**changes: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": FLAT, **changes}]}


def test_server_health_and_metadata(client: Any, db: Any) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]


def test_model_metadata_comes_from_the_signature(client: Any, app_key: str) -> None:
    body = client.get("/v2/models/iris", **auth(app_key)).json()
    assert body["name"] == "iris" and body["versions"] == ["1"] and body["platform"] == "onnxruntime_onnx"
    assert body["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in body["outputs"]} == {"label", "probabilities"}
    assert client.get("/v2/models/iris/versions/1", **auth(app_key)).json()["versions"] == ["1"]
    assert client.get("/v2/models/iris/ready", **auth(app_key)).status_code == 200
    assert client.get("/v2/models/iris/versions/1/ready", **auth(app_key)).status_code == 200


def test_infer_json(client: Any, app_key: str) -> None:
    response = infer(client, {"id": "r1", **tensor()}, app_key)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_name"] == "iris" and body["model_version"] == "1" and body["id"] == "r1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["data"] == [0, 2] and outputs["probabilities"]["shape"] == [2, 3]


def test_infer_binary_in_and_out(client: Any, app_key: str) -> None:
    header = orjson.dumps(
        {
            "inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": 32}}],
            "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
        }
    )
    body = header + np.array(ROWS, dtype=np.float32).tobytes()
    response = client.post(
        "/v2/models/iris/versions/1/infer",
        body,
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
        **auth(app_key),
    )
    assert response.status_code == 200, response.content
    length = int(response["Inference-Header-Content-Length"])
    meta = orjson.loads(response.content[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert struct.unpack("<2q", response.content[length:]) == (0, 2)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (tensor(name="Y"), 400, 'unknown input "Y"'),
        (tensor(datatype="INT64"), 400, "expected FP32 [-1, 4], got INT64"),
        (tensor(shape=[2, 2, 2]), 400, "expected FP32 [-1, 4]"),
        (tensor(shape=[4, 4]), 400, "needs 16 values"),
        (b"{bad", 400, "not valid JSON"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "not valid JSON"),
    ],
    ids=["name", "dtype", "rank", "count", "invalid", "nested"],
)
def test_bad_requests_get_the_v2_error_shape(client: Any, app_key: str, body: Any, status: int, needle: str) -> None:
    response = infer(client, body, app_key)
    assert response.status_code == status
    error = response.json()["error"]
    assert isinstance(error, str) and needle in error


def test_nan_in_binary_data_is_refused(client: Any, app_key: str) -> None:
    header = orjson.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
    )
    data = np.array([[1.0, np.nan, 1.0, 1.0]], dtype=np.float32).tobytes()
    response = client.post(
        "/v2/models/iris/infer",
        header + data,
        content_type="application/octet-stream",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
        **auth(app_key),
    )
    assert response.status_code == 400 and "NaN or Inf" in response.json()["error"]


def test_a_batch_over_the_endpoint_limit_is_refused(
    client: Any, app_key: str, iris_endpoint: Any, engineer: Any
) -> None:
    from inference import endpoints

    endpoints.endpoint_update(endpoint=iris_endpoint, user=engineer, max_rows_per_request=1)
    response = infer(client, tensor(), app_key)
    assert response.status_code == 400 and "exceeds the limit of 1 rows" in response.json()["error"]


def test_unknown_model_version_key_and_size_errors(client: Any, app_key: str, settings: Any) -> None:
    assert infer(client, tensor(), app_key, "/v2/models/nope/infer").status_code == 404
    response = infer(client, tensor(), app_key, "/v2/models/iris/versions/5/infer")
    assert response.status_code == 404 and "version '5'" in response.json()["error"]
    assert client.get("/v2/models/iris/versions/5/ready", **auth(app_key)).status_code == 404
    assert infer(client, tensor(), None).status_code == 401
    assert infer(client, tensor(), "mh_app_123456789012_revoked").status_code == 401
    settings.PREDICT_MAX_BODY_BYTES = 50
    response = infer(client, tensor(), app_key)
    assert response.status_code == 413 and "over the limit" in response.json()["error"]
