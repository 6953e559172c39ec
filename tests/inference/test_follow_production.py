from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from inference import traffic
from inference.models import Endpoint
from registry.models import ModelVersion, RegisteredModel

pytestmark = pytest.mark.django_db


def follow(endpoint: Any, mode: str, weight: int = 10) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(
        follows_model=RegisteredModel.objects.get(name="iris"), follow=mode, canary_weight=weight
    )


def current(endpoint: Any) -> list[tuple[int, str, int]]:
    revision = endpoint.revisions.get(is_current=True)
    return [(r["version"], r["role"], r["weight"]) for r in revision.routes]


def test_an_immediate_follower_moves_to_the_new_production_version(
    iris_endpoint: Any, iris_v1: ModelVersion, iris_v2: ModelVersion, approver: Any
) -> None:
    follow(iris_endpoint, "immediate")
    revisions = traffic.endpoints_follow_production(model_version=iris_v2, previous_version=iris_v1, user=approver)
    assert len(revisions) == 1
    assert current(iris_endpoint) == [(2, "primary", 100)]
    assert AuditEvent.objects.filter(action="traffic.follow").count() == 1


def test_a_canary_follower_adds_the_new_version_at_its_canary_weight(
    iris_endpoint: Any, iris_v1: ModelVersion, iris_v2: ModelVersion, approver: Any
) -> None:
    follow(iris_endpoint, "canary", 25)
    traffic.endpoints_follow_production(model_version=iris_v2, previous_version=iris_v1, user=approver)
    assert current(iris_endpoint) == [(1, "primary", 75), (2, "canary", 25)]


def test_endpoints_that_do_not_follow_are_left_alone(
    iris_endpoint: Any, iris_v1: ModelVersion, iris_v2: ModelVersion, approver: Any
) -> None:
    assert traffic.endpoints_follow_production(model_version=iris_v2, previous_version=iris_v1, user=approver) == []
    assert current(iris_endpoint) == [(1, "primary", 100)]


def test_a_follower_already_serving_the_version_gets_no_new_revision(
    iris_endpoint: Any, iris_v1: ModelVersion, approver: Any
) -> None:
    follow(iris_endpoint, "immediate")
    assert traffic.endpoints_follow_production(model_version=iris_v1, previous_version=None, user=approver) == []
