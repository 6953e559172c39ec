from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.inference.conftest import ROWS, auth

pytestmark = pytest.mark.django_db


def test_a_warm_prediction_runs_zero_sql_queries(client: Any, app_key: str, django_assert_num_queries: Any) -> None:
    body = orjson.dumps({"instances": ROWS})
    warm = client.post("/api/v1/endpoints/iris/predict", body, content_type="application/json", **auth(app_key))
    assert warm.status_code == 200
    with django_assert_num_queries(0):
        response = client.post("/api/v1/endpoints/iris/predict", body, content_type="application/json", **auth(app_key))
    assert response.status_code == 200


def test_a_warm_v2_inference_runs_zero_sql_queries(client: Any, app_key: str, django_assert_num_queries: Any) -> None:
    body = orjson.dumps({"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 4], "data": sum(ROWS, [])}]})
    warm = client.post("/v2/models/iris/infer", body, content_type="application/json", **auth(app_key))
    assert warm.status_code == 200, warm.content
    with django_assert_num_queries(0):
        response = client.post("/v2/models/iris/infer", body, content_type="application/json", **auth(app_key))
    assert response.status_code == 200
