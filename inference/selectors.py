"""Reads of the serving tables that more than one caller needs."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.permissions import is_admin, team_scope
from config.errors import NotFound
from inference.models import ApiKey, Deployment, Endpoint, TrafficPolicyRevision
from inference.spec import DeploymentSpec
from registry import storage


def deployment_spec(deployment: Deployment, *, role: str | None = None, weight: int | None = None) -> DeploymentSpec:
    """The plain values a transport needs to serve a deployment (no ORM object leaks).

    `deployment` should come with select_related("endpoint", "model_version__model").
    """
    version = deployment.model_version
    return DeploymentSpec(
        deployment_id=deployment.pk,
        endpoint=deployment.endpoint.name,
        model=version.model.name,
        version=version.version,
        role=role or deployment.role,
        weight=deployment.weight if weight is None else weight,
        artifact_sha256=version.artifact_sha256,
        artifact_path=str(storage.artifact_path(version.artifact_sha256)),
        signature=version.signature or {},
        device=deployment.device,
        placement=deployment.placement,
        max_batch_size=deployment.max_batch_size,
        max_queue_delay_ms=deployment.max_queue_delay_ms,
        pinned=deployment.pinned,
    )


def endpoint_list() -> QuerySet[Endpoint]:
    return Endpoint.objects.select_related("follows_model", "owner", "team")


def revision_current(*, endpoint: Endpoint) -> TrafficPolicyRevision | None:
    return endpoint.revisions.filter(is_current=True).first()


def api_keys_of(*, endpoint: Endpoint) -> QuerySet[ApiKey]:
    return endpoint.api_keys.prefetch_related("endpoints").order_by("-created_at")


def endpoints_routing_to(*, model: str, version: int, environments: tuple[str, ...] | None = None) -> list[Endpoint]:
    """Endpoints whose current split routes to the version (any role), optionally only in
    the given environments; locked rows are not needed: callers hold the model's lock."""
    endpoints = []
    revisions = TrafficPolicyRevision.objects.filter(is_current=True).select_related("endpoint")
    if environments is not None:
        revisions = revisions.filter(endpoint__environment__in=environments)
    for revision in revisions.order_by("endpoint__name"):
        if any(r.get("model") == model and r.get("version") == version for r in revision.routes):
            endpoints.append(revision.endpoint)
    return endpoints


# --- Team scoping of endpoints (accounts.permissions holds the rule, for any team-owned model)


def visible_endpoints(user: Any, queryset: QuerySet[Any] | None = None) -> QuerySet[Any]:
    """Endpoints the user may see; the serving API and the dashboard use this."""
    return team_scope(queryset if queryset is not None else Endpoint.objects.all(), user)


def endpoint_for_user_or_404(user: Any, name: str, queryset: QuerySet[Any] | None = None) -> Any:
    """The endpoint called `name` if the user may see it; NotFound (404) otherwise."""
    endpoints = queryset if queryset is not None else Endpoint.objects.select_related("follows_model", "owner", "team")
    found = team_scope(endpoints, user).filter(name=name).first()
    if found is None:
        raise NotFound(f"no endpoint named {name!r}")
    return found


def scope_by_endpoint_name(queryset: QuerySet[Any], user: Any, *, field: str = "endpoint") -> QuerySet[Any]:
    """Rows keyed by an endpoint's name (roll-ups, samples, alert events) the user may see.

    Monitoring history is kept by name so that it outlives the endpoint; admins see all of
    it, others only the rows of endpoints they can see now.
    """
    if is_admin(user):
        return queryset
    return queryset.filter(**{f"{field}__in": visible_endpoints(user).values("name")})
