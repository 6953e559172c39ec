"""Endpoint rules: endpoints, traffic policy revisions, rollbacks, API keys, following
production. Every change writes an audit event and invalidates the serving caches.

Readiness: a deployment starts LOADING and goes READY once warm (in-process: this
process loaded and warmed it right after the revision committed; worker pool: a worker
reported it warm through `deployment_state_set`). A revision is accepted at once, but
it only takes traffic when every non-shadow deployment in it is READY: until then the
router keeps serving the latest earlier revision that is fully ready ("the revision
waits"; see inference.routing_cache). A deployment that fails to load is FAILED with
the reason; its revision never takes traffic until it is rolled back or revised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.keys import key_generate
from accounts.models import Team
from accounts.permissions import can_access_team, default_team, role_check, team_scope
from accounts.roles import ADMIN, APPROVER
from config.errors import Conflict, DomainError, Forbidden, NotFound
from inference import routing_cache
from inference.models import ApiKey, Deployment, Endpoint, TrafficPolicyRevision
from inference.pipeline import PipelineConfigError, config_check, pipeline_compile
from inference.selectors import endpoints_routing_to
from registry.audit import audit_record
from registry.models import ModelVersion, RegisteredModel
from registry.services import name_check

log = logging.getLogger(__name__)

ROLES = tuple(Deployment.Role.values)
_ROUTE_KEYS = {
    "model",
    "pipeline",
    "version",
    "role",
    "weight",
    "placement",
    "device",
    "max_batch_size",
    "max_queue_delay_ms",
}
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
    "environment",
)


class InvalidPolicy(DomainError):
    status = 400
    code = "invalid_policy"


class EnvironmentRuleBroken(Conflict):
    code = "environment_rule"


# --- environments: what an endpoint may serve ------------------------------------------

Environment = Endpoint.Environment
Stage = ModelVersion.Stage
ENVIRONMENT_RULES: dict[str, str] = {
    Environment.PRODUCTION: (
        "a production endpoint's primary and canary routes take only Production versions; a Staging "
        "version may join only as a shadow, or as the canary of a rollout an approver started"
    ),
    Environment.STAGING: "a staging endpoint takes only Staging or Production versions",
    Environment.DEVELOPMENT: "a development endpoint takes any validated version",
}


def version_allowed(*, environment: str, stage: str, role: str, rollout_canary: bool = False) -> bool:
    """May a version in `stage` take `role` on an endpoint of `environment`?"""
    if environment == Environment.PRODUCTION:
        if role == Deployment.Role.SHADOW or (rollout_canary and role == Deployment.Role.CANARY):
            return stage in (Stage.STAGING, Stage.PRODUCTION)
        return stage == Stage.PRODUCTION
    if environment == Environment.STAGING:
        return stage in (Stage.STAGING, Stage.PRODUCTION)
    return True


def environment_rule_check(
    *,
    environment: str,
    endpoint_name: str,
    routes: list[dict[str, Any]],
    stages: dict[tuple[str, int], str],
    rollout_candidate: tuple[str, int] | None = None,
) -> None:
    """Raise EnvironmentRuleBroken (409) naming the first route the environment forbids.

    `stages` maps (model, version) to its stage; `rollout_candidate` is the version an
    approver-started rollout is moving in (it may be a Staging canary on production).
    """
    for route in routes:
        if route.get("pipeline"):
            continue  # a pipeline's model steps are checked by _pipeline_routes_check
        key = (route["model"], route["version"])
        stage = stages[key]
        if version_allowed(
            environment=environment, stage=stage, role=route["role"], rollout_canary=key == rollout_candidate
        ):
            continue
        raise EnvironmentRuleBroken(
            f"{route['model']} v{route['version']} is in {stage}, so it cannot be the {route['role']} of "
            f'{environment} endpoint "{endpoint_name}": {ENVIRONMENT_RULES[environment]}',
            details={
                "model": route["model"],
                "version": route["version"],
                "stage": stage,
                "role": route["role"],
                "environment": environment,
                "rule": ENVIRONMENT_RULES[environment],
            },
        )


def routes_summary(routes: list[dict[str, Any]]) -> str:
    """A split as people read it: "iris v1 primary 90%, iris v2 canary 10%, iris v3 shadow"."""
    if not routes:
        return "no traffic"
    parts = []
    for r in routes:
        share = "" if r["role"] == Deployment.Role.SHADOW else f" {r['weight']}%"
        what = f"pipeline {r['pipeline']}" if r.get("pipeline") else r["model"]
        parts.append(f"{what} v{r['version']} {r['role']}{share}")
    return ", ".join(parts)


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


def _team_adopt(*, endpoint: Endpoint, models: list[RegisteredModel], user: AbstractBaseUser | None) -> None:
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
            _pipeline_check(endpoint, deployment.model_version)
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


def _pipeline_check(endpoint: Endpoint, version: ModelVersion) -> None:
    from inference.runtime.signature import Signature

    try:
        pipeline_compile(
            endpoint.preprocessing,
            endpoint.postprocessing,
            signature=Signature.from_dict(version.signature),
            metadata=version.metadata or {},
        )
    except PipelineConfigError as exc:
        raise InvalidPolicy(f"{version}: {exc}") from None


def _route_clean(index: int, route: Any) -> dict[str, Any]:
    where = f"routes[{index}]"
    if not isinstance(route, dict):
        raise InvalidPolicy(f"{where}: expected an object with model, version, role, weight")
    unknown = set(route) - _ROUTE_KEYS - {"deployment", "state", "provider", "pipeline_version"}
    if unknown:
        raise InvalidPolicy(f"{where}: unknown key {sorted(unknown)[0]!r}")
    if route.get("pipeline") is not None:
        return _pipeline_route_clean(where, route)
    model, version = route.get("model"), route.get("version")
    if not isinstance(model, str) or not model:
        raise InvalidPolicy(f"{where}.model: expected a model name")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidPolicy(f"{where}.version: expected a version number")
    role, weight = _role_weight(where, route)
    placement = route.get("placement", Deployment.Placement.IN_PROCESS)
    if placement not in Deployment.Placement.values:
        raise InvalidPolicy(f"{where}.placement: expected one of {', '.join(Deployment.Placement.values)}")
    device = route.get("device", Deployment.Device.CPU)
    if device not in Deployment.Device.values:
        raise InvalidPolicy(f"{where}.device: expected one of {', '.join(Deployment.Device.values)}")
    batch = route.get("max_batch_size", 32)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 4096:
        raise InvalidPolicy(f"{where}.max_batch_size: expected 1 to 4096")
    delay = route.get("max_queue_delay_ms", 0.0)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 1000:
        raise InvalidPolicy(f"{where}.max_queue_delay_ms: expected 0 to 1000")
    return {
        "model": model,
        "version": version,
        "role": role,
        "weight": weight,
        "placement": placement,
        "device": device,
        "max_batch_size": batch,
        "max_queue_delay_ms": float(delay),
    }


def _role_weight(where: str, route: dict[str, Any]) -> tuple[str, int]:
    role = route.get("role", Deployment.Role.PRIMARY)
    if role not in ROLES:
        raise InvalidPolicy(f"{where}.role: expected one of {', '.join(ROLES)}, got {role!r}")
    weight = route.get("weight", 0 if role == Deployment.Role.SHADOW else None)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
        raise InvalidPolicy(f"{where}.weight: expected an integer from 0 to 100, got {weight!r}")
    if role == Deployment.Role.SHADOW and weight:
        raise InvalidPolicy(f"{where}: a shadow takes no traffic, so its weight must be 0 (got {weight})")
    return role, weight


def _pipeline_route_clean(where: str, route: dict[str, Any]) -> dict[str, Any]:
    """A route to a pipeline version: {"pipeline": name, "version": N, "role", "weight"}."""
    if route.get("model") is not None:
        raise InvalidPolicy(f"{where}: a route names a model or a pipeline, not both")
    name, version = route.get("pipeline"), route.get("version")
    if not isinstance(name, str) or not name:
        raise InvalidPolicy(f"{where}.pipeline: expected a pipeline name")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidPolicy(f"{where}.version: expected the pipeline's version number")
    role, weight = _role_weight(where, route)
    return {"pipeline": name, "version": version, "role": role, "weight": weight}


def _pipeline_routes_check(endpoint: Endpoint, routes: list[dict[str, Any]]) -> None:
    """Each pipeline route: the endpoint's team may serve it, its graph checks now, and every
    model step and bandit arm obeys the endpoint's environment for the route's role (a
    pipeline has no stage of its own). Its models are loaded here (400 if one fails)."""
    from inference.pipelines import executor
    from inference.pipelines.graph import GraphError
    from inference.pipelines.services import compile_version, pipeline_version_get

    for index, route in enumerate(routes):
        if not route.get("pipeline"):
            continue
        where = f"routes[{index}]"
        version = pipeline_version_get(
            name=route["pipeline"], version=route["version"], team_id=endpoint.team_id, where=where
        )
        try:
            graph = compile_version(version)
        except GraphError as exc:
            raise InvalidPolicy(f"{where}: pipeline {version} no longer checks: {exc.message}") from None
        for ref in graph.models():
            if not version_allowed(environment=endpoint.environment, stage=ref.stage, role=route["role"]):
                raise EnvironmentRuleBroken(
                    f"pipeline {version} uses {ref.label}, which is in {ref.stage}, so it cannot be the "
                    f'{route["role"]} of {endpoint.environment} endpoint "{endpoint.name}": '
                    f"{ENVIRONMENT_RULES[endpoint.environment]}",
                    details={
                        "pipeline": version.pipeline.name,
                        "model": ref.model,
                        "version": ref.version,
                        "stage": ref.stage,
                        "environment": endpoint.environment,
                    },
                )
        try:
            executor.load_models(graph)
        except Exception as exc:  # noqa: BLE001 - a model that will not load is the caller's 400
            raise InvalidPolicy(f"{where}: pipeline {version} could not load its models: {exc}") from None
        route["pipeline_version"] = version.pk


def _traffic_role_check(endpoint: Endpoint, user: AbstractBaseUser | None) -> None:
    """On a production endpoint traffic changes need an approver; user None is the system
    acting for one (a rollout an approver started, following an approved promotion)."""
    if endpoint.environment == Environment.PRODUCTION and user is not None:
        role_check(user, APPROVER, to=f'changing the traffic of production endpoint "{endpoint.name}"')


def routes_check(routes: Any) -> list[dict[str, Any]]:
    """The split's rules, before anything is looked up; InvalidPolicy names the problem."""
    if not isinstance(routes, list) or not routes:
        raise InvalidPolicy("routes: expected a non-empty list of {model, version, role, weight}")
    clean = [_route_clean(i, route) for i, route in enumerate(routes)]
    seen: set[tuple[str, int]] = set()
    for route in clean:
        key = (route.get("model") or f"pipeline {route.get('pipeline')}", route["version"])
        if key in seen:
            raise InvalidPolicy(
                f"{key[0]} version {route['version']} appears more than once; a version takes one route"
            )
        seen.add(key)
    primaries = [r for r in clean if r["role"] == Deployment.Role.PRIMARY]
    if len(primaries) > 1:
        raise InvalidPolicy(f"at most one primary per endpoint, got {len(primaries)}")
    taking = [r for r in clean if r["role"] != Deployment.Role.SHADOW]
    total = sum(r["weight"] for r in taking)
    if total != 100:
        raise InvalidPolicy(f"weights of the primary and canary routes must add up to 100, got {total}")
    return clean


