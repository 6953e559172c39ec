"""The approvals code calls endpoints_follow_production when a version reaches Production."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import TestCase

from inference.models import Endpoint
from registry import promotions
from registry.models import RegisteredModel

pytestmark = pytest.mark.django_db


def promote(version: Any, stage: str, engineer: Any, approver: Any) -> None:
    request = promotions.promotion_request_create(version=version, to_stage=stage, justification="tests", user=engineer)
    with TestCase.captureOnCommitCallbacks(execute=True):
        promotions.promotion_approve(request_id=request.pk, reviewer=approver, comment="ok")


def test_approving_production_moves_an_immediate_follower(
    iris_endpoint: Any, iris_v2: Any, engineer: Any, approver: Any
) -> None:
    Endpoint.objects.filter(pk=iris_endpoint.pk).update(
        follows_model=RegisteredModel.objects.get(name="iris"), follow="immediate"
    )
    promote(iris_v2, "Staging", engineer, approver)
    promote(iris_v2, "Production", engineer, approver)
    current = iris_endpoint.revisions.get(is_current=True)
    assert [(r["version"], r["role"], r["weight"]) for r in current.routes] == [(2, "primary", 100)]
