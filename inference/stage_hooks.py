"""inference's answers to registry's stage changes (registry/hooks.py), registered in
InferenceConfig.ready(): registry sits below inference and never imports it."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction

from inference import traffic
from inference.models import Endpoint
from inference.selectors import endpoints_routing_to
from registry import hooks
from registry.errors import VersionServing
from registry.models import ModelVersion


def version_serving_refuse(version: ModelVersion) -> None:
    """Refuse archiving while a production or staging endpoint routes to the version, directly
    or through a pipeline whose graph runs it (named by number or by a stage alias)."""
    endpoints = endpoints_routing_to(
        model=version.model.name,
        version=version.version,
        environments=(Endpoint.Environment.PRODUCTION, Endpoint.Environment.STAGING),
    )
    serving = [f'{e.environment} endpoint "{e.name}"' for e in endpoints]
    pipelines = traffic.pipeline_routes_using(
        model=version.model.name,
        version=version.version,
        environments=(Endpoint.Environment.PRODUCTION, Endpoint.Environment.STAGING),
        pinned_only=False,
    )
    serving += [
        f'{e.environment} endpoint "{e.name}" (pipeline {route["pipeline"]} v{route["version"]}, step model "{step}")'
        for e, route, step in pipelines
    ]
    if serving:
        names = [e.name for e in endpoints] + [e.name for e, _, _ in pipelines]
        raise VersionServing(
            f"{version} cannot be archived while it serves traffic on {', '.join(serving)}: "
            "move their traffic off it first",
            details={"endpoints": list(dict.fromkeys(names))},
        )


def stage_change_follow(change: hooks.StageChange) -> None:
    """The version moved aside leaves the production/staging endpoints that can no longer
    serve it, in this transaction, for the version that replaced it; endpoints that follow
    the model's production stage move once the approval commits."""
    version, previous, user = change.version, change.previous, change.user
    if previous is not None:
        traffic.endpoints_move_off(
            version=previous,
            replacement=version,
            user=user,
            reason=f"{version} is in {version.stage} now",
        )
    if change.stage == ModelVersion.Stage.PRODUCTION:
        _follow_production_on_commit(version.pk, previous.pk if previous else None, user.pk)


def _follow_production_on_commit(version_id: int, previous_id: int | None, user_id: int) -> None:
    def call() -> None:
        traffic.endpoints_follow_production(
            model_version=ModelVersion.objects.get(pk=version_id),
            previous_version=ModelVersion.objects.filter(pk=previous_id).first() if previous_id else None,
            user=get_user_model().objects.get(pk=user_id),
        )

    transaction.on_commit(call)


def register() -> None:
    hooks.serving_refusal(version_serving_refuse)
    hooks.on_stage_change(stage_change_follow)
