"""Endpoints have an environment, and what they serve obeys it (issue #12)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import TestCase

from accounts.roles import ADMIN, APPROVER
from audit.models import AuditEvent
from config.errors import Forbidden
from inference import endpoints, environments, traffic
from inference.models import Endpoint, TrafficPolicyRevision
from registry import promotions
from registry import services as registry_services
from registry.errors import VersionServing
from registry.models import ModelVersion
from tests.conftest import client_for, make_user
from tests.inference.conftest import IRIS_META, iris_variant, version_add

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


def route(version: int, role: str = "primary", weight: int = 100) -> dict[str, Any]:
    return {"model": "iris", "version": version, "role": role, "weight": weight}


def staged(version: ModelVersion, stage: str) -> ModelVersion:
    ModelVersion.objects.filter(pk=version.pk).update(stage=stage)
    version.refresh_from_db()
    return version


def current_routes(endpoint: Endpoint) -> list[tuple[int, str, int]]:
    revision = TrafficPolicyRevision.objects.get(endpoint=endpoint, is_current=True)
    return [(r["version"], r["role"], r["weight"]) for r in revision.routes]


@pytest.fixture
def boss(django_user_model: Any) -> Any:
    return make_user(django_user_model, "bea", ADMIN)


@pytest.fixture
def approver(django_user_model: Any) -> Any:
    return make_user(django_user_model, "alice", APPROVER)


@pytest.fixture
def prod_v1(engineer: Any) -> ModelVersion:
    return staged(version_add("iris", iris_variant(0), engineer, IRIS_META), Stage.PRODUCTION)


@pytest.fixture
def v2(engineer: Any, prod_v1: ModelVersion) -> ModelVersion:
    return version_add("iris", iris_variant(1), engineer, IRIS_META)


@pytest.fixture
def production(prod_v1: ModelVersion, approver: Any, engineer: Any) -> Endpoint:
    endpoint = endpoints.endpoint_create(name="iris", user=engineer, environment="production")
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[route(1)], user=approver)
    return endpoint


def test_new_endpoints_are_development_unless_told() -> None:
    assert Endpoint._meta.get_field("environment").default == "development"


def test_a_production_endpoint_refuses_a_version_that_was_never_promoted_with_a_409_naming_it(
    production: Endpoint, v2: ModelVersion, approver: Any
) -> None:
    response = client_for(approver).put(
        "/api/v1/endpoints/iris/traffic", {"routes": [route(1, weight=90), route(2, "canary", 10)]}, format="json"
    )
    assert response.status_code == 409, response.content
    error = response.json()["error"]
    assert error["code"] == "environment_rule"
    assert "iris v2 is in None" in error["message"] and "canary" in error["message"]
    assert error["details"]["stage"] == "None" and error["details"]["version"] == 2
    assert "only Production versions" in error["details"]["rule"]
    assert current_routes(production) == [(1, "primary", 100)]


def test_production_takes_a_staging_version_only_as_a_shadow(
    production: Endpoint, v2: ModelVersion, approver: Any
) -> None:
    staged(v2, Stage.STAGING)
    with pytest.raises(environments.EnvironmentRuleBroken, match="is in Staging"):
        traffic.traffic_policy_revise(
            endpoint=production, routes=[route(1, weight=90), route(2, "canary", 10)], user=approver
        )
    traffic.traffic_policy_revise(endpoint=production, routes=[route(1), route(2, "shadow", 0)], user=approver)
    assert current_routes(production) == [(1, "primary", 100), (2, "shadow", 0)]


def test_a_rollout_candidate_may_be_a_staging_canary_on_production(
    production: Endpoint, v2: ModelVersion, approver: Any
) -> None:
    staged(v2, Stage.STAGING)
    traffic.traffic_policy_revise(
        endpoint=production,
        routes=[route(1, weight=95), route(2, "canary", 5)],
        user=None,
        rollout_candidate=("model", "iris", 2),
    )
    assert current_routes(production) == [(1, "primary", 95), (2, "canary", 5)]
    # ... but never its primary.
    with pytest.raises(environments.EnvironmentRuleBroken):
        traffic.traffic_policy_revise(
            endpoint=production, routes=[route(2)], user=None, rollout_candidate=("model", "iris", 2)
        )


def test_staging_takes_staging_or_production_versions_only(
    prod_v1: ModelVersion, v2: ModelVersion, engineer: Any
) -> None:
    endpoint = endpoints.endpoint_create(name="iris-staging", user=engineer, environment="staging")
    with pytest.raises(environments.EnvironmentRuleBroken, match="staging endpoint takes only Staging or Production"):
        traffic.traffic_policy_revise(endpoint=endpoint, routes=[route(2)], user=engineer)
    staged(v2, Stage.STAGING)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[route(1, weight=50), route(2, "canary", 50)], user=engineer
    )
    assert current_routes(endpoint) == [(1, "primary", 50), (2, "canary", 50)]


def test_development_takes_any_validated_version(v2: ModelVersion, engineer: Any) -> None:
    endpoint = endpoints.endpoint_create(name="iris-dev", user=engineer)
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[route(2)], user=engineer)
    assert current_routes(endpoint) == [(2, "primary", 100)]


def test_traffic_changes_on_production_need_the_approver_role(
    production: Endpoint, engineer: Any, approver: Any
) -> None:
    response = client_for(engineer).put("/api/v1/endpoints/iris/traffic", {"routes": [route(1)]}, format="json")
    assert response.status_code == 403, response.content
    assert "approver" in response.json()["error"]["message"]
    response = client_for(engineer).post("/api/v1/endpoints/iris/traffic/rollback", {}, format="json")
    assert response.status_code == 403
    assert TrafficPolicyRevision.objects.filter(endpoint=production).count() == 1
    response = client_for(approver).put("/api/v1/endpoints/iris/traffic", {"routes": [route(1)]}, format="json")
    assert response.status_code == 200, response.content


def test_traffic_audit_records_show_the_split_readably(production: Endpoint, approver: Any) -> None:
    traffic.traffic_policy_revise(endpoint=production, routes=[route(1)], user=approver, comment="again")
    event = AuditEvent.objects.filter(action="traffic.revise").order_by("-pk").first()
    assert event.before["split"] == "iris v1 primary 100%"
    assert event.after["split"] == "iris v1 primary 100%"


def test_changing_the_environment_is_an_admins_audited_action(
    prod_v1: ModelVersion, v2: ModelVersion, engineer: Any, approver: Any, boss: Any
) -> None:
    endpoint = endpoints.endpoint_create(name="iris-dev", user=engineer)
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[route(2)], user=engineer)
    response = client_for(approver).patch("/api/v1/endpoints/iris-dev/", {"environment": "production"}, format="json")
    assert response.status_code == 403
    # v2 was never promoted: the endpoint cannot become production while it serves v2.
    response = client_for(boss).patch("/api/v1/endpoints/iris-dev/", {"environment": "production"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["details"]["version"] == 2
    traffic.traffic_policy_revise(endpoint=endpoint, routes=[route(1)], user=engineer)
    response = client_for(boss).patch("/api/v1/endpoints/iris-dev/", {"environment": "production"}, format="json")
    assert response.status_code == 200 and response.json()["environment"] == "production"
    event = AuditEvent.objects.get(action="endpoint.environment", object_id=str(endpoint.pk))
    assert (event.actor_name, event.before, event.after) == (
        "bea",
        {"environment": "development"},
        {"environment": "production"},
    )


def test_creating_a_production_endpoint_with_a_forbidden_split_leaves_nothing_behind(
    v2: ModelVersion, approver: Any
) -> None:
    response = client_for(approver).post(
        "/api/v1/endpoints/", {"name": "new", "environment": "production", "routes": [route(2)]}, format="json"
    )
    assert response.status_code == 409, response.content
    assert not Endpoint.objects.filter(name="new").exists()


def test_approving_a_new_production_version_moves_production_endpoints_off_the_old_one(
    production: Endpoint, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    request = promotions.promotion_request_create(version=v2, to_stage=Stage.STAGING, justification="ok", user=engineer)
    promotions.promotion_approve(request_id=request.pk, reviewer=approver)
    request = promotions.promotion_request_create(
        version=v2, to_stage=Stage.PRODUCTION, justification="ok", user=engineer
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        promotions.promotion_approve(request_id=request.pk, reviewer=approver)
    assert ModelVersion.objects.get(pk=v2.pk - 1).stage == Stage.ARCHIVED
    assert current_routes(production) == [(2, "primary", 100)]
    event = AuditEvent.objects.get(action="traffic.move_off")
    assert event.after["split"] == "iris v2 primary 100%" and "moved off iris v1 (Archived)" in event.after["comment"]


def test_a_production_rollback_moves_endpoints_to_the_version_it_restores(
    production: Endpoint, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    staged(v2, Stage.STAGING)
    request = promotions.promotion_request_create(
        version=v2, to_stage=Stage.PRODUCTION, justification="ok", user=engineer
    )
    with TestCase.captureOnCommitCallbacks(execute=True):
        promotions.promotion_approve(request_id=request.pk, reviewer=approver)
    assert current_routes(production) == [(2, "primary", 100)]
    with TestCase.captureOnCommitCallbacks(execute=True):
        promotions.production_rollback(model=v2.model, user=approver)
    assert current_routes(production) == [(1, "primary", 100)]


def test_archiving_a_version_a_staging_endpoint_serves_is_refused_with_the_endpoints(
    prod_v1: ModelVersion, v2: ModelVersion, engineer: Any, approver: Any
) -> None:
    staged(v2, Stage.STAGING)
    endpoint = endpoints.endpoint_create(name="iris-staging", user=engineer, environment="staging")
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[route(1, weight=80), route(2, "canary", 20)], user=engineer
    )
    response = client_for(approver).post("/api/v1/models/iris/versions/2/archive", format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["details"]["endpoints"] == ["iris-staging"]
    with pytest.raises(VersionServing):
        registry_services.model_version_archive(version=v2, user=approver)
    request = promotions.promotion_request_create(
        version=v2, to_stage=Stage.ARCHIVED, justification="old", user=engineer
    )
    with pytest.raises(VersionServing, match='staging endpoint "iris-staging"'):
        promotions.promotion_approve(request_id=request.pk, reviewer=approver)
    assert ModelVersion.objects.get(pk=v2.pk).stage == Stage.STAGING
    assert current_routes(endpoint) == [(1, "primary", 80), (2, "canary", 20)]


def test_the_system_acting_for_an_approver_is_not_asked_for_a_role(production: Endpoint) -> None:
    traffic.traffic_policy_revise(endpoint=production, routes=[route(1)], user=None, comment="system")
    assert AuditEvent.objects.filter(action="traffic.revise", actor_name="system").exists()


def test_a_viewer_is_refused_before_the_environment_is_looked_at(production: Endpoint, viewer: Any) -> None:
    with pytest.raises(Forbidden):
        traffic.traffic_policy_revise(endpoint=production, routes=[route(1)], user=viewer)
