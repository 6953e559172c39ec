"""Rollouts apply to pipelines too (issue #14): a pipeline version is the candidate, real
requests answered by real ONNX Runtime sessions decide the checks (the pipeline's series
"pipeline:<name>:<version>"), and the governance of a hand traffic change still holds."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from accounts.roles import APPROVER
from audit.models import AuditEvent
from inference import endpoints
from inference.models import Endpoint, Rollout, TrafficPolicyRevision
from inference.pipelines import services as pipeline_services
from inference.telemetry.recorder import recorder
from inference.traffic import traffic_policy_revise
from monitoring.flusher import flush_now
from registry.models import ModelVersion
from rollouts import services as rollouts
from tests.conftest import client_for, make_user
from tests.inference.conftest import IRIS_META, ROWS, iris_variant, version_add
from tests.monitoring.conftest import redis_client  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_client")]

# Bake times of a millisecond: every evaluation comes after the traffic it reads.
CHECKS = {"error_rate": {"max_increase": 0.01, "min_requests": 1}}
PLAN = {"steps": [{"weight": w, "bake_s": 0.001} for w in (20, 50, 100)], "checks": CHECKS}
ZERO_WIDTH = [[5.1, 0.0, 1.4, 0.2], [6.7, 0.0, 5.2, 2.3]]  # the iris model answers; "ratio" divides by 0


def iris_pipeline(name: str, *, model_version: int, failing: bool = False) -> dict[str, Any]:
    """The iris model behind a pipeline (same input as the model: one request serves both);
    `failing` adds a rule that divides by the second column, a 400 for rows where it is 0."""
    steps: list[dict[str, Any]] = [{"name": "score", "kind": "model", "model": "iris", "version": model_version}]
    outputs = ["label", "probabilities"]
    if failing:
        steps.append({"name": "ratio", "kind": "transform", "rules": ["ratio = X[0] / X[1]"]})
        outputs.append("ratio")
    return {"inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}], "outputs": outputs, "steps": steps}


def split(endpoint: Endpoint) -> list[tuple[str, int, str, int]]:
    revision = TrafficPolicyRevision.objects.get(endpoint=endpoint, is_current=True)
    return [
        (r.get("model") or f"pipeline {r['pipeline']}", r["version"], r["role"], r["weight"]) for r in revision.routes
    ]


def predict(client: Any, rows: list[list[float]], n: int) -> list[int]:
    body = orjson.dumps({"inputs": {"X": rows}})
    path = "/api/v1/endpoints/flowers/predict"
    return [client.post(path, body, content_type="application/json").status_code for _ in range(n)]


def analysis(action: str) -> dict[str, Any]:
    event = AuditEvent.objects.filter(action=action).order_by("-pk").first()
    assert event is not None, f"no {action} event"
    return next(c for c in event.after["analysis"]["checks"] if c["check"] == "error_rate")


def hand_canary(api: Any) -> Any:
    """The same canary as a rollout's first step, by hand: PUT .../traffic."""
    routes = [
        {"model": "iris", "version": 1, "role": "primary", "weight": 80},
        {"pipeline": "iris-pipe", "version": 1, "role": "canary", "weight": 20},
    ]
    return api.put("/api/v1/endpoints/flowers/traffic", {"routes": routes}, format="json")


@pytest.fixture
def approver(django_user_model: Any) -> Any:
    return make_user(django_user_model, "alice", APPROVER)


@pytest.fixture
def iris(engineer: Any) -> list[ModelVersion]:
    return [version_add("iris", iris_variant(n), engineer, IRIS_META) for n in (0, 1)]


@pytest.fixture
def endpoint(iris: list[ModelVersion], engineer: Any) -> Endpoint:
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, require_key=False)
    traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    recorder.drain()  # counts left in this process by earlier tests
    return endpoint


def test_a_pipeline_candidate_whose_checks_pass_goes_step_by_step_to_100_percent(
    client: Any, endpoint: Endpoint, engineer: Any
) -> None:
    pipeline_services.pipeline_create(name="iris-pipe", spec=iris_pipeline("iris-pipe", model_version=2), user=engineer)
    api = client_for(engineer)
    response = api.post(
        "/api/v1/endpoints/flowers/rollouts", {"pipeline": "iris-pipe", "version": 1, "plan": PLAN}, format="json"
    )
    assert response.status_code == 201, response.content
    rid = response.json()["id"]
    assert response.json()["candidate"] == {"pipeline": "iris-pipe", "version": 1}
    assert split(endpoint) == [("iris", 1, "primary", 80), ("pipeline iris-pipe", 1, "canary", 20)]
    for following in ("step", "succeeded"):
        assert set(predict(client, ROWS, 60)) == {200}
        flush_now()
        assert rollouts.rollout_advance(rollout_id=rid) == following
        check = analysis("rollout.analysis")
        # The candidate's requests were read from the pipeline's own series.
        assert check["result"] == "pass" and check["candidate_requests"] >= 1 and check["candidate"] == 0.0
        if following == "step":
            assert split(endpoint) == [("iris", 1, "primary", 50), ("pipeline iris-pipe", 1, "canary", 50)]
    assert split(endpoint) == [("pipeline iris-pipe", 1, "primary", 100)]
    rollout = Rollout.objects.get(pk=rid)
    assert rollout.state == "succeeded" and rollout.candidate is None
    assert [e.kind for e in rollout.events.all()][-2:] == ["step", "succeeded"]
    assert "pipeline iris-pipe v1 serves all the traffic" in rollout.events.last().detail