def _versions_resolve(routes: list[dict[str, Any]]) -> dict[tuple[str, int], ModelVersion]:
    found: dict[tuple[str, int], ModelVersion] = {}
    for route in routes:
        version = (
            ModelVersion.objects.select_related("model")
            .filter(model__name=route["model"], version=route["version"])
            .first()
        )
        if version is None:
            raise NotFound(f"no version {route['version']} of a model named {route['model']!r}")
        if version.status != ModelVersion.Status.READY:
            raise Conflict(
                f"{version} is {version.status}, not ready: only validated versions can be deployed",
                details={"status": version.status},
            )
        found[(route["model"], route["version"])] = version
    return found


def traffic_policy_revise(
    *,
    endpoint: Endpoint,
    routes: Any,
    user: AbstractBaseUser | None,
    comment: str = "",
    source_ip: str | None = None,
    action: str = "traffic.revise",
    rollout_candidate: tuple[str, int] | None = None,
) -> TrafficPolicyRevision:
    """Make a new revision of the endpoint's split (a full snapshot) and load what it needs.

    Rules: only validated (ready) model versions; non-shadow weights add up to 100; at
    most one primary; shadows have weight 0; a version appears once; the versions obey
    the endpoint's environment (`environment_rule_check`: the one place that decides it,
    under the endpoint's lock); on a production endpoint only an approver (or the system,
    user None, acting for one) changes traffic. In-process
    deployments are loaded and warmed in this process before this returns (READY, or
    FAILED with the reason); worker-pool ones are asked for on commit and stay LOADING
    until a worker reports them warm. The revision takes traffic once all its
    non-shadow deployments are READY.
    """
    _traffic_role_check(endpoint, user)  # refused before anything is looked up (and again under the lock)
    clean = routes_check(routes)
    model_routes = [r for r in clean if not r.get("pipeline")]
    models = route_models(model_routes, user=user)
    versions = _versions_resolve(model_routes)
    for version in versions.values():
        _pipeline_check(endpoint, version)
    _team_adopt(endpoint=endpoint, models=models, user=user)
    team_fit_check(endpoint_name=endpoint.name, team=endpoint.team, models=models)
    _pipeline_routes_check(endpoint, clean)
    revision, to_load = _revise(
        endpoint=endpoint,
        clean=clean,
        versions=versions,
        user=user,
        comment=comment,
        source_ip=source_ip,
        action=action,
        rollout_candidate=rollout_candidate,
    )
    deployments_load(deployment_ids=to_load)
    return revision


