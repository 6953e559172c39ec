from __future__ import annotations

from django.db.models import Q, QuerySet

from config.errors import NotFound
from registry.models import ModelVersion, RegisteredModel


def model_list(
    *, search: str = "", tag: str = "", stage: str = "", status: str = "", team: str = ""
) -> QuerySet[RegisteredModel]:
    models = RegisteredModel.objects.select_related("team")
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


def model_get(*, name: str) -> RegisteredModel:
    model = RegisteredModel.objects.select_related("team").filter(name=name).first()
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
            versions.filter(tags__contains=[tag]) if _json_contains_supported() else versions.filter(tags__icontains=f'"{tag}"')
        )
    return versions


def version_get(*, model_name: str, version: str | int) -> ModelVersion:
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise NotFound(f"version must be a number, got {version!r}") from None
    found = ModelVersion.objects.select_related("model", "created_by").filter(model__name=model_name, version=number).first()
    if found is None:
        raise NotFound(f"model {model_name!r} has no version {number}")
    return found