def test_a_pipeline_candidate_that_errors_is_rolled_back_to_the_stable_routes(
    client: Any, endpoint: Endpoint, engineer: Any
) -> None:
    spec = iris_pipeline("iris-ratio", model_version=2, failing=True)
    pipeline_services.pipeline_create(name="iris-ratio", spec=spec, user=engineer)
    rollout = rollouts.rollout_start(endpoint=endpoint, pipeline="iris-ratio", version=1, plan=PLAN, user=engineer)
    assert split(endpoint) == [("iris", 1, "primary", 80), ("pipeline iris-ratio", 1, "canary", 20)]
    answers = predict(client, ZERO_WIDTH, 60)
    assert set(answers) == {200, 400}  # the stable model answers, the candidate's rule fails
    flush_now()
    assert rollouts.rollout_advance(rollout_id=rollout.pk) == "rolled_back"
    assert split(endpoint) == [("iris", 1, "primary", 100)]
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and "error_rate" in rollout.reason
    check = analysis("rollout.rollback")
    assert (check["candidate"], check["stable"], check["result"]) == (1.0, 0.0, "fail")
    assert check["candidate_requests"] == answers.count(400)


@pytest.fixture
def production(iris: list[ModelVersion], engineer: Any, approver: Any) -> Endpoint:
    """A production endpoint serving iris v1 (Production); iris v2 (the pipeline's model) is
    in the stage each test gives it."""
    ModelVersion.objects.filter(pk=iris[0].pk).update(stage="Production")
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, environment="production", require_key=False)
    traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=approver
    )
    pipeline_services.pipeline_create(name="iris-pipe", spec=iris_pipeline("iris-pipe", model_version=2), user=engineer)
    recorder.drain()
    return endpoint


@pytest.mark.parametrize(
    ("stage", "plan"),
    [
        ("None", PLAN),
        ("None", {**PLAN, "shadow": {"bake_s": 30}}),
        ("Staging", {**PLAN, "steps": [{"weight": 100, "bake_s": 0.001}]}),  # the primary at once
    ],
    ids=["never-promoted", "never-promoted-shadow-first", "staging-straight-to-100"],
)
def test_a_pipeline_candidate_using_a_version_the_endpoint_may_not_serve_is_refused_like_a_hand_change(
    production: Endpoint, iris: list[ModelVersion], approver: Any, stage: str, plan: dict[str, Any]
) -> None:
    ModelVersion.objects.filter(pk=iris[1].pk).update(stage=stage)
    api = client_for(approver)
    hand = hand_canary(api)
    response = api.post(
        "/api/v1/endpoints/flowers/rollouts", {"pipeline": "iris-pipe", "version": 1, "plan": plan}, format="json"
    )
    assert hand.status_code == response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == hand.json()["error"]["code"] == "environment_rule"
    assert f"uses iris:2, which is in {stage}" in error["message"]
    assert error["details"]["pipeline"] == "iris-pipe" and error["details"]["version"] == 2
    assert not Rollout.objects.exists() and split(production) == [("iris", 1, "primary", 100)]


def test_a_staging_model_step_is_a_production_canary_only_in_a_rollout_an_approver_started(
    client: Any, production: Endpoint, iris: list[ModelVersion], approver: Any
) -> None:
    """The exception a Staging model candidate has, for each model of a pipeline candidate:
    a hand change is still refused; the rollout canaries it, waits before 100 % until the
    model is in Production, then finishes."""
    ModelVersion.objects.filter(pk=iris[1].pk).update(stage="Staging")
    api = client_for(approver)
    hand = hand_canary(api)
    assert hand.status_code == 409 and hand.json()["error"]["code"] == "environment_rule"
    response = api.post(
        "/api/v1/endpoints/flowers/rollouts", {"pipeline": "iris-pipe", "version": 1, "plan": PLAN}, format="json"
    )
    assert response.status_code == 201, response.content
    rid = response.json()["id"]
    assert split(production) == [("iris", 1, "primary", 80), ("pipeline iris-pipe", 1, "canary", 20)]
    assert set(predict(client, ROWS, 60)) == {200}
    flush_now()
    assert rollouts.rollout_advance(rollout_id=rid) == "step"
    assert split(production) == [("iris", 1, "primary", 50), ("pipeline iris-pipe", 1, "canary", 50)]
    assert set(predict(client, ROWS, 60)) == {200}
    flush_now()
    assert rollouts.rollout_advance(rollout_id=rid) == "waiting"  # never the primary while iris v2 is in Staging
    rollout = Rollout.objects.get(pk=rid)
    assert "uses iris:2, which is in Staging" in rollout.reason and "the rollout waits" in rollout.reason
    assert split(production) == [("iris", 1, "primary", 50), ("pipeline iris-pipe", 1, "canary", 50)]
    assert rollouts.rollout_advance(rollout_id=rid) == "waiting"

    # Approved meanwhile (one Production version per model: v1 leaves it).
    ModelVersion.objects.filter(pk=iris[0].pk).update(stage="Archived")
    ModelVersion.objects.filter(pk=iris[1].pk).update(stage="Production")
    assert rollouts.rollout_advance(rollout_id=rid) == "succeeded"
    assert split(production) == [("pipeline iris-pipe", 1, "primary", 100)]


def test_a_candidate_names_a_model_or_a_pipeline_not_both(endpoint: Endpoint, engineer: Any) -> None:
    body = {"pipeline": "iris-pipe", "model": "iris", "version": 1}
    response = client_for(engineer).post("/api/v1/endpoints/flowers/rollouts", body, format="json")
    assert response.status_code == 400 and "not both" in response.json()["error"]["message"]
    missing = client_for(engineer).post(
        "/api/v1/endpoints/flowers/rollouts", {"pipeline": "nope", "version": 1}, format="json"
    )
    assert (
        missing.status_code == 404 and "no version 1 of a pipeline named 'nope'" in missing.json()["error"]["message"]
    )