@transaction.atomic
def _revise(
    *,
    endpoint: Endpoint,
    clean: list[dict[str, Any]],
    versions: dict[tuple[str, int], ModelVersion],
    user: AbstractBaseUser | None,
    comment: str,
    source_ip: str | None,
    action: str,
    rollout_candidate: tuple[str, int] | None = None,
) -> tuple[TrafficPolicyRevision, list[int]]:
    endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
    _traffic_role_check(endpoint, user)
    # Stages are read again under the endpoint's lock: a promotion may have moved one.
    fresh = dict(ModelVersion.objects.filter(pk__in=[v.pk for v in versions.values()]).values_list("pk", "stage"))
    environment_rule_check(
        environment=endpoint.environment,
        endpoint_name=endpoint.name,
        routes=clean,
        stages={key: fresh[version.pk] for key, version in versions.items()},
        rollout_candidate=rollout_candidate,
    )
    previous = endpoint.revisions.filter(is_current=True).first()
    snapshot: list[dict[str, Any]] = []
    to_load: list[int] = []
    for route in clean:
        if route.get("pipeline"):
            # No Deployment row: the pipeline's model steps have their own sessions.
            snapshot.append({"deployment": None, **route})
            continue
        version = versions[(route["model"], route["version"])]
        config = {
            "placement": route["placement"],
            "device": route["device"],
            "max_batch_size": route["max_batch_size"],
            "max_queue_delay_ms": route["max_queue_delay_ms"],
        }
        # A deployment is a version with its placement and batching; the same settings
        # again reuse it (and its warm sessions), other settings make a new one.
        deployment = (
            Deployment.objects.select_for_update()
            .filter(endpoint=endpoint, model_version=version, **config)
            .order_by("-pk")
            .first()
        )
        if deployment is None:
            deployment = Deployment.objects.create(
                endpoint=endpoint, model_version=version, role=route["role"], weight=route["weight"], **config
            )
        else:
            deployment.role, deployment.weight = route["role"], route["weight"]
            deployment.save(update_fields=["role", "weight", "updated_at"])
        if deployment.state != Deployment.State.READY:
            if deployment.state != Deployment.State.LOADING:
                deployment.state = Deployment.State.LOADING
                deployment.state_detail = ""
                deployment.save(update_fields=["state", "state_detail", "updated_at"])
            to_load.append(deployment.pk)
        snapshot.append({"deployment": deployment.pk, **route})
    # Deployments that left the split are retired: workers and web processes unload them.
    kept = [entry["deployment"] for entry in snapshot if entry["deployment"]]
    Deployment.objects.filter(endpoint=endpoint).exclude(pk__in=kept).exclude(
        state__in=[Deployment.State.RETIRED, Deployment.State.FAILED]
    ).update(state=Deployment.State.RETIRED, weight=0, updated_at=timezone.now())
    number = (endpoint.revisions.order_by("-revision").values_list("revision", flat=True).first() or 0) + 1
    if previous is not None:
        previous.is_current = False
        previous.save(update_fields=["is_current"])
    revision = TrafficPolicyRevision.objects.create(
        endpoint=endpoint, revision=number, routes=snapshot, comment=comment[:2000], created_by=user, is_current=True
    )
    audit_record(
        actor=user,
        action=action,
        obj=endpoint,
        before={"revision": previous.revision, "split": routes_summary(previous.routes), "routes": previous.routes}
        if previous
        else {},
        after={"revision": number, "split": routes_summary(snapshot), "comment": comment, "routes": snapshot},
        source_ip=source_ip,
    )
    routing_cache.changed()
    return revision, to_load


