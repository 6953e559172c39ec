"""A model that serves through a pipeline is governed like one routed directly (issue #9's
rule through #14's pipelines): a stage change that would leave a production endpoint
running an unapproved version inside a pipeline is refused, naming the pipeline; a step
on the stage alias follows the promotion by itself."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import TestCase

from accounts.roles import APPROVER
from inference import endpoints, traffic
from inference.environments import EnvironmentRuleBroken
from inference.models import Endpoint, TrafficPolicyRevision
from inference.pipelines import services as pipeline_services
from registry import promotions
from registry import services as registry_services
from registry.errors import VersionServing
from registry.models import ModelVersion
from tests.conftest import make_user
from tests.inference.conftest import IRIS_META, iris_variant, version_add

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


def spec(model: str) -> dict[str, Any]:
    step: dict[str, Any] = {"name": "score", "kind": "model", "model": model}
    return {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": ["label", "probabilities"],
        "steps": [step],
    }


def routes(endpoint: Endpoint) -> list[tuple[str, int, str, int]]:
    revision = TrafficPolicyRevision.objects.get(endpoint=endpoint, is_current=True)
    return [
        (r.get("model") or f"pipeline {r['pipeline']}", r["version"], r["role"], r["weight"]) for r in revision.routes
    ]


def stage(version: ModelVersion) -> str:
    return ModelVersion.objects.get(pk=version.pk).stage


@pytest.fixture
def approver(django_user_model: Any) -> Any:
    return make_user(django_user_model, "alice", APPROVER)


@pytest.fixture
def v1(engineer: Any) -> ModelVersion:
    version = version_add("iris", iris_variant(0), engineer, IRIS_META)
    ModelVersion.objects.filter(pk=version.pk).update(stage=Stage.PRODUCTION)
    version.refresh_from_db()
    return version


@pytest.fixture
def v2(v1: ModelVersion, engineer: Any, approver: Any) -> ModelVersion:
    version = version_add("iris", iris_variant(1), engineer, IRIS_META)
    request = promotions.promotion_request_create(
        version=version, to_stage=Stage.STAGING, justification="ok", user=engineer
    )
    promotions.promotion_approve(request_id=request.pk, reviewer=approver)
    return version


def serve_pipeline(model: str, engineer: Any, approver: Any, environment: str = "production") -> Endpoint:
    """An endpoint whose only route is a pipeline of one model step."""
    pipeline_services.pipeline_create(name="iris-pipe", spec=spec(model), user=engineer)
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, environment=environment)
    route = {"pipeline": "iris-pipe", "version": 1, "role": "primary", "weight": 100}
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[route], user=approver)
    return endpoint


def promote(version: ModelVersion, engineer: Any, approver: Any) -> None:
    request = promotions.promotion_request_create(
        version=version, to_stage=Stage.PRODUCTION, justification="better", user=engineer
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        promotions.promotion_approve(request_id=request.pk, reviewer=approver)


def test_promoting_a_new_version_is_refused_while_a_production_pipeline_names_the_old_one(
    v1: ModelVersion, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    endpoint = serve_pipeline("iris:1", engineer, approver)
    with pytest.raises(EnvironmentRuleBroken, match=r'pipeline iris-pipe v1 .*"flowers"\) runs it as "iris:1"'):
        promote(v2, engineer, approver)
    # Nothing changed: v1 is still what production serves, through the pipeline.
    assert (stage(v1), stage(v2)) == (Stage.PRODUCTION, Stage.STAGING)
    assert routes(endpoint) == [("pipeline iris-pipe", 1, "primary", 100)]


def test_a_pipeline_on_the_stage_alias_follows_the_promotion(
    v1: ModelVersion, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    endpoint = serve_pipeline("iris@production", engineer, approver)
    promote(v2, engineer, approver)
    assert (stage(v1), stage(v2)) == (Stage.ARCHIVED, Stage.PRODUCTION)
    assert routes(endpoint) == [("pipeline iris-pipe", 1, "primary", 100)]
    version = pipeline_services.pipeline_version_get(name="iris-pipe", version=1, team_id=endpoint.team_id, where="")
    assert pipeline_services.stages_of(version) == [("iris", 2, Stage.PRODUCTION)]


@pytest.mark.parametrize("model", ["iris:2", "iris@staging"])
def test_archiving_a_version_a_staging_pipeline_runs_is_refused_naming_the_pipeline(
    model: str, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    serve_pipeline(model, engineer, approver, environment="staging")
    with pytest.raises(VersionServing, match=f'pipeline iris-pipe v1, step model "{model}"') as refused:
        registry_services.model_version_archive(version=v2, user=approver)
    assert refused.value.details["endpoints"] == ["flowers"]
    assert stage(v2) == Stage.STAGING


def test_a_pipeline_that_shadows_the_replaced_version_is_dropped_like_a_direct_shadow(
    v1: ModelVersion, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    pipeline_services.pipeline_create(name="iris-pipe", spec=spec("iris:1"), user=engineer)
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, environment="production")
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[
            {"model": "iris", "version": 1, "role": "primary", "weight": 100},
            {"pipeline": "iris-pipe", "version": 1, "role": "shadow", "weight": 0},
        ],
        user=approver,
    )
    promote(v2, engineer, approver)
    assert (stage(v1), stage(v2)) == (Stage.ARCHIVED, Stage.PRODUCTION)
    # The direct route moved to v2; the pipeline that shadowed v1 left with it.
    assert routes(endpoint) == [("iris", 2, "primary", 100)]


def test_an_endpoint_that_runs_the_replaced_version_only_in_a_shadow_pipeline_drops_that_shadow(
    v1: ModelVersion, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    pipeline_services.pipeline_create(name="iris-live", spec=spec("iris@production"), user=engineer)
    pipeline_services.pipeline_create(name="iris-pipe", spec=spec("iris:1"), user=engineer)
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, environment="production")
    traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=[
            {"pipeline": "iris-live", "version": 1, "role": "primary", "weight": 100},
            {"pipeline": "iris-pipe", "version": 1, "role": "shadow", "weight": 0},
        ],
        user=approver,
    )
    promote(v2, engineer, approver)
    assert (stage(v1), stage(v2)) == (Stage.ARCHIVED, Stage.PRODUCTION)
    assert routes(endpoint) == [("pipeline iris-live", 1, "primary", 100)]
    current = TrafficPolicyRevision.objects.get(endpoint=endpoint, is_current=True)
    assert current.comment.startswith("dropped the pipeline shadows that run iris")
