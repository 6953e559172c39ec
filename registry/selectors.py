from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from accounts.permissions import team_scope
from audit.models import AuditEvent
from config.errors import NotFound
from registry.models import ModelVersion, PromotionRequest, RegisteredModel


def model_list(
    *, search: str = "", tag: str = "", stage: str = "", status: str = "", team: str = "", user: Any = None
) -> QuerySet[RegisteredModel]:
    """Models matching the filters; with `user`, only those the user may see (team scoping)."""
    models = RegisteredModel.objects.select_related("team")
    if user is not None:
        models = team_scope(models, user)
    if search:
        models = models.filter(Q(name__icontains=search) | Q(description__icontains=search))
    if tag:
        models = models.filter(tags__contains=[tag]) if _json_contains_supported() else _filter_tag(models, tag)
    if stage:
        models = models.filter(versions__stage=stage)
    if status:
        models = models.filter(versions__status=status)
    if team:
        models = models.filter(team__name=team)
    return models.distinct()


def _json_contains_supported() -> bool:
    from django.db import connection

    return connection.features.supports_json_field_contains


def _filter_tag(models: QuerySet[RegisteredModel], tag: str) -> QuerySet[RegisteredModel]:
    # SQLite has no JSON containment: match the quoted string inside the JSON text.
    return models.filter(tags__icontains=f'"{tag}"')


def model_get(*, name: str, user: Any = None) -> RegisteredModel:
    """One model; with `user`, another team's model is answered as not found."""
    models = RegisteredModel.objects.select_related("team")
    if user is not None:
        models = team_scope(models, user)
    model = models.filter(name=name).first()
    if model is None:
        raise NotFound(f"no model named {name!r}")
    return model


def version_list(*, model: RegisteredModel, stage: str = "", status: str = "", tag: str = "") -> QuerySet[ModelVersion]:
    versions = model.versions.select_related("model", "created_by").order_by("-version")
    if stage:
        versions = versions.filter(stage=stage)
    if status:
        versions = versions.filter(status=status)
    if tag:
        versions = (
            versions.filter(tags__contains=[tag])
            if _json_contains_supported()
            else versions.filter(tags__icontains=f'"{tag}"')
        )
    return versions


def version_get(*, model_name: str, version: str | int, user: Any = None) -> ModelVersion:
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise NotFound(f"version must be a number, got {version!r}") from None
    versions = ModelVersion.objects.select_related("model", "created_by")
    if user is not None:
        versions = team_scope(versions, user, team_field="model__team")
    found = versions.filter(model__name=model_name, version=number).first()
    if found is None:
        raise NotFound(f"model {model_name!r} has no version {number}")
    return found


def artifact_known(*, sha256: str) -> bool:
    """Whether some version (of any team) has this artifact: what an inference worker may download."""
    return ModelVersion.objects.filter(artifact_sha256=sha256).exists()


def promotion_list(
    *, user: Any, status: str = "", mine: bool = False, model: str = "", to_stage: str = ""
) -> QuerySet[PromotionRequest]:
    """The approval queue the user may see (their teams' models and models with no team)."""
    requests = team_scope(
        PromotionRequest.objects.select_related("version__model", "requester", "reviewer", "replaced_version"),
        user,
        team_field="version__model__team",
    )
    if status:
        requests = requests.filter(status=status)
    if mine:
        requests = requests.filter(requester=user)
    if model:
        requests = requests.filter(version__model__name=model)
    if to_stage:
        requests = requests.filter(to_stage=to_stage)
    return requests.order_by("-created_at", "-pk")


def promotion_get(*, request_id: int, user: Any) -> PromotionRequest:
    found = promotion_list(user=user).filter(pk=request_id).first()
    if found is None:
        raise NotFound(f"no promotion request #{request_id}")
    return found


def audit_list(
    *,
    user: Any,
    actor: str = "",
    action: str = "",
    object_type: str = "",
    object_id: str = "",
    since: Any = None,
    until: Any = None,
) -> QuerySet[AuditEvent]:
    """Audit events the user may read (events of other teams' objects are left out)."""
    events = team_scope(AuditEvent.objects.all(), user)
    if actor:
        events = events.filter(actor_name=actor)
    if action:
        # "promotion" matches every promotion.* action; "promotion.approve" only that one.
        events = events.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events.order_by("-created_at", "-id")


def visible_models(user: Any, queryset: QuerySet[Any] | None = None) -> QuerySet[Any]:
    """Registered models the user may see (`queryset` narrows a prepared one)."""
    return team_scope(queryset if queryset is not None else RegisteredModel.objects.all(), user)