def deployments_load(*, deployment_ids: list[int]) -> None:
    """Load and warm in-process deployments here (READY/FAILED); ask the pool for the others."""
    from inference.selectors import deployment_spec
    from inference.transport import transport_for

    for deployment in Deployment.objects.filter(pk__in=deployment_ids).select_related(
        "endpoint", "model_version__model"
    ):
        spec = deployment_spec(deployment)
        if deployment.placement == Deployment.Placement.WORKER_POOL:
            transaction.on_commit(lambda spec=spec: _pool_ask(spec))
            continue
        transport = transport_for(spec)
        try:
            transport.ensure_loaded(spec)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, not raised
            log.warning("deployment %s failed to load: %s", deployment.pk, exc)
            deployment_state_set(deployment_id=deployment.pk, state=Deployment.State.FAILED, detail=str(exc)[:2000])
            continue
        provider = getattr(transport, "provider", lambda s: "")(spec)
        deployment_state_set(deployment_id=deployment.pk, state=Deployment.State.READY, provider=provider)


def _pool_ask(spec: Any) -> None:
    """Assign a worker-pool deployment, then let a Celery task mark it ready once warm."""
    from inference.tasks import deployment_pool_load
    from inference.transport import transport_for
    from workers.celery import app as celery_app

    try:
        transport_for(spec).ensure_loaded(spec)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not ask the worker pool to load %s: %s", spec.label, exc)
        deployment_state_set(deployment_id=spec.deployment_id, state=Deployment.State.FAILED, detail=str(exc)[:2000])
        return
    if celery_app.conf.task_always_eager:
        # Waiting for a worker inside this request would block it; without a Celery
        # worker nothing marks the deployment ready (pool placement needs the full stack).
        log.warning("%s stays loading: worker-pool deployments need a Celery worker", spec.label)
        return
    deployment_pool_load.delay(spec.deployment_id)


