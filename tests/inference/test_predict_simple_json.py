from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.inference.conftest import ROWS, auth

pytestmark = pytest.mark.django_db


def post(client: Any, name: str, body: Any, key: str | None = None, path_suffix: str = "", **extra: Any) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = auth(key) if key else {}
    return client.post(
        f"/api/v1/endpoints/{name}/predict{path_suffix}", data, content_type="application/json", **headers, **extra
    )


def test_it_answers_instances_with_outputs_and_the_version(client: Any, app_key: str) -> None:
    response = post(client, "iris", {"instances": ROWS}, app_key)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["endpoint"] == "iris" and body["model"] == "iris" and body["version"] == 1
    assert body["outputs"]["label"] == [0, 2]
    assert len(body["outputs"]["probabilities"]) == 2


def test_it_answers_named_inputs(client: Any, app_key: str) -> None:
    response = post(client, "iris", {"inputs": {"X": ROWS}}, app_key)
    assert response.status_code == 200, response.content
    assert response.json()["outputs"]["label"] == [0, 2]


def test_it_takes_the_key_in_x_api_key_too(client: Any, app_key: str) -> None:
    response = post(client, "iris", {"instances": ROWS}, None, HTTP_X_API_KEY=app_key)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"inputs": {"Y": ROWS}}, 400, 'unknown input "Y"'),
        ({"inputs": {"X": [["a", "b", "c", "d"]]}}, 400, "expected FP32 values"),
        ({"inputs": {"X": [[1.0, 2.0, 3.0]]}}, 400, "expected FP32 [-1, 4]"),
        ({"inputs": {"X": [1.0, 2.0, 3.0, 4.0]}}, 400, "expected FP32 [-1, 4]"),
        ({"inputs": {"X": [[[1.0, 2.0, 3.0, 4.0]]]}}, 400, "nested 3 levels"),
        ({"instances": [[1.0, 2.0, 3.0, 4.0]] * 11}, 400, "exceeds the limit of 10 rows"),
        (b'{"inputs": {"X": [[NaN, 1, 2, 3]]}}', 400, "not valid JSON"),
        (b'{"inputs": {"X": [[1e999, 1, 2, 3]]}}', 400, "infinity"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "not valid JSON"),
        (b"{not json", 400, "not valid JSON"),
        ({"rows": ROWS}, 400, 'exactly one of "instances"'),
    ],
    ids=["name", "dtype", "shape", "rank", "deep", "batch", "nan-literal", "inf", "nested-50000", "invalid", "no-key"],
)
def test_it_refuses_bad_input_with_a_json_error_naming_the_problem(
    client: Any, app_key: str, iris_endpoint: Any, body: Any, status: int, needle: str
) -> None:
    iris_endpoint.max_rows_per_request = 10
    iris_endpoint.save(update_fields=["max_rows_per_request"])
    from inference.routing_cache import edge_cache

    edge_cache.clear()
    response = post(client, "iris", body, app_key)
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert needle in error["message"], error
    assert error["code"] == "invalid_input"


def test_it_refuses_a_body_over_the_size_limit_with_413(client: Any, app_key: str, settings: Any) -> None:
    settings.PREDICT_MAX_BODY_BYTES = 100
    response = post(client, "iris", {"instances": ROWS * 10}, app_key)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_it_refuses_an_unknown_endpoint_with_404(client: Any, app_key: str) -> None:
    response = post(client, "nope", {"instances": ROWS}, app_key)
    assert response.status_code == 404
    assert 'no endpoint named "nope"' in response.json()["error"]["message"]


def test_it_refuses_an_unknown_version_pin_with_404(client: Any, app_key: str) -> None:
    response = post(client, "iris", {"instances": ROWS}, app_key, "?version=7")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_version"


def test_it_refuses_a_missing_key_with_401(client: Any, iris_endpoint: Any) -> None:
    response = post(client, "iris", {"instances": ROWS})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["code"] == "missing_key"


def test_it_refuses_a_wrong_key_with_401(client: Any, iris_endpoint: Any) -> None:
    response = post(client, "iris", {"instances": ROWS}, "mh_app_000000000000_nottherightsecret")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_key"


def test_it_refuses_a_user_token_as_an_app_key(client: Any, iris_endpoint: Any, engineer: Any) -> None:
    from accounts.services import user_token_create

    _, token = user_token_create(user=engineer)
    response = post(client, "iris", {"instances": ROWS}, token)
    assert response.status_code == 401


def test_it_answers_get_with_405(client: Any, app_key: str) -> None:
    response = client.get("/api/v1/endpoints/iris/predict", **auth(app_key))
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_it_records_every_prediction_and_refusal(client: Any, app_key: str) -> None:
    from inference.telemetry.recorder import recorder

    recorder.drain()
    post(client, "iris", {"instances": ROWS}, app_key)
    post(client, "iris", {"inputs": {"Y": ROWS}}, app_key)
    post(client, "iris", {"instances": ROWS})
    stats = recorder.drain()
    by_key = {key[1:]: value for key, value in stats.items()}
    answered = by_key[("iris", "iris:1", "primary")]
    assert answered.count == 2 and answered.errors == {"invalid_input": 1}
    assert by_key[("iris", "", "")].errors == {"missing_key": 1}


def test_calls_to_unknown_endpoints_are_counted_under_one_name(client: Any, app_key: str) -> None:
    from inference.telemetry.recorder import recorder

    recorder.drain()
    for i in range(3):
        post(client, f"made-up-{i}", {"instances": ROWS}, app_key)
    keys = {key[1:] for key in recorder.drain()}
    assert keys == {("(unknown)", "", "")}
