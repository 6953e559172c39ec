from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from inference import traffic
from tests.inference.conftest import ROWS, auth

pytestmark = pytest.mark.django_db


@pytest.fixture
def split(iris_endpoint: Any, iris_v2: Any, engineer: Any) -> None:
    traffic.traffic_policy_revise(
        endpoint=iris_endpoint,
        routes=[
            {"model": "iris", "version": 1, "role": "primary", "weight": 50},
            {"model": "iris", "version": 2, "role": "canary", "weight": 50},
        ],
        user=engineer,
    )


def version_of(client: Any, key: str, path: str = "/api/v1/endpoints/iris/predict", **headers: Any) -> int:
    response = client.post(
        path, orjson.dumps({"instances": ROWS}), content_type="application/json", **auth(key), **headers
    )
    assert response.status_code == 200, response.content
    return int(response.json()["version"])


def test_the_same_routing_key_gets_the_same_version(client: Any, app_key: str, split: None) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        seen = {version_of(client, app_key, HTTP_X_ROUTING_KEY=user) for _ in range(8)}
        assert len(seen) == 1, (user, seen)
    spread = Counter(version_of(client, app_key, HTTP_X_ROUTING_KEY=f"user-{i}") for i in range(60))
    assert set(spread) == {1, 2}


def test_a_version_can_be_pinned_by_query_or_header(client: Any, app_key: str, split: None) -> None:
    assert {version_of(client, app_key, "/api/v1/endpoints/iris/predict?version=2") for _ in range(6)} == {2}
    assert {version_of(client, app_key, HTTP_X_MODEL_VERSION="1") for _ in range(6)} == {1}
    assert version_of(client, app_key, HTTP_X_MODEL_VERSION="iris:2", HTTP_X_ROUTING_KEY="alice") == 2


def test_the_answer_names_its_version_as_docs_serving_says(client: Any, app_key: str, split: None) -> None:
    """X-Model-Version carries the version number (docs/serving.md), which pins when sent back."""
    response = client.post(
        "/api/v1/endpoints/iris/predict",
        orjson.dumps({"instances": ROWS}),
        content_type="application/json",
        **auth(app_key),
    )
    version = response.json()["version"]
    assert response["X-Model-Version"] == str(version) and response["X-Model-Name"] == "iris"
    pinned = {version_of(client, app_key, HTTP_X_MODEL_VERSION=response["X-Model-Version"]) for _ in range(4)}
    assert pinned == {version}
