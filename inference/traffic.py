"""Traffic policy: revisions of an endpoint's split, rollbacks, following production, and
moving endpoints off a version that left the stage their environment allows. Every change
writes an audit event and invalidates the serving caches.

Readiness: a deployment starts LOADING and goes READY once warm (in-process: this
process loaded and warmed it right after the revision committed; worker pool: a worker
reported it warm through `loading.deployment_state_set`). A revision is accepted at once,
but it only takes traffic when every non-shadow deployment in it is READY: until then the
router keeps serving the latest earlier revision that is fully ready ("the revision
waits"; see inference.routing_cache). A deployment that fails to load is FAILED with
the reason; its revision never takes traffic until it is rolled back or revised.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from accounts.permissions import role_check
from accounts.roles import APPROVER
from audit.services import audit_record
from config.errors import Conflict, DomainError, NotFound, ServiceUnavailable
from inference import routing_cache
from inference.endpoints import (
    InvalidPolicy,
    endpoint_pipeline_check,
    endpoint_team_adopt,
    route_models,
    team_fit_check,
)
from inference.environments import (
    ENVIRONMENT_RULES,
    Environment,
    EnvironmentRuleBroken,
    environment_rule_check,
    version_allowed,
)
from inference.loading import deployments_load
from inference.models import Deployment, Endpoint, Rollout, TrafficPolicyRevision
from inference.pipelines import executor
from inference.pipelines.graph import CompiledPipeline, GraphError
from inference.pipelines.models import PipelineVersion
from inference.pipelines.services import compile_version, pipeline_version_get
from inference.selectors import endpoints_routing_to
from inference.spec import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_MS
from registry.models import ModelVersion, RegisteredModel

log = logging.getLogger(__name__)


ROLES = tuple(Deployment.Role.values)


# What a stored route may carry (the rollouts app copies routes by these keys too).
ROUTE_KEYS = {
    "model",
    "pipeline",
    "version",
    "role",
    "weight",
    "placement",
    "device",
    "max_batch_size",
    "max_queue_delay_ms",
    "pinned",
}


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


def _route_clean(index: int, route: Any) -> dict[str, Any]:
    where = f"routes[{index}]"
    if not isinstance(route, dict):
        raise InvalidPolicy(f"{where}: expected an object with model, version, role, weight")
    unknown = set(route) - ROUTE_KEYS - {"deployment", "state", "provider", "pipeline_version"}
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
    placement, device = _placement_device(where, route)
    batch = route.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 4096:
        raise InvalidPolicy(f"{where}.max_batch_size: expected 1 to 4096")
    delay = route.get("max_queue_delay_ms", DEFAULT_MAX_QUEUE_DELAY_MS)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 1000:
        raise InvalidPolicy(f"{where}.max_queue_delay_ms: expected 0 to 1000")
    pinned = route.get("pinned", False)
    if not isinstance(pinned, bool):
        raise InvalidPolicy(f"{where}.pinned: expected true or false")
    return {
        "model": model,
        "version": version,
        "role": role,
        "weight": weight,
        "placement": placement,
        "device": device,
        "max_batch_size": batch,
        "max_queue_delay_ms": float(delay),
        "pinned": pinned,
    }


def _placement_device(where: str, route: dict[str, Any]) -> tuple[str, str]:
    placement = route.get("placement", Deployment.Placement.IN_PROCESS)
    if placement not in Deployment.Placement.values:
        raise InvalidPolicy(f"{where}.placement: expected one of {', '.join(Deployment.Placement.values)}")
    device = route.get("device", Deployment.Device.CPU)
    if device not in Deployment.Device.values:
        raise InvalidPolicy(f"{where}.device: expected one of {', '.join(Deployment.Device.values)}")
    return placement, device


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
    clean: dict[str, Any] = {"pipeline": name, "version": version, "role": role, "weight": weight}
    # Where its model steps run (a step's own placement wins); kept only when not the default.
    placement, device = _placement_device(where, route)
    if placement != Deployment.Placement.IN_PROCESS:
        clean["placement"] = placement
    if device != Deployment.Device.CPU:
        clean["device"] = device
    return clean


def pipeline_environment_check(
    endpoint: Endpoint, version: PipelineVersion, role: str, *, where: str = "pipeline", rollout_canary: bool = False
) -> CompiledPipeline:
    """The pipeline version's graph, checked now, when every model step and bandit arm may
    take `role` on the endpoint (a pipeline has no stage of its own): InvalidPolicy (400)
    if the graph no longer checks, EnvironmentRuleBroken (409) naming the first model the
    endpoint's environment forbids. A hand traffic change and a rollout's candidate both
    pass here; `rollout_canary` (the candidate of a rollout an approver started) gives each
    model the exception a Staging model candidate has: a canary on a production endpoint."""
    try:
        graph = compile_version(version)
    except GraphError as exc:
        raise InvalidPolicy(f"{where}: pipeline {version} no longer checks: {exc.message}") from None
    for ref in graph.models():
        if not version_allowed(
            environment=endpoint.environment, stage=ref.stage, role=role, rollout_canary=rollout_canary
        ):
            raise EnvironmentRuleBroken(
                f"pipeline {version} uses {ref.label}, which is in {ref.stage}, so it cannot be the "
                f'{role} of {endpoint.environment} endpoint "{endpoint.name}": '
                f"{ENVIRONMENT_RULES[endpoint.environment]}",
                details={
                    "pipeline": version.pipeline.name,
                    "model": ref.model,
                    "version": ref.version,
                    "stage": ref.stage,
                    "environment": endpoint.environment,
                },
            )
    return graph


def _pipeline_routes_check(
    endpoint: Endpoint, routes: list[dict[str, Any]], rollout_candidate: tuple[str, str, int] | None = None
) -> None:
    """Each pipeline route: the endpoint's team may serve it, its graph checks now, and every
    model step and bandit arm obeys the endpoint's environment for the route's role (a
    pipeline has no stage of its own; the candidate of a rollout an approver started has
    the Staging-canary exception). Its models are loaded here (400 if one fails)."""
    for index, route in enumerate(routes):
        if not route.get("pipeline"):
            continue
        where = f"routes[{index}]"
        version = pipeline_version_get(
            name=route["pipeline"], version=route["version"], team_id=endpoint.team_id, where=where
        )
        candidate = ("pipeline", route["pipeline"], route["version"]) == rollout_candidate
        graph = pipeline_environment_check(endpoint, version, route["role"], where=where, rollout_canary=candidate)
        placement, device = route.get("placement", "in_process"), route.get("device", "cpu")
        try:
            executor.load_models(graph, placement, device)
        except ServiceUnavailable:
            raise  # worker-pool steps: the pool is unreachable (503 + Retry-After), not a bad route
        except Exception as exc:  # noqa: BLE001 - a model that will not load is the caller's 400
            raise InvalidPolicy(f"{where}: pipeline {version} could not load its models: {exc}") from None
        route["pipeline_version"] = version.pk


class RolloutInProgress(Conflict):
    code = "rollout_in_progress"


# Changes people make by hand. While a rollout runs (or is paused or waiting) they are
# refused: its next step would silently replace them. The rollout's own steps, following
# an approved promotion, moving off a replaced version and an alert's rollback go on.
HAND_ACTIONS = ("traffic.revise", "traffic.rollback")


def rollout_free_check(endpoint: Endpoint, action: str) -> None:
    """RolloutInProgress (409) naming the endpoint's unfinished rollout, for a hand change."""
    if action not in HAND_ACTIONS:
        return
    running = (
        Rollout.objects.filter(endpoint_id=endpoint.pk, state__in=Rollout.ACTIVE)
        .select_related("candidate__model", "candidate_pipeline__pipeline")
        .first()
    )
    if running is None:
        return
    candidate = running.candidate_label
    raise RolloutInProgress(
        f'endpoint "{endpoint.name}" has rollout #{running.pk} of {candidate} {running.state}: its next step '
        f"would replace this change. Abort it first (POST /api/v1/endpoints/{endpoint.name}/rollouts/"
        f"{running.pk}/abort), or let it finish.",
        details={"rollout": running.pk, "state": running.state, "candidate": candidate},
    )


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
    rollout_candidate: tuple[str, str, int] | None = None,
) -> TrafficPolicyRevision:
    """Make a new revision of the endpoint's split (a full snapshot) and load what it needs.

    Rules: only validated (ready) model versions; non-shadow weights add up to 100; at
    most one primary; shadows have weight 0; a version appears once; the versions obey
    the endpoint's environment (`environment_rule_check`: the one place that decides it,
    under the endpoint's lock); on a production endpoint only an approver (or the system,
    user None, acting for one) changes traffic; a change by hand (`HAND_ACTIONS`) is
    refused while the endpoint has an unfinished rollout (`rollout_free_check`). In-process
    deployments are loaded and warmed in this process before this returns (READY, or
    FAILED with the reason); worker-pool ones are asked for on commit and stay LOADING
    until a worker reports them warm. The revision takes traffic once all its
    non-shadow deployments are READY.
    """
    _traffic_role_check(endpoint, user)  # refused before anything is looked up (and again under the lock)
    rollout_free_check(endpoint, action)  # the same
    clean = routes_check(routes)
    model_routes = [r for r in clean if not r.get("pipeline")]
    models = route_models(model_routes, user=user)
    versions = _versions_resolve(model_routes)
    for version in versions.values():
        endpoint_pipeline_check(endpoint, version)
    endpoint_team_adopt(endpoint=endpoint, models=models, user=user)
    team_fit_check(endpoint_name=endpoint.name, team=endpoint.team, models=models)
    _pipeline_routes_check(endpoint, clean, rollout_candidate)
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
    rollout_candidate: tuple[str, str, int] | None = None,
) -> tuple[TrafficPolicyRevision, list[int]]:
    endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
    _traffic_role_check(endpoint, user)
    rollout_free_check(endpoint, action)
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
                endpoint=endpoint,
                model_version=version,
                role=route["role"],
                weight=route["weight"],
                pinned=route["pinned"],
                **config,
            )
        else:  # pinning is not a reload: the loaded sessions just stop being evictable
            deployment.role, deployment.weight, deployment.pinned = route["role"], route["weight"], route["pinned"]
            deployment.save(update_fields=["role", "weight", "pinned", "updated_at"])
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
    routes = [{k: v for k, v in route.items() if k in ROUTE_KEYS} for route in target.routes]
    return traffic_policy_revise(
        endpoint=endpoint,
        routes=routes,
        user=user,
        comment=f"rollback to revision {target.revision}",
        source_ip=source_ip,
        action="traffic.rollback",
    )


