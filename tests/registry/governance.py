"""Builders for the governance tests: versions as the validator leaves them, teams, requests."""

from __future__ import annotations

import hashlib
from typing import Any

from django.test import TestCase

from accounts.models import Team
from registry import promotions
from registry.models import ModelVersion, PromotionRequest, RegisteredModel

SIGNATURE = {
    "inputs": [{"name": "X", "datatype": "FP32", "shape": [-1, 4], "dim_names": ["batch", None]}],
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ],
}


def report(*, ok: bool = True, smoke_ok: bool = True) -> dict[str, Any]:
    return {
        "ok": ok,
        "error": "" if ok else "not a valid ONNX model",
        "checks": [
            {"name": "load", "ok": ok, "detail": "loaded with ONNX Runtime"},
            {"name": "smoke inference", "ok": smoke_ok, "detail": "ran on a batch of 2 zeros"},
        ],
        "signature": SIGNATURE,
    }


def model(name: str = "churn", *, team: Team | None = None, gates: dict[str, Any] | None = None) -> RegisteredModel:
    return RegisteredModel.objects.create(name=name, team=team, gate_settings=gates or {})


def version(
    registered: RegisteredModel,
    number: int,
    *,
    status: str = ModelVersion.Status.READY,
    stage: str = ModelVersion.Stage.NONE,
    metrics: dict[str, float] | None = None,
    smoke_ok: bool = True,
    signature: dict[str, Any] | None = None,
) -> ModelVersion:
    """A version row as validation leaves it (the validator itself is tested elsewhere)."""
    ready = status == ModelVersion.Status.READY
    return ModelVersion.objects.create(
        model=registered,
        version=number,
        artifact_sha256=hashlib.sha256(f"{registered.name}-{number}".encode()).hexdigest(),
        artifact_size=100,
        status=status,
        stage=stage,
        validation_report=report(ok=ready, smoke_ok=smoke_ok) if status in ("ready", "failed") else {},
        signature=SIGNATURE if signature is None else signature,
        metadata={"metrics": metrics} if metrics else {},
    )


def team(name: str, *members: Any) -> Team:
    created = Team.objects.create(name=name)
    created.members.add(*members)
    return created


def ask(
    v: ModelVersion, to_stage: str, user: Any, justification: str = "better on last week's data"
) -> PromotionRequest:
    return promotions.promotion_request_create(version=v, to_stage=to_stage, justification=justification, user=user)


def approve(request: PromotionRequest, reviewer: Any, **kwargs: Any) -> PromotionRequest:
    with TestCase.captureOnCommitCallbacks(execute=True):
        return promotions.promotion_approve(request_id=request.pk, reviewer=reviewer, **kwargs)


def in_production(v: ModelVersion, requester: Any, reviewer: Any) -> ModelVersion:
    """Take a version through Staging to Production the regular way."""
    approve(ask(v, "Staging", requester), reviewer)
    approve(ask(v, "Production", requester), reviewer)
    v.refresh_from_db()
    return v
