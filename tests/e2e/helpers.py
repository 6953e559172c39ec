"""Shared set-up for the browser journeys: real models through the real API."""

from __future__ import annotations

from typing import Any

from tests.conftest import client_for, iris_bytes, upload


def iris_variant() -> bytes:
    import onnx

    model = onnx.load_from_string(iris_bytes())
    model.doc_string = "second build"
    return model.SerializeToString()


def ready_iris(user: Any, name: str = "iris", versions: int = 2) -> None:
    """Register `name` and upload `versions` validated builds of the iris model via the API."""
    api = client_for(user)
    assert api.post("/api/v1/models/", {"name": name}, format="json").status_code == 201
    for artifact in [iris_bytes(), iris_variant()][:versions]:
        body = upload(api, name, artifact, metadata='{"metrics": {"accuracy": 0.95}}').json()
        if body["status"] != "ready":
            body = api.get(f"/api/v1/models/{name}/versions/{body['version']}/").json()
        assert body["status"] == "ready", body