@transaction.atomic
def deployment_state_set(*, deployment_id: int, state: str, provider: str = "", detail: str = "") -> Deployment | None:
    """Record a deployment's readiness (the pool calls this when a worker reports it warm)."""
    deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
    if deployment is None:
        return None
    if state not in Deployment.State.values:
        raise ValueError(f"unknown deployment state {state!r}")
    if (
        deployment.state == state
        and (not provider or provider == deployment.provider)
        and detail == deployment.state_detail
    ):
        return deployment
    before = {"state": deployment.state, "provider": deployment.provider}
    deployment.state, deployment.state_detail = state, detail
    fields = ["state", "state_detail", "updated_at"]
    if provider:
        deployment.provider = provider
        fields.append("provider")
    deployment.save(update_fields=fields)
    audit_record(
        actor=None,
        action=f"deployment.{state}",
        obj=deployment,
        before=before,
        after={"state": state, "provider": deployment.provider, "detail": detail},
    )
    routing_cache.changed()
    return deployment


def traffic_policy_rollback(
    *,
    endpoint: Endpoint,
    revision: int | None = None,
    user: AbstractBaseUser | None,
    source_ip: str | None = None,
) -> TrafficPolicyRevision:
    """Go back to revision N (or the one before the current) as a new revision."""
    _traffic_role_check(endpoint, user)
    current = endpoint.revisions.filter(is_current=True).first()
    if current is None:
        raise Conflict(f'endpoint "{endpoint.name}" has no traffic policy yet')
    if revision is None:
        target = endpoint.revisions.filter(revision__lt=current.revision).order_by("-revision").first()
        if target is None:
            raise Conflict(f'endpoint "{endpoint.name}" has no revision before {current.revision} to roll back to')
    else:
        target = endpoint.revisions.filter(revision=revision).first()
        if target is None:
            raise NotFound(f'endpoint "{endpoint.name}" has no revision {revision}')
    routes = [{k: v for k, v in route.items() if k in _ROUTE_KEYS} for route in target.routes]
    return traffic_policy_revise(
        endpoint=endpoint,
        routes=routes,
        user=user,
        comment=f"rollback to revision {target.revision}",
        source_ip=source_ip,
        action="traffic.rollback",
    )


