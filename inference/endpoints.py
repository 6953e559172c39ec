"""Endpoints: their creation and settings, their team, and the checks a new split must pass
against the endpoint (team fit, pre- and post-processing). Every change writes an audit event
and invalidates the serving caches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from accounts.models import Team
from accounts.permissions import can_access_team, default_team, role_check, team_scope
from accounts.roles import ADMIN
from audit.services import audit_record
from config.errors import Conflict, DomainError, Forbidden, NotFound
from inference import routing_cache
from inference.environments import Environment, environment_rule_check
from inference.models import Deployment, Endpoint
from inference.pipeline import PipelineConfigError, config_check, pipeline_compile
from inference.runtime.signature import Signature
from registry.models import ModelVersion, RegisteredModel
from registry.services import name_check

ENDPOINT_FIELDS = (
    "description",
    "follows_model",
    "follow",
    "canary_weight",
    "preprocessing",
    "postprocessing",
    "max_rows_per_request",
    "timeout_ms",
    "sticky_header",
    "require_key",
    "outlier_scoring",
    "environment",
)


class InvalidPolicy(DomainError):
    status = 400
    code = "invalid_policy"


def _endpoint_snapshot(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "team": endpoint.team.name if endpoint.team_id else None,
        "description": endpoint.description,
        "follows_model": endpoint.follows_model.name if endpoint.follows_model else None,
        "follow": endpoint.follow,
        "canary_weight": endpoint.canary_weight,
        "preprocessing": endpoint.preprocessing,
        "postprocessing": endpoint.postprocessing,
        "max_rows_per_request": endpoint.max_rows_per_request,
        "timeout_ms": endpoint.timeout_ms,
        "sticky_header": endpoint.sticky_header,
        "require_key": endpoint.require_key,
        "outlier_scoring": endpoint.outlier_scoring,
        "environment": endpoint.environment,
    }


def _endpoint_check(changes: dict[str, Any]) -> None:
    if "environment" in changes and changes["environment"] not in Environment.values:
        raise InvalidPolicy(
            f"environment: expected one of {', '.join(Environment.values)}, got {changes['environment']!r}"
        )
    if "follow" in changes and changes["follow"] not in Endpoint.Follow.values:
        raise InvalidPolicy(f"follow: expected one of {', '.join(Endpoint.Follow.values)}, got {changes['follow']!r}")
    if "canary_weight" in changes and not 1 <= int(changes["canary_weight"]) <= 99:
        raise InvalidPolicy(f"canary_weight: expected 1 to 99, got {changes['canary_weight']}")
    if "max_rows_per_request" in changes and not 1 <= int(changes["max_rows_per_request"]) <= 1_000_000:
        raise InvalidPolicy("max_rows_per_request: expected 1 to 1000000")
    if "timeout_ms" in changes and not 1 <= int(changes["timeout_ms"]) <= 600_000:
        raise InvalidPolicy("timeout_ms: expected 1 to 600000")
    header = changes.get("sticky_header")
    if header and not all(c.isalnum() or c == "-" for c in header):
        raise InvalidPolicy(f"sticky_header: {header!r} is not a header name")
    if "preprocessing" in changes or "postprocessing" in changes:
        try:
            config_check(changes.get("preprocessing", {}), changes.get("postprocessing", {}))
        except PipelineConfigError as exc:
            raise InvalidPolicy(str(exc)) from None


# --- Teams ------------------------------------------------------------------------------
# An endpoint belongs to a team (or to none: then every signed-in user sees it). It may
# serve only models of its own team or of no team, so a key for it never reaches another
# team's model; and a route may name only a version the caller may see.


def endpoint_team_choose(
    *, user: AbstractBaseUser | None, team: Team | None = None, models: Sequence[RegisteredModel | None] = ()
) -> Team | None:
    """The team of a new endpoint: the one asked for, else the team of a model it serves
    or follows, else the creator's only team, else none. The creator must belong to it
    (admins excepted): Forbidden otherwise."""
    if team is None:
        team = next((m.team for m in models if m is not None and m.team_id is not None), None)
    if team is None:
        team = default_team(user)
    if team is not None and user is not None and not can_access_team(user, team.pk):
        raise Forbidden(f"you are not a member of team {team.name!r}")
    return team


def route_models(routes: list[dict[str, Any]], *, user: AbstractBaseUser | None) -> list[RegisteredModel]:
    """The models the routes name; a model the user may not see is a NotFound naming the
    version, worded like a missing one. `user=None` is the system (following production)."""
    models = RegisteredModel.objects.select_related("team")
    if user is not None:
        models = team_scope(models, user)
    routes = [r for r in routes if r.get("model")]  # pipeline routes name no model
    found = {m.name: m for m in models.filter(name__in={r["model"] for r in routes})}
    for route in routes:
        if route["model"] not in found:
            raise NotFound(f"no version {route['version']} of a model named {route['model']!r}")
    return list(found.values())


def team_fit_check(*, endpoint_name: str, team: Team | None, models: Sequence[RegisteredModel | None]) -> None:
    """An endpoint serves (and follows) only models of its own team or of no team."""
    for model in models:
        if model is None or model.team_id is None or (team is not None and model.team_id == team.pk):
            continue
        owner = "belongs to no team" if team is None else f"belongs to team {team.name!r}"
        raise InvalidPolicy(
            f"endpoint {endpoint_name!r} {owner}, so it cannot serve model {model.name!r} of team "
            f"{model.team.name!r}: an endpoint serves only its own team's models (or models of no team)",
            details={"model": model.name, "model_team": model.team.name, "endpoint_team": team and team.name},
        )


def endpoint_team_adopt(*, endpoint: Endpoint, models: list[RegisteredModel], user: AbstractBaseUser | None) -> None:
    """An endpoint with no team and no split yet takes the team of the first models it
    serves (the dashboard creates an endpoint first and routes it next)."""
    teams = {m.team_id: m.team for m in models if m.team_id is not None}
    if endpoint.team_id is not None or len(teams) != 1 or endpoint.revisions.exists():
        return
    (team,) = teams.values()
    if user is not None and not can_access_team(user, team.pk):
        return
    before = _endpoint_snapshot(endpoint)
    endpoint.team = team
    endpoint.save(update_fields=["team", "updated_at"])
    audit_record(actor=user, action="endpoint.update", obj=endpoint, before=before, after=_endpoint_snapshot(endpoint))


def endpoint_create(
    *,
    name: str,
    user: AbstractBaseUser,
    source_ip: str | None = None,
    team: Team | None = None,
    serves: Sequence[RegisteredModel] = (),
    **fields: Any,
) -> Endpoint:
    """A new endpoint. Its team: `team`, else that of the models it `serves` (the models of
    its first split) or follows, else the creator's only team (see endpoint_team_choose)."""
    name_check(name)
    unknown = set(fields) - set(ENDPOINT_FIELDS)
    if unknown:
        raise InvalidPolicy(f"unknown endpoint field {sorted(unknown)[0]!r}")
    _endpoint_check(fields)
    followed = fields.get("follows_model")
    team = endpoint_team_choose(user=user, team=team, models=[*serves, followed])
    team_fit_check(endpoint_name=name, team=team, models=[*serves, followed])
    try:
        with transaction.atomic():
            endpoint = Endpoint.objects.create(name=name, owner=user, team=team, **fields)
            audit_record(
                actor=user,
                action="endpoint.create",
                obj=endpoint,
                after=_endpoint_snapshot(endpoint),
                source_ip=source_ip,
            )
    except IntegrityError:
        raise Conflict(f"an endpoint named {name!r} already exists") from None
    routing_cache.changed()
    return endpoint


