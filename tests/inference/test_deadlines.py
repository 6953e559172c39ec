from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from inference import endpoints, traffic
from tests.inference.conftest import version_add
from tests.onnx_models import slow_model

pytestmark = pytest.mark.django_db


def test_a_request_past_the_endpoint_deadline_gets_a_504_not_a_hang(client: Any, engineer: Any) -> None:
    version_add("slow", slow_model(depth=64, width=1024), engineer)
    endpoint = endpoints.endpoint_create(name="slow", user=engineer, timeout_ms=20, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "slow", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    rows = np.ones((64, 1024), dtype=np.float32).tolist()
    response = client.post(
        "/api/v1/endpoints/slow/predict", orjson.dumps({"inputs": {"x": rows}}), content_type="application/json"
    )
    assert response.status_code == 504, response.content
    assert response.json()["error"]["code"] == "deadline_exceeded"
    # the session stays usable after the stopped run
    assert client.get("/v2/models/slow/ready").status_code == 200


def test_an_open_endpoint_needs_no_key(client: Any, make_endpoint: Any, iris_v1: Any) -> None:
    make_endpoint("open", [{"model": "iris", "version": 1, "role": "primary", "weight": 100}], require_key=False)
    body = orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]})
    assert client.post("/api/v1/endpoints/open/predict", body, content_type="application/json").status_code == 200


class _StarvedWatchdog:
    """The deadline watchdog thread never scheduled in time (a loaded machine)."""

    def watch(self, deadline: float, run_options: Any) -> Any:
        from inference.runtime.session import _Watch

        return _Watch(deadline, run_options)

    def release(self, watch: Any) -> None:
        pass


def test_a_result_that_arrives_past_the_deadline_is_a_504_even_if_nothing_stopped_the_run(
    client: Any, engineer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the test above was flaky: the run finished because the thread that should stop it
    did not get the CPU, and its late result was answered 200."""
    from inference.runtime import session

    version_add("slow", slow_model(depth=64, width=1024), engineer)
    endpoint = endpoints.endpoint_create(name="slow", user=engineer, timeout_ms=20, require_key=False)
    route = {"model": "slow", "version": 1, "role": "primary", "weight": 100, "max_batch_size": 1}
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[route], user=engineer)
    monkeypatch.setattr(session, "_WATCHDOG", _StarvedWatchdog())
    rows = np.ones((64, 1024), dtype=np.float32).tolist()
    response = client.post(
        "/api/v1/endpoints/slow/predict", orjson.dumps({"inputs": {"x": rows}}), content_type="application/json"
    )
    assert response.status_code == 504, response.content
    assert "past the deadline of 20 ms" in response.json()["error"]["message"]