def api_key_create(
    *, name: str, endpoints: list[Endpoint], user: AbstractBaseUser, source_ip: str | None = None
) -> tuple[ApiKey, str]:
    """A new application key scoped to `endpoints`; the secret is returned once, only here."""
    if not name or len(name) > 100:
        raise InvalidPolicy("name: expected 1 to 100 characters")
    if not endpoints:
        raise InvalidPolicy("a key needs at least one endpoint")
    for endpoint in endpoints:
        if not can_access_team(user, endpoint.team_id):
            raise NotFound(f"no endpoint named {endpoint.name!r}")
    new = key_generate("app")
    with transaction.atomic():
        key = ApiKey.objects.create(name=name, prefix=new.prefix, hashed=new.hashed, created_by=user)
        key.endpoints.set(endpoints)
        audit_record(
            actor=user,
            action="apikey.create",
            obj=key,
            after={"name": name, "prefix": new.prefix, "endpoints": sorted(e.name for e in endpoints)},
            source_ip=source_ip,
        )
    routing_cache.changed()
    return key, new.key


@transaction.atomic
def api_key_revoke(*, key: ApiKey, user: AbstractBaseUser, source_ip: str | None = None) -> ApiKey:
    key = ApiKey.objects.select_for_update().get(pk=key.pk)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit_record(actor=user, action="apikey.revoke", obj=key, after={"prefix": key.prefix}, source_ip=source_ip)
    routing_cache.changed()
    return key


def _scaled(weights: list[int], total: int) -> list[int]:
    """Integer weights proportional to `weights` that add up to `total` (largest remainder)."""
    whole = sum(weights) or 1
    raw = [w * total / whole for w in weights]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: total - sum(out)]:
        out[i] += 1
    return out