@transaction.atomic
def endpoint_update(
    *, endpoint: Endpoint, user: AbstractBaseUser, source_ip: str | None = None, **changes: Any
) -> Endpoint:
    unknown = set(changes) - {*ENDPOINT_FIELDS, "team"}
    if unknown:
        raise InvalidPolicy(f"unknown endpoint field {sorted(unknown)[0]!r}")
    endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
    check = {"preprocessing": endpoint.preprocessing, "postprocessing": endpoint.postprocessing, **changes}
    _endpoint_check(check)
    if "team" in changes or "follows_model" in changes:
        team = changes.get("team", endpoint.team)
        if "team" in changes and team is not None and not can_access_team(user, team.pk):
            raise Forbidden(f"you are not a member of team {team.name!r}")
        served = [d.model_version.model for d in _current_deployments(endpoint)]
        followed = changes.get("follows_model", endpoint.follows_model)
        team_fit_check(endpoint_name=endpoint.name, team=team, models=[*served, followed])
    if changes.get("environment", endpoint.environment) == endpoint.environment:
        changes.pop("environment", None)
    else:
        _environment_change_check(endpoint, changes["environment"], user)
    before = _endpoint_snapshot(endpoint)
    for key, value in changes.items():
        setattr(endpoint, key, value)
    if "preprocessing" in changes or "postprocessing" in changes:
        # The new settings must fit every version the endpoint serves now.
        for deployment in _current_deployments(endpoint):
            endpoint_pipeline_check(endpoint, deployment.model_version)
    endpoint.save(update_fields=[*changes, "updated_at"])
    audit_record(
        actor=user,
        action="endpoint.update",
        obj=endpoint,
        before=before,
        after=_endpoint_snapshot(endpoint),
        source_ip=source_ip,
    )
    if "environment" in changes:
        audit_record(
            actor=user,
            action="endpoint.environment",
            obj=endpoint,
            before={"environment": before["environment"]},
            after={"environment": endpoint.environment},
            source_ip=source_ip,
        )
    routing_cache.changed()
    return endpoint


def _environment_change_check(endpoint: Endpoint, environment: str, user: AbstractBaseUser) -> None:
    """Changing an endpoint's environment is an admin's action, and what it serves now must
    obey the new environment's rule (move the traffic first)."""
    role_check(user, ADMIN, to="changing an endpoint's environment")
    current = endpoint.revisions.filter(is_current=True).first()
    routes = current.routes if current is not None else []
    environment_rule_check(
        environment=environment, endpoint_name=endpoint.name, routes=routes, stages=_stages_of(routes)
    )


def _stages_of(routes: list[dict[str, Any]]) -> dict[tuple[str, int], str]:
    wanted = {(r["model"], r["version"]) for r in routes if r.get("model")}
    rows = ModelVersion.objects.filter(model__name__in={m for m, _ in wanted}).values_list(
        "model__name", "version", "stage"
    )
    return {(name, number): stage for name, number, stage in rows if (name, number) in wanted}


def _current_deployments(endpoint: Endpoint) -> list[Deployment]:
    current = endpoint.revisions.filter(is_current=True).first()
    if current is None:
        return []
    ids = [route["deployment"] for route in current.routes if route.get("deployment")]
    return list(Deployment.objects.filter(pk__in=ids).select_related("model_version__model"))


def endpoint_pipeline_check(endpoint: Endpoint, version: ModelVersion) -> None:
    try:
        pipeline_compile(
            endpoint.preprocessing,
            endpoint.postprocessing,
            signature=Signature.from_dict(version.signature),
            metadata=version.metadata or {},
        )
    except PipelineConfigError as exc:
        raise InvalidPolicy(f"{version}: {exc}") from None
