from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import client_for
from tests.inference.conftest import ROWS

pytestmark = pytest.mark.django_db

SPLIT = [{"model": "iris", "version": 1, "role": "primary", "weight": 100}]


def test_an_engineer_creates_an_endpoint_with_a_split_and_sees_its_deployments(api: Any, iris_v1: Any) -> None:
    response = api.post("/api/v1/endpoints/", {"name": "flowers", "description": "d", "routes": SPLIT}, format="json")
    assert response.status_code == 201, response.content
    detail = api.get("/api/v1/endpoints/flowers/").json()
    assert detail["traffic"]["revision"] == 1
    (deployment,) = detail["deployments"]
    assert deployment["state"] == "ready" and deployment["provider"] == "CPUExecutionProvider"
    assert deployment["placement"] == "in_process" and deployment["version"] == 1
    assert [e["name"] for e in api.get("/api/v1/endpoints/").json()["results"]] == ["flowers"]


def test_a_viewer_reads_but_cannot_write(viewer: Any, iris_endpoint: Any) -> None:
    client = client_for(viewer)
    assert client.get("/api/v1/endpoints/iris/").status_code == 200
    assert client.post("/api/v1/endpoints/", {"name": "x"}, format="json").status_code == 403
    assert client.put("/api/v1/endpoints/iris/traffic", {"routes": SPLIT}, format="json").status_code == 403


def test_a_duplicate_endpoint_name_is_a_409(api: Any, iris_endpoint: Any) -> None:
    response = api.post("/api/v1/endpoints/", {"name": "iris"}, format="json")
    assert response.status_code == 409


def test_patch_changes_settings(api: Any, iris_endpoint: Any) -> None:
    response = api.patch(
        "/api/v1/endpoints/iris/", {"timeout_ms": 900, "follows_model": "iris", "follow": "canary"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json()["timeout_ms"] == 900 and response.json()["follows_model"] == "iris"
    bad = api.patch("/api/v1/endpoints/iris/", {"postprocessing": {"steps": [{"op": "exec"}]}}, format="json")
    assert bad.status_code == 400 and "op one of" in bad.json()["error"]["message"]


def test_traffic_put_revisions_and_rollback(api: Any, iris_endpoint: Any, iris_v2: Any) -> None:
    split = [
        {"model": "iris", "version": 1, "role": "primary", "weight": 70},
        {"model": "iris", "version": 2, "role": "canary", "weight": 30},
    ]
    response = api.put("/api/v1/endpoints/iris/traffic", {"routes": split, "comment": "canary 30%"}, format="json")
    assert response.status_code == 200, response.content
    assert api.get("/api/v1/endpoints/iris/traffic").json()["revision"] == 2
    bad = api.put("/api/v1/endpoints/iris/traffic", {"routes": split[:1]}, format="json")
    assert bad.status_code == 400 and "add up to 100, got 70" in bad.json()["error"]["message"]
    revisions = api.get("/api/v1/endpoints/iris/traffic/revisions").json()["results"]
    assert [r["revision"] for r in revisions] == [2, 1]
    back = api.post("/api/v1/endpoints/iris/traffic/rollback", {}, format="json")
    assert back.status_code == 200 and back.json()["revision"] == 3
    assert api.post("/api/v1/endpoints/iris/traffic/rollback", {"revision": 9}, format="json").status_code == 404


def test_keys_are_created_once_listed_without_secret_and_revoked(api: Any, client: Any, iris_endpoint: Any) -> None:
    created = api.post("/api/v1/endpoints/iris/keys/", {"name": "shop"}, format="json")
    assert created.status_code == 201
    secret, prefix = created.json()["key"], created.json()["prefix"]
    listed = api.get("/api/v1/endpoints/iris/keys/").json()["results"]
    assert listed[0]["prefix"] == prefix and "key" not in listed[0]
    body = orjson.dumps({"instances": ROWS})
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    assert (
        client.post("/api/v1/endpoints/iris/predict", body, content_type="application/json", **headers).status_code
        == 200
    )
    assert api.delete(f"/api/v1/endpoints/iris/keys/{prefix}").status_code == 204
    assert (
        client.post("/api/v1/endpoints/iris/predict", body, content_type="application/json", **headers).status_code
        == 401
    )
    assert api.delete("/api/v1/endpoints/iris/keys/nope").status_code == 404


def test_the_openapi_schema_documents_the_endpoint_and_prediction_paths(api: Any) -> None:
    paths = api.get("/api/schema/?format=json").json()["paths"]
    for path in (
        "/api/v1/endpoints/",
        "/api/v1/endpoints/{name}/traffic",
        "/api/v1/endpoints/{name}/traffic/rollback",
        "/api/v1/endpoints/{name}/keys/",
        "/api/v1/endpoints/{name}/predict",
        "/v2/models/{name}/infer",
    ):
        assert path in paths, sorted(paths)
