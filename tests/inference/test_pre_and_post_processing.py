from __future__ import annotations

from typing import Any

import orjson
import pytest

from config.errors import DomainError
from inference import endpoints
from tests.inference.conftest import auth

pytestmark = pytest.mark.django_db

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def predict(client: Any, key: str, body: Any) -> Any:
    return client.post(
        "/api/v1/endpoints/iris/predict", orjson.dumps(body), content_type="application/json", **auth(key)
    )


def configure(endpoint: Any, user: Any, pre: dict[str, Any] | None = None, post: dict[str, Any] | None = None) -> None:
    changes: dict[str, Any] = {}
    if pre is not None:
        changes["preprocessing"] = pre
    if post is not None:
        changes["postprocessing"] = post
    endpoints.endpoint_update(endpoint=endpoint, user=user, **changes)


def test_named_features_fill_in_defaults(client: Any, iris_endpoint: Any, engineer: Any, app_key: str) -> None:
    configure(iris_endpoint, engineer, pre={"features": {"names": FEATURES, "defaults": {"petal_width": 0.2}}})
    response = predict(client, app_key, {"instances": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]})
    assert response.status_code == 200, response.content
    assert response.json()["outputs"]["label"] == [0]


def test_a_missing_feature_without_default_is_named(
    client: Any, iris_endpoint: Any, engineer: Any, app_key: str
) -> None:
    configure(iris_endpoint, engineer, pre={"features": {"names": FEATURES}})
    response = predict(client, app_key, {"instances": [{"sepal_length": 5.1}]})
    assert response.status_code == 400
    assert 'missing feature "sepal_width"' in response.json()["error"]["message"]


def test_an_unknown_feature_is_named(client: Any, iris_endpoint: Any, engineer: Any, app_key: str) -> None:
    configure(iris_endpoint, engineer, pre={"features": {"names": FEATURES}})
    response = predict(client, app_key, {"instances": [dict.fromkeys([*FEATURES, "colour"], 1.0)]})
    assert response.status_code == 400 and 'unknown feature "colour"' in response.json()["error"]["message"]


def test_scaling_changes_what_the_model_sees(client: Any, iris_endpoint: Any, engineer: Any, app_key: str) -> None:
    # Rows given in millimetres, scaled back to the centimetres the model was trained on.
    configure(iris_endpoint, engineer, pre={"scale": {"X": {"mean": 0, "std": 10}}})
    response = predict(client, app_key, {"instances": [[51, 35, 14, 2], [67, 30, 52, 23]]})
    assert response.json()["outputs"]["label"] == [0, 2]


def test_labels_threshold_and_clip_shape_the_outputs(
    client: Any, iris_endpoint: Any, engineer: Any, app_key: str
) -> None:
    steps = [
        {"op": "labels", "output": "label", "name": "species"},
        {
            "op": "threshold",
            "output": "probabilities",
            "column": 0,
            "value": 0.5,
            "name": "is_setosa",
            "labels": ["no", "yes"],
        },
        {"op": "clip", "output": "probabilities", "min": 0.1, "max": 0.9},
    ]
    configure(iris_endpoint, engineer, post={"steps": steps})
    outputs = predict(client, app_key, {"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}).json()["outputs"]
    assert outputs["species"] == ["setosa", "virginica"]  # class_names from the version's metadata
    assert outputs["is_setosa"] == ["yes", "no"]
    assert all(0.1 <= p <= 0.9 for row in outputs["probabilities"] for p in row)


@pytest.mark.parametrize(
    ("pre", "post", "needle"),
    [
        ({"scale": {"X": {"mean": 0, "std": 0}}}, None, "must not be zero"),
        ({"scale": {"Z": {"mean": 0}}}, None, "no input 'Z'"),
        ({"scale": {"X": {"mean": [1, 2]}}}, None, "2 values for FP32 [-1, 4]"),
        ({"features": {"names": ["a", "b"]}}, None, "does not take rows of 2 features"),
        ({"code": "import os"}, None, "unknown key 'code'"),
        (None, {"steps": [{"op": "eval", "output": "label"}]}, "op one of"),
        (None, {"steps": [{"op": "clip", "output": "nope", "min": 0}]}, "no output 'nope'"),
        (None, {"steps": [{"op": "threshold", "output": "probabilities", "value": "high"}]}, "finite number"),
    ],
)
def test_settings_that_cannot_work_are_refused_when_saved(
    iris_endpoint: Any, engineer: Any, pre: Any, post: Any, needle: str
) -> None:
    with pytest.raises(DomainError) as refused:
        configure(iris_endpoint, engineer, pre=pre, post=post)
    assert needle in refused.value.message