def weights_scaled(weights: list[int], total: int) -> list[int]:
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
        routes = [{k: v for k, v in r.items() if k in ROUTE_KEYS} for r in (current.routes if current else [])]
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
            weights = weights_scaled([r["weight"] for r in taking], 100 - endpoint.canary_weight)
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


def pipeline_routes_using(
    *, model: str, version: int, environments: tuple[str, ...], pinned_only: bool
) -> list[tuple[Endpoint, dict[str, Any], str]]:
    """(endpoint, route, the step's model as written) for each current pipeline route, on
    endpoints in `environments`, whose graph runs the version: named by number
    ("fraud:2"), and, unless `pinned_only`, through a stage alias that resolves to it now
    ("fraud@production"; an alias follows a stage change by itself, as the routing table
    resolves it again). A graph that no longer checks runs nothing: its route is not ready."""
    found = []
    revisions = TrafficPolicyRevision.objects.filter(is_current=True, endpoint__environment__in=environments)
    for revision in revisions.select_related("endpoint").order_by("endpoint__name"):
        endpoint = revision.endpoint
        for route in revision.routes:
            if not route.get("pipeline"):
                continue
            try:
                pipeline = pipeline_version_get(
                    name=route["pipeline"], version=route["version"], team_id=endpoint.team_id, where="route"
                )
                graph = compile_version(pipeline)
            except (DomainError, GraphError):
                continue
            step = next(
                (
                    ref.ref
                    for ref in graph.models()
                    if ref.model == model and ref.version == version and not (pinned_only and "@" in ref.ref)
                ),
                None,
            )
            if step is not None:
                found.append((endpoint, route, step))
    return found


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
    # A pipeline that names the version by number cannot be moved: its graph is a version
    # of its own, which an engineer writes. The stage change is refused until it is replaced;
    # a pipeline that only shadows is dropped, like a shadow of the version itself.
    dropped: dict[int, tuple[Endpoint, set[tuple[str, int]]]] = {}
    for endpoint, route, step in pipeline_routes_using(
        model=name,
        version=version.version,
        environments=(Environment.PRODUCTION, Environment.STAGING),
        pinned_only=True,
    ):
        if version_allowed(environment=endpoint.environment, stage=version.stage, role=route["role"]):
            continue
        if route["role"] == Deployment.Role.SHADOW:
            dropped.setdefault(endpoint.pk, (endpoint, set()))[1].add((route["pipeline"], route["version"]))
            continue
        instead = f"{name}:{replacement.version}" if replacement is not None else "another version"
        raise EnvironmentRuleBroken(
            f"{version} would be in {version.stage}, but pipeline {route['pipeline']} v{route['version']} "
            f'({route["role"]} of {endpoint.environment} endpoint "{endpoint.name}") runs it as "{step}": '
            f'attach a pipeline version that uses {instead} or "{name}@production" first',
            details={
                "endpoints": [endpoint.name],
                "pipeline": route["pipeline"],
                "pipeline_version": route["version"],
                "version": version.version,
                "stage": version.stage,
            },
        )
    revisions = []
    for endpoint in endpoints_routing_to(
        model=name, version=version.version, environments=(Environment.PRODUCTION, Environment.STAGING)
    ):
        current = endpoint.revisions.get(is_current=True)
        routes = _without_pipeline_shadows(current.routes, dropped.get(endpoint.pk, (endpoint, set()))[1])
        mine = next(r for r in routes if r.get("model") == name and r["version"] == version.version)
        if version_allowed(environment=endpoint.environment, stage=version.stage, role=mine["role"]):
            continue
        dropped.pop(endpoint.pk, None)  # this revision drops them
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
    for endpoint, pipelines in dropped.values():  # endpoints that only shadow it through a pipeline
        current = endpoint.revisions.get(is_current=True)
        revisions.append(
            traffic_policy_revise(
                endpoint=endpoint,
                routes=_without_pipeline_shadows(current.routes, pipelines),
                user=user,
                comment=f"dropped the pipeline shadows that run {version} ({version.stage}): {reason}",
                action="traffic.move_off",
            )
        )
    return revisions


def _without_pipeline_shadows(routes: list[dict[str, Any]], pipelines: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """A revision's routes (their stored keys) less the shadow routes of these (pipeline, version)s."""
    return [
        {k: v for k, v in r.items() if k in ROUTE_KEYS}
        for r in routes
        if not (
            r.get("pipeline") and r["role"] == Deployment.Role.SHADOW and (r["pipeline"], r["version"]) in pipelines
        )
    ]