def endpoints_follow_production(
    *, model_version: ModelVersion, previous_version: ModelVersion | None, user: AbstractBaseUser | None
) -> list[TrafficPolicyRevision]:
    """A version reached Production: move the endpoints that follow its model.

    follow=immediate: the new version becomes the primary at 100 (shadows kept).
    follow=canary: it joins as a canary at the endpoint's canary_weight, the other
    routes scaled down to make room. Each is a new revision; placement and batching are
    copied from the current primary. Endpoints already serving the version are left alone.
    """
    model: RegisteredModel = model_version.model
    revisions = []
    for endpoint in Endpoint.objects.filter(follows_model=model).exclude(follow=Endpoint.Follow.NONE):
        current = endpoint.revisions.filter(is_current=True).first()
        routes = [{k: v for k, v in r.items() if k in _ROUTE_KEYS} for r in (current.routes if current else [])]
        if any(
            r.get("model") == model.name and r["version"] == model_version.version and r["role"] != "shadow"
            for r in routes
        ):
            continue
        routes = [r for r in routes if not (r.get("model") == model.name and r["version"] == model_version.version)]
        template = next((r for r in routes if r["role"] == "primary"), routes[0] if routes else {})
        settings = {
            k: template[k] for k in ("placement", "device", "max_batch_size", "max_queue_delay_ms") if k in template
        }
        new = {"model": model.name, "version": model_version.version, **settings}
        shadows = [r for r in routes if r["role"] == "shadow"]
        taking = [r for r in routes if r["role"] != "shadow"]
        if endpoint.follow == Endpoint.Follow.IMMEDIATE or not taking:
            if not taking and previous_version is not None and endpoint.follow == Endpoint.Follow.CANARY:
                routes = [
                    {
                        "model": model.name,
                        "version": previous_version.version,
                        "role": "primary",
                        "weight": 100 - endpoint.canary_weight,
                        **settings,
                    },
                    {**new, "role": "canary", "weight": endpoint.canary_weight},
                ]
            else:
                routes = [{**new, "role": "primary", "weight": 100}, *shadows]
        else:
            weights = _scaled([r["weight"] for r in taking], 100 - endpoint.canary_weight)
            for route, weight in zip(taking, weights, strict=True):
                route["weight"] = weight
            taking = [r for r in taking if r["weight"] > 0]
            routes = [*taking, {**new, "role": "canary", "weight": endpoint.canary_weight}, *shadows]
        comment = f"follows {model.name}: version {model_version.version} reached Production"
        if previous_version is not None:
            comment += f" (was {previous_version.version})"
        try:
            revisions.append(
                traffic_policy_revise(
                    endpoint=endpoint, routes=routes, user=user, comment=comment, action="traffic.follow"
                )
            )
        except DomainError as exc:
            log.warning("endpoint %s could not follow %s: %s", endpoint.name, model_version, exc.message)
    return revisions


def endpoints_move_off(
    *, version: ModelVersion, replacement: ModelVersion | None, user: AbstractBaseUser | None, reason: str
) -> list[TrafficPolicyRevision]:
    """`version` just left the stage that let production/staging endpoints serve it (a newer
    version was approved, or production was rolled back): each such endpoint whose rule no
    longer allows it gets a new revision in the caller's transaction, its routes pointed at
    `replacement` (the weight added to the replacement's route where it already had one),
    its shadows of the version dropped. Never left serving it silently; without a
    replacement the caller is refused (EnvironmentRuleBroken) and nothing changes.
    """
    name = version.model.name
    revisions = []
    for endpoint in endpoints_routing_to(
        model=name, version=version.version, environments=(Environment.PRODUCTION, Environment.STAGING)
    ):
        current = endpoint.revisions.get(is_current=True)
        routes = [{k: v for k, v in r.items() if k in _ROUTE_KEYS} for r in current.routes]
        mine = next(r for r in routes if r.get("model") == name and r["version"] == version.version)
        if version_allowed(environment=endpoint.environment, stage=version.stage, role=mine["role"]):
            continue
        routes.remove(mine)
        if mine["role"] != Deployment.Role.SHADOW:
            if replacement is None:
                raise EnvironmentRuleBroken(
                    f'{version} takes {mine["weight"]}% of {endpoint.environment} endpoint "{endpoint.name}" '
                    f"and there is no version to move that traffic to",
                    details={"endpoints": [endpoint.name], "version": version.version, "stage": version.stage},
                )
            other = next(
                (r for r in routes if r.get("model") == name and r["version"] == replacement.version),
                None,
            )
            if other is not None and other["role"] != Deployment.Role.SHADOW:
                other["weight"] += mine["weight"]
                if mine["role"] == Deployment.Role.PRIMARY:
                    other["role"] = Deployment.Role.PRIMARY
            else:
                if other is not None:
                    routes.remove(other)
                routes.append({**mine, "version": replacement.version})
        revisions.append(
            traffic_policy_revise(
                endpoint=endpoint,
                routes=routes,
                user=user,
                comment=f"moved off {version} ({version.stage}): {reason}",
                action="traffic.move_off",
            )
        )
    return revisions
