from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import pytest

from inference import traffic
from inference.shadow import ShadowPool, outputs_agree, shadow_pool, shadow_run
from inference.telemetry.recorder import recorder
from tests.inference.conftest import ROWS, auth

pytestmark = pytest.mark.django_db


def test_the_caller_gets_the_primary_answer_and_the_shadow_is_recorded(
    client: Any, iris_endpoint: Any, iris_v2: Any, engineer: Any, app_key: str
) -> None:
    traffic.traffic_policy_revise(
        endpoint=iris_endpoint,
        routes=[
            {"model": "iris", "version": 1, "role": "primary", "weight": 100},
            {"model": "iris", "version": 2, "role": "shadow", "weight": 0},
        ],
        user=engineer,
    )
    recorder.drain()
    shadow_pool.comparisons.clear()
    for _ in range(5):
        response = client.post(
            "/api/v1/endpoints/iris/predict",
            orjson.dumps({"instances": ROWS}),
            content_type="application/json",
            **auth(app_key),
        )
        assert response.status_code == 200 and response.json()["version"] == 1
    assert shadow_pool.wait_idle(10)
    stats = {key[1:]: value for key, value in recorder.drain().items()}
    shadow = stats[("iris", "iris:2", "shadow")]
    # The comparisons travel with the shadow's counts (monitoring persists them).
    assert (shadow.count, shadow.shadow_compared, shadow.shadow_agreed) == (5, 5, 5)
    assert shadow_pool.snapshot()["iris -> iris:1 -> iris:2"] == {"compared": 5, "agreed": 5, "errors": 0, "dropped": 0}


def test_a_failing_shadow_never_fails_the_caller() -> None:
    pool = ShadowPool(threads=1, max_queue=4)
    key = ("e", "m:1", "m:2")

    def boom() -> Any:
        raise RuntimeError("shadow model exploded")

    assert shadow_run(pool=pool, key=key, call=boom, answered={"y": np.zeros(1)})
    assert pool.wait_idle(5)
    assert pool.comparisons[key].errors == 1


def test_a_full_shadow_queue_drops_copies_instead_of_waiting() -> None:
    pool = ShadowPool(threads=1, max_queue=2)
    key = ("e", "m:1", "m:2")
    release = threading.Event()

    def slow() -> Any:
        release.wait(5)
        return {"y": np.zeros(1)}

    results = [shadow_run(pool=pool, key=key, call=slow, answered={"y": np.zeros(1)}) for _ in range(10)]
    release.set()
    assert results.count(False) >= 7  # one running, two queued, the rest dropped at once
    assert pool.comparisons[key].dropped == results.count(False)
    assert pool.wait_idle(5)


def test_outputs_agree_within_a_tolerance_only() -> None:
    a = {"p": np.array([0.5, 0.5], dtype=np.float32), "label": np.array([1])}
    assert outputs_agree(a, {"p": np.array([0.50001, 0.49999], dtype=np.float32), "label": np.array([1])})
    assert not outputs_agree(a, {"p": np.array([0.6, 0.4], dtype=np.float32), "label": np.array([1])})
    assert not outputs_agree(a, {"p": a["p"]})


def test_a_shadow_that_cannot_take_the_request_never_fails_the_caller(
    client: Any, iris_endpoint: Any, engineer: Any, app_key: str
) -> None:
    from tests.inference.conftest import version_add
    from tests.onnx_models import mlp

    version_add("other", mlp(), engineer)  # input "x" FP32 [-1, 32]: the iris rows do not fit
    traffic.traffic_policy_revise(
        endpoint=iris_endpoint,
        routes=[
            {"model": "iris", "version": 1, "role": "primary", "weight": 100},
            {"model": "other", "version": 1, "role": "shadow", "weight": 0},
        ],
        user=engineer,
    )
    shadow_pool.comparisons.clear()
    response = client.post(
        "/api/v1/endpoints/iris/predict",
        orjson.dumps({"instances": ROWS}),
        content_type="application/json",
        **auth(app_key),
    )
    assert response.status_code == 200 and response.json()["model"] == "iris"
    assert shadow_pool.wait_idle(10)
    assert shadow_pool.snapshot()["iris -> iris:1 -> other:1"]["errors"] == 1
