"""A bandit between two pipelines (the end of the fraud example): the router step calls the
bandit library (inference.bandits) once per request; the answer carries the request id and
the arm chosen, and feedback for that request id trains the router."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from inference.pipelines.graph import GraphError
from tests.pipelines.conftest import fraud_spec

pytest.importorskip("inference.bandits")
pytestmark = pytest.mark.django_db


def bandit_spec(policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "card_id", "datatype": "INT64", "shape": [-1]},
            {"name": "amount", "datatype": "FP32", "shape": [-1]},
        ],
        "outputs": ["fraud_score", "action"],
        "steps": [
            {
                "name": "bandit",
                "kind": "router",
                "arms": [
                    {"name": "strict", "pipeline": "fraud-strict", "version": 1},
                    {"name": "lenient", "pipeline": "fraud-lenient", "version": 1},
                ],
                **policy,
            }
        ],
    }


@pytest.fixture
def two_pipelines(engineer: Any, fraud_versions: Any, feature_set: str) -> None:
    pipeline_services.pipeline_create(name="fraud-strict", spec=fraud_spec(feature_set, 0.2), user=engineer)
    pipeline_services.pipeline_create(name="fraud-lenient", spec=fraud_spec(feature_set, 0.9), user=engineer)


def test_a_bandit_routes_between_two_pipelines_and_takes_feedback(
    client: Any, engineer: Any, two_pipelines: None
) -> None:
    pipeline_services.pipeline_create(
        name="fraud-bandit", spec=bandit_spec({"policy": "epsilon_greedy", "epsilon": 0.2}), user=engineer
    )
    endpoint = endpoints.endpoint_create(name="fraud-bandit", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[{"pipeline": "fraud-bandit", "version": 1, "role": "primary", "weight": 100}],
        user=engineer,
    )
    body = {"inputs": {"card_id": [101, 102], "amount": [2500.0, 5.0]}}
    answer = client.post(
        "/api/v1/endpoints/fraud-bandit/predict?trace=1", orjson.dumps(body), content_type="application/json"
    )
    assert answer.status_code == 200, answer.content
    data = answer.json()
    decision = data["decisions"]["bandit"]
    assert decision["arm"] in ("strict", "lenient") and 0 < decision["propensity"] <= 1
    assert any(t["step"].startswith(f"bandit/{decision['arm']}/") for t in data["trace"])
    feedback = client.post(
        "/api/v1/endpoints/fraud-bandit/feedback",
        orjson.dumps({"request_id": data["request_id"], "reward": 1.0}),
        content_type="application/json",
    )
    assert feedback.status_code in (200, 201, 202), feedback.content


def test_a_bad_router_config_is_refused_when_saved(engineer: Any, two_pipelines: None) -> None:
    with pytest.raises(Exception) as info:
        pipeline_services.pipeline_create(name="fraud-bandit", spec=bandit_spec({"policy": "roulette"}), user=engineer)
    assert getattr(info.value, "status", None) == 400 and "policy" in str(info.value)


def test_an_arm_naming_an_unknown_pipeline_is_refused(engineer: Any, two_pipelines: None) -> None:
    spec = bandit_spec({"policy": "ucb1"})
    spec["steps"][0]["arms"][1] = {"name": "self", "pipeline": "fraud-bandit", "version": 1}
    with pytest.raises(GraphError):
        pipeline_services.pipeline_create(name="fraud-bandit", spec=spec, user=engineer)
