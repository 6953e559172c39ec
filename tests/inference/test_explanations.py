"""Explanations: KernelSHAP through the served model, checked against the closed form.

For a linear model f(x) = x @ W + b, the interventional Shapley value of feature i
against a background is W[i] * (x_i - mean of the background's x_i), whatever the
background: the test sets reference statistics of fewer rows than the background size,
so the background is the whole reference and its mean the reference mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from inference import api_keys, endpoints
from inference.models import Endpoint
from monitoring import drift
from tests import onnx_models
from tests.inference.conftest import auth, version_add

pytestmark = pytest.mark.django_db

RNG = np.random.default_rng(7)


def served_linear(
    make_endpoint: Callable[..., Any], engineer: Any, name: str, d: int, k: int = 2, reference_rows: int = 40
) -> tuple[np.ndarray, np.ndarray, str]:
    """A linear model of d features and k outputs as endpoint `name`, with reference
    statistics of `reference_rows` rows (0: none); its weights, the reference, a key."""
    weights = RNG.normal(size=(d, k))
    version_add(name, onnx_models.linear(weights, RNG.normal(size=k)), engineer)
    endpoint = make_endpoint(name, [{"model": name, "version": 1, "role": "primary", "weight": 100}])
    reference = RNG.normal(loc=2.0, scale=3.0, size=(reference_rows, d)).astype(np.float32).astype(float)
    if reference_rows:
        drift.reference_stats_set(
            model=name,
            version=1,
            features={f"x[{j}]": reference[:, j] for j in range(d)},
            source="upload",
            user=engineer,
        )
    _, key = api_keys.api_key_create(name="app", endpoints=[endpoint], user=engineer)
    return weights.astype(np.float32).astype(float), reference, key


def explain(client: Any, key: str, name: str, body: Any) -> Any:
    return client.post(
        f"/api/v1/endpoints/{name}/explain", orjson.dumps(body), content_type="application/json", **auth(key)
    )


def closed_form(weights: np.ndarray, reference: np.ndarray, x: np.ndarray, column: int) -> np.ndarray:
    return weights[:, column] * (x - reference.mean(axis=0))


def test_attributions_match_the_closed_form_of_a_linear_model(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    weights, reference, key = served_linear(make_endpoint, engineer, "lin", d=4)
    rows = RNG.normal(size=(3, 4)).astype(np.float32).astype(float)
    response = explain(client, key, "lin", {"instances": rows.tolist(), "parameters": {"class_index": 1}})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["method"] == "kernel_shap_exact" and body["background_rows"] == 40
    # 14 coalitions + the background, 40 rows each, + the instance: 601 rows per instance.
    assert body["model_evaluations"] == 3 * 601 and body["model_calls"] == 4
    for x, answer in zip(rows, body["explanations"], strict=True):
        got = np.array([answer["attributions"][f"x[{j}]"] for j in range(4)])
        np.testing.assert_allclose(got, closed_form(weights, reference, x, 1), atol=1e-3)
        assert answer["class_index"] == 1
        assert answer["prediction"] - answer["base_value"] == pytest.approx(got.sum(), abs=1e-3)


def test_sampled_coalitions_still_match_a_linear_model(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    # 12 features: 4094 coalitions; a budget of 2000 rows with 20 background rows samples 98.
    weights, reference, key = served_linear(make_endpoint, engineer, "wide", d=12, reference_rows=20)
    x = RNG.normal(size=12)
    body = {"instances": [x.tolist()], "parameters": {"max_evaluations": 2000, "class_index": 0}}
    response = explain(client, key, "wide", body)
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["method"] == "kernel_shap" and answer["model_evaluations"] <= 2000
    got = np.array([answer["explanations"][0]["attributions"][f"x[{j}]"] for j in range(12)])
    np.testing.assert_allclose(got, closed_form(weights, reference, x.astype(np.float32), 0), atol=1e-3)


def test_v2_explain_names_features_and_follows_a_pinned_version(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    weights, reference, key = served_linear(make_endpoint, engineer, "lin2", d=3)
    x = [0.5, -1.0, 2.0]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": x}], "parameters": {"class_index": 0}}
    response = client.post(
        "/v2/models/lin2/versions/1/explain", orjson.dumps(body), content_type="application/json", **auth(key)
    )
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["model_version"] == "1" and answer["output"] == "y"
    got = [answer["explanations"][0]["attributions"][f"x[{j}]"] for j in range(3)]
    np.testing.assert_allclose(got, closed_form(weights, reference, np.array(x), 0), atol=1e-3)


def test_features_are_named_by_the_endpoints_preprocessing(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    _, _, key = served_linear(make_endpoint, engineer, "named", d=3)
    endpoint = Endpoint.objects.get(name="named")
    endpoints.endpoint_update(
        endpoint=endpoint, user=engineer, preprocessing={"features": {"names": ["age", "income", "tenure"]}}
    )
    response = explain(client, key, "named", {"instances": [{"age": 1.0, "income": 2.0, "tenure": 3.0}]})
    assert response.status_code == 200, response.content
    assert list(response.json()["explanations"][0]["attributions"]) == ["age", "income", "tenure"]


def test_no_reference_statistics_is_a_clear_422(client: Any, make_endpoint: Callable[..., Any], engineer: Any) -> None:
    _, _, key = served_linear(make_endpoint, engineer, "bare", d=3, reference_rows=0)
    response = explain(client, key, "bare", {"instances": [[1.0, 2.0, 3.0]]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "no_background" and error["message"].startswith("no background:")


def test_a_model_with_two_inputs_is_not_explainable(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    version_add("pair", onnx_models.two_inputs(), engineer)
    endpoint = make_endpoint("pair", [{"model": "pair", "version": 1, "role": "primary", "weight": 100}])
    _, key = api_keys.api_key_create(name="app", endpoints=[endpoint], user=engineer)
    response = explain(client, key, "pair", {"inputs": {"a": [[1.0, 2.0, 3.0]], "b": [[1]]}})
    assert response.status_code == 422 and response.json()["error"]["code"] == "not_explainable"
    v2 = client.post(
        "/v2/models/pair/explain", orjson.dumps({"inputs": []}), content_type="application/json", **auth(key)
    )
    assert v2.status_code == 422 and "one tabular input" in v2.json()["error"]


def test_explain_needs_a_key_scoped_to_the_endpoint(
    client: Any, make_endpoint: Callable[..., Any], engineer: Any
) -> None:
    _, _, key = served_linear(make_endpoint, engineer, "mine", d=3)
    served_linear(make_endpoint, engineer, "other", d=3)
    assert explain(client, "", "mine", {"instances": [[1.0, 2.0, 3.0]]}).status_code == 401
    refused = explain(client, key, "other", {"instances": [[1.0, 2.0, 3.0]]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "key_not_allowed"
    assert explain(client, key, "nowhere", {"instances": [[1.0]]}).status_code == 404


def test_bad_parameters_are_400(client: Any, make_endpoint: Callable[..., Any], engineer: Any) -> None:
    _, _, key = served_linear(make_endpoint, engineer, "lin", d=3)
    for parameters in ({"background_size": 0}, {"max_evaluations": "many"}, {"class_index": 9}, {"output": "z"}):
        response = explain(client, key, "lin", {"instances": [[1.0, 2.0, 3.0]], "parameters": parameters})
        assert response.status_code == 400, (parameters, response.content)
