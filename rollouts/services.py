"""Progressive rollouts: a candidate version (of a model, or of a pipeline: a route
{"pipeline", "version"}) takes a growing share of an endpoint's traffic, step by step,
while analysis compares it with the stable routes on the same minutes (a pipeline's series
is "pipeline:<name>:<version>"); a failed check puts the stable split back by itself.

The rollout is a persisted state machine (inference.models.Rollout) advanced by a
periodic task (`inference.rollouts_advance` in workers/celery.py's beat schedule, and the
embedded scheduler on `make run`): every evaluation locks the rollout row, so two
schedulers, a retried task or a restarted process never act twice on one step; `step`
and `step_started_at` live in the row, so nothing is lost when every process restarts.

    [shadow phase: the candidate answers copies only (step -1), shadow_agreement decides]
    running --bake passed, checks pass--> next step ... --> 100 % --> succeeded
       |  \\--check failed (failure_limit times)--> rolled_back (stable routes again)
       |   \\--bake passed, inconclusive--> paused | rolled_back (plan.on_inconclusive)
       \\--before 100 %: confirmation or promotion needed--> waiting --> succeeded
    pause / resume / abort (-> aborted, stable routes) / promote (-> 100 % now)

Traffic moves only through inference.traffic.traffic_policy_revise, so the environment
rule holds at every step: on a production endpoint a Staging candidate may be the canary
of a rollout an approver started, and takes 100 % only once it is in Production (the
normal approval; the rollout waits for it). A pipeline has no stage of its own: a pipeline
candidate is checked when the rollout starts as the canary (or, with a first step of
100 %, the primary) it would become, each of its models with the exception a model
candidate has (traffic.pipeline_environment_check; otherwise the 409 of a hand change,
naming the model), and as the primary before 100 % (a Staging model step must be promoted
by then, and stage aliases may resolve to other versions; the rollout waits until it may).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.permissions import role_check, team_check
from accounts.roles import APPROVER, ML_ENGINEER, has_role
from audit.services import audit_record
from config.errors import Conflict, DomainError, NotFound
from inference import environments, traffic
from inference.models import Deployment, Endpoint, Rollout, RolloutEvent
from inference.pipelines.models import PipelineVersion
from inference.pipelines.services import pipeline_version_get
from monitoring.rollups import add_rollup
from monitoring.selectors import deployment_window_totals, output_psi, window_point
from registry.models import ModelVersion

log = logging.getLogger(__name__)

State = Rollout.State
DEFAULT_STEPS = [{"weight": w, "bake_s": 300.0} for w in (5, 25, 50, 100)]
DEFAULT_CHECKS: dict[str, dict[str, float]] = {
    # candidate error rate <= stable error rate + max_increase
    "error_rate": {"max_increase": 0.01, "min_requests": 20},
    # candidate p99 <= stable p99 * max_ratio, unless the difference is under min_delta_ms
    # (latency buckets are coarse: 0.4 vs 0.9 ms is not a regression)
    "p99_latency": {"max_ratio": 1.5, "min_delta_ms": 5.0, "min_requests": 50},
    # PSI of each output's distribution, candidate against stable
    "output_drift": {"max_psi": 0.25, "min_requests": 50},
}
# Only with a shadow phase (plan.shadow), and then on by default: the share of the
# candidate's shadow answers that agreed with the answer the caller got (inference.shadow).
SHADOW_CHECK: dict[str, float] = {"min_agreement": 0.99, "min_comparisons": 50}
KNOWN_CHECKS: dict[str, dict[str, float]] = {**DEFAULT_CHECKS, "shadow_agreement": SHADOW_CHECK}
# Bounds of a check's numbers: ratios of a share at most 1, counts at least one (a check
# over zero requests decides nothing: it is inconclusive, never a pass).
BOUNDS: dict[str, tuple[float, float]] = {"min_agreement": (0.0, 1.0)}
COUNTS = ("min_requests", "min_comparisons")
ON_INCONCLUSIVE = ("pause", "rollback")
MAX_BAKE_S = 7 * 24 * 3600.0
# What a model candidate copies from the stable primary's route (a pipeline candidate only
# placement and device: its model steps batch as their own sessions do).
PLACEMENT_KEYS = ("placement", "device", "max_batch_size", "max_queue_delay_ms")


class InvalidPlan(DomainError):
    status = 400
    code = "invalid_plan"


class RolloutConflict(Conflict):
    code = "rollout_conflict"


# --- the plan --------------------------------------------------------------------------


def _number(value: Any, where: str, *, low: float, high: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidPlan(f"{where}: expected a number, got {value!r}")
    if (value <= low if low_open else value < low) or value > high:
        bound = f"more than {low:g}" if low_open else f"at least {low:g}"
        raise InvalidPlan(f"{where}: expected {bound} and at most {high:g}, got {value!r}")
    return float(value)


def plan_check(plan: Any) -> dict[str, Any]:
    """The plan with its defaults filled in; InvalidPlan (400) names what is wrong.

    {"shadow": {"bake_s": 60} (optional: a shadow phase before the first step),
    "steps": [{"weight": 5, "bake_s": 300}, ...], "checks": {"error_rate": {...},
    "p99_latency": {...}, "output_drift": {...}, "shadow_agreement": {...}} (a check set
    to null is off), "failure_limit": 1, "on_inconclusive": "pause" | "rollback",
    "confirm_full": false}
    """
    plan = {} if plan is None else plan
    if not isinstance(plan, dict):
        raise InvalidPlan("plan: expected an object")
    unknown = set(plan) - {"shadow", "steps", "checks", "failure_limit", "on_inconclusive", "confirm_full"}
    if unknown:
        raise InvalidPlan(f"plan: unknown key {sorted(unknown)[0]!r}")
    raw_steps = plan.get("steps", DEFAULT_STEPS)
    if not isinstance(raw_steps, list) or not raw_steps or len(raw_steps) > 20:
        raise InvalidPlan("plan.steps: expected 1 to 20 steps of {weight, bake_s}")
    steps = []
    for i, step in enumerate(raw_steps):
        if not isinstance(step, dict) or set(step) - {"weight", "bake_s"}:
            raise InvalidPlan(f"plan.steps[{i}]: expected {{weight, bake_s}}")
        weight = step.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= 100:
            raise InvalidPlan(f"plan.steps[{i}].weight: expected a whole percentage from 1 to 100, got {weight!r}")
        if steps and weight <= steps[-1]["weight"]:
            raise InvalidPlan(f"plan.steps[{i}].weight: weights must grow, got {weight} after {steps[-1]['weight']}")
        bake = _number(step.get("bake_s", 300.0), f"plan.steps[{i}].bake_s", low=0, high=MAX_BAKE_S, low_open=True)
        steps.append({"weight": weight, "bake_s": bake})
    if steps[-1]["weight"] != 100:
        raise InvalidPlan(f"plan.steps: the last step must be 100 %, got {steps[-1]['weight']}")
    shadow = plan.get("shadow")
    if shadow is not None:
        if not isinstance(shadow, dict) or set(shadow) != {"bake_s"}:
            raise InvalidPlan("plan.shadow: expected {bake_s} (or null: no shadow phase)")
        shadow = {"bake_s": _number(shadow["bake_s"], "plan.shadow.bake_s", low=0, high=MAX_BAKE_S, low_open=True)}
    default_checks = {**DEFAULT_CHECKS, "shadow_agreement": SHADOW_CHECK} if shadow else DEFAULT_CHECKS
    raw_checks = plan.get("checks", default_checks)
    if not isinstance(raw_checks, dict):
        raise InvalidPlan("plan.checks: expected an object")
    checks: dict[str, dict[str, float]] = {}
    for name, settings in raw_checks.items():
        if name not in KNOWN_CHECKS:
            raise InvalidPlan(f"plan.checks: unknown check {name!r}; known: {', '.join(KNOWN_CHECKS)}")
        if settings is None:
            continue
        if name == "shadow_agreement" and not shadow:
            raise InvalidPlan('plan.checks.shadow_agreement: needs a shadow phase ("shadow": {"bake_s": ...})')
        if not isinstance(settings, dict) or set(settings) - set(KNOWN_CHECKS[name]):
            raise InvalidPlan(f"plan.checks.{name}: expected some of {', '.join(KNOWN_CHECKS[name])}")
        merged = {**KNOWN_CHECKS[name], **settings}
        for key, value in merged.items():
            low, high = BOUNDS.get(key, (1.0 if key in COUNTS else 0.0, 1e9))
            merged[key] = _number(value, f"plan.checks.{name}.{key}", low=low, high=high)
        checks[name] = merged
    limit = plan.get("failure_limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 100:
        raise InvalidPlan(f"plan.failure_limit: expected a whole number from 1 to 100, got {limit!r}")
    inconclusive = plan.get("on_inconclusive", "pause")
    if inconclusive not in ON_INCONCLUSIVE:
        raise InvalidPlan(f"plan.on_inconclusive: expected 'pause' or 'rollback', got {inconclusive!r}")
    confirm = plan.get("confirm_full", False)
    if not isinstance(confirm, bool):
        raise InvalidPlan("plan.confirm_full: expected true or false")
    return {
        "shadow": shadow,
        "steps": steps,
        "checks": checks,
        "failure_limit": limit,
        "on_inconclusive": inconclusive,
        "confirm_full": confirm,
    }


# --- routes at a step --------------------------------------------------------------------


def _identity(route: dict[str, Any]) -> tuple[str, str, int]:
    """What a route serves: ("model", name, version) or ("pipeline", name, version)."""
    if route.get("pipeline"):
        return ("pipeline", route["pipeline"], route["version"])
    return ("model", route["model"], route["version"])


def _series(route: dict[str, Any]) -> str:
    """The route's monitoring series, as inference.edge records it: "iris:2", "pipeline:fraud:3"."""
    kind, name, version = _identity(route)
    return f"pipeline:{name}:{version}" if kind == "pipeline" else f"{name}:{version}"


def routes_at(stable: list[dict[str, Any]], candidate: dict[str, Any], weight: int) -> list[dict[str, Any]]:
    """The split with the candidate (a route's {"model"|"pipeline", "version"}) at `weight` %:
    the stable routes that take traffic are scaled down to make room (the primary stays
    primary), shadows are kept; at 100 % the candidate is the primary alone; at 0 % (the
    shadow phase) the stable routes as they were, plus the candidate as a shadow. Placement
    and batching are the stable primary's (a pipeline route keeps placement and device)."""
    others = [dict(r) for r in stable if _identity(r) != _identity(candidate)]
    taking = [r for r in others if r["role"] != Deployment.Role.SHADOW]
    shadows = [r for r in others if r["role"] == Deployment.Role.SHADOW]
    template = next((r for r in taking if r["role"] == Deployment.Role.PRIMARY), taking[0] if taking else {})
    keys = ("placement", "device") if candidate.get("pipeline") else PLACEMENT_KEYS
    new = {**candidate, **{k: template[k] for k in keys if k in template}}
    if weight == 0:
        return [*taking, *shadows, {**new, "role": Deployment.Role.SHADOW, "weight": 0}]
    if weight >= 100 or not taking:
        return [{**new, "role": Deployment.Role.PRIMARY, "weight": 100}, *shadows]
    for route, share in zip(taking, traffic.weights_scaled([r["weight"] for r in taking], 100 - weight), strict=True):
        route["weight"] = share
    taking = [r for r in taking if r["weight"] > 0]
    return [*taking, {**new, "role": Deployment.Role.CANARY, "weight": weight}, *shadows]


def _revise(rollout: Rollout, routes: list[dict[str, Any]], comment: str) -> None:
    # The candidate of a rollout an approver started may be a Staging canary on production:
    # a model version, or a pipeline version for each of its models.
    traffic.traffic_policy_revise(
        endpoint=rollout.endpoint,
        routes=routes,
        user=None,  # the system, acting for the person who started the rollout
        comment=f"rollout #{rollout.pk}: {comment}",
        action="traffic.rollout",
        rollout_candidate=_identity(rollout.candidate_route) if rollout.approved_start else None,
    )


def _record(
    rollout: Rollout,
    kind: str,
    detail: str,
    *,
    actor: AbstractBaseUser | None = None,
    analysis: dict[str, Any] | None = None,
    source_ip: str | None = None,
) -> None:
    """The decision on the rollout's timeline and in the audit log, with the values."""
    actor_name = actor.get_username() if actor is not None else "system"
    RolloutEvent.objects.create(
        rollout=rollout, step=rollout.step, kind=kind, detail=detail, analysis=analysis or {}, actor_name=actor_name
    )
    weight = rollout.plan["steps"][rollout.step]["weight"] if rollout.step >= 0 else 0
    audit_record(
        actor=actor,
        action=f"rollout.{kind}",
        obj=rollout,
        after={
            "endpoint": rollout.endpoint.name,
            "candidate": rollout.candidate_name,
            "state": rollout.state,
            "step": rollout.step,
            "weight": weight,
            "detail": detail,
            "analysis": analysis or {},
        },
        source_ip=source_ip,
    )


def _step_apply(rollout: Rollout, index: int, now: datetime, *, actor: AbstractBaseUser | None = None) -> None:
    """Move to plan step `index` (-1: the shadow phase, the candidate takes copies only)."""
    if index < 0:
        _revise(rollout, routes_at(rollout.stable_routes, rollout.candidate_route, 0), "shadow phase")
        rollout.step, rollout.step_started_at, rollout.failures = index, now, 0
        rollout.save(update_fields=["step", "step_started_at", "failures", "updated_at"])
        _record(rollout, "shadow", f"{rollout.candidate_name} answers copies of the requests as a shadow", actor=actor)
        return
    weight = rollout.plan["steps"][index]["weight"]
    _revise(
        rollout,
        routes_at(rollout.stable_routes, rollout.candidate_route, weight),
        f"step {index + 1}: {weight} %",
    )
    rollout.step, rollout.step_started_at, rollout.failures = index, now, 0
    fields = ["step", "step_started_at", "failures", "updated_at"]
    if weight == 100:
        rollout.state, rollout.finished_at = State.SUCCEEDED, now
        fields += ["state", "finished_at"]
    rollout.save(update_fields=fields)
    _record(rollout, "step", f"{rollout.candidate_name} takes {weight} % of the traffic", actor=actor)
    if weight == 100:
        _record(rollout, "succeeded", f"{rollout.candidate_name} serves all the traffic", actor=actor)


def _roll_back(rollout: Rollout, now: datetime, kind: str, detail: str, **record: Any) -> None:
    _revise(rollout, [dict(r) for r in rollout.stable_routes], detail)
    rollout.state = State.ROLLED_BACK if kind == "rollback" else State.ABORTED
    rollout.finished_at, rollout.reason = now, detail[:2000]
    rollout.save(update_fields=["state", "finished_at", "reason", "updated_at"])
    _record(rollout, kind, detail, **record)


# --- starting ---------------------------------------------------------------------------


def _traffic_role(user: AbstractBaseUser, endpoint: Endpoint, what: str) -> None:
    production = endpoint.environment == Endpoint.Environment.PRODUCTION
    role_check(user, APPROVER if production else ML_ENGINEER, to=f"{what} on {endpoint.environment} endpoint")
    team_check(user, endpoint.team_id, what=f'endpoint "{endpoint.name}"')


def rollout_start(
    *,
    endpoint: Endpoint,
    version: int,
    model: str | None = None,
    pipeline: str | None = None,
    plan: Any = None,
    user: AbstractBaseUser,
    source_ip: str | None = None,
    now: datetime | None = None,
) -> Rollout:
    """Start a rollout of `model` v`version` (the model of the current primary by default),
    or of pipeline `pipeline` v`version`, with `plan`; the first step's traffic moves at
    once, in the same transaction."""
    _traffic_role(user, endpoint, "starting a rollout")
    clean_plan = plan_check(plan)
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidPlan(f"version: expected a version number, got {version!r}")
    if model and pipeline is not None:
        raise InvalidPlan("the candidate is a model version or a pipeline version: name model or pipeline, not both")
    now = now or timezone.now()
    approved = has_role(user, APPROVER)
    try:
        with transaction.atomic():
            endpoint = Endpoint.objects.select_for_update().get(pk=endpoint.pk)
            if Rollout.objects.filter(endpoint=endpoint, state__in=Rollout.ACTIVE).exists():
                raise RolloutConflict(f'endpoint "{endpoint.name}" already has a rollout in progress: finish it first')
            current = endpoint.revisions.filter(is_current=True).first()
            if current is None:
                raise RolloutConflict(f'endpoint "{endpoint.name}" has no traffic split to roll out from')
            stable = [{k: v for k, v in r.items() if k in traffic.ROUTE_KEYS} for r in current.routes]
            if pipeline is not None:
                first = clean_plan["steps"][0]["weight"]
                role = Deployment.Role.PRIMARY if first == 100 else Deployment.Role.CANARY
                candidate_pipeline = _pipeline_candidate(endpoint, pipeline, version, role=role, approved=approved)
                candidate = None
                target: dict[str, Any] = {"pipeline": pipeline, "version": version}
            else:
                candidate, candidate_pipeline = _model_candidate(stable, model, version), None
                target = {"model": candidate.model.name, "version": version}
            if any(_identity(r) == _identity(target) and r["role"] != "shadow" for r in stable):
                raise RolloutConflict(
                    f"{candidate or f'pipeline {candidate_pipeline}'} already takes traffic on {endpoint.name}: "
                    "nothing to roll out"
                )
            rollout = Rollout.objects.create(
                endpoint=endpoint,
                team_id=endpoint.team_id,
                candidate=candidate,
                candidate_pipeline=candidate_pipeline,
                stable_routes=stable,
                plan=clean_plan,
                started_by=user,
                approved_start=approved,
            )
            _record(
                rollout,
                "start",
                f"{rollout.candidate_name} from {traffic.routes_summary(stable)}",
                actor=user,
                source_ip=source_ip,
            )
            _step_apply(rollout, -1 if clean_plan.get("shadow") else 0, now, actor=user)
    except IntegrityError:
        raise RolloutConflict(f'endpoint "{endpoint.name}" already has a rollout in progress') from None
    return rollout


def _model_candidate(stable: list[dict[str, Any]], model: str | None, version: int) -> ModelVersion:
    """The model version to roll out (of the current primary's model when `model` is None)."""
    if not model:
        primary = next((r for r in stable if r["role"] == Deployment.Role.PRIMARY), stable[0])
        model = primary.get("model")
        if model is None:
            raise InvalidPlan("the primary is a pipeline: name the candidate's model or pipeline")
    candidate = ModelVersion.objects.select_related("model").filter(model__name=model, version=version).first()
    if candidate is None:
        raise NotFound(f"no version {version} of a model named {model!r}")
    if candidate.status != ModelVersion.Status.READY:
        raise RolloutConflict(
            f"{candidate} is {candidate.status}: only a version that passed validation can be rolled out",
            details={"status": candidate.status},
        )
    return candidate


def _pipeline_candidate(endpoint: Endpoint, name: str, version: int, *, role: str, approved: bool) -> PipelineVersion:
    """The pipeline version to roll out, when the endpoint's team may serve it and every model
    step and bandit arm may take `role` (the canary, or the primary when the first step is
    100 %; also with a shadow phase first: it is checked as what it becomes), with the
    exception of a Staging model candidate when an approver starts it (`approved`): a
    Staging model may then be in the canary of a production endpoint, and the rollout waits
    before 100 % until it is in Production. Refused with the 404/400/409 a hand traffic
    change would get."""
    candidate = pipeline_version_get(name=name, version=version, team_id=endpoint.team_id, where="candidate")
    traffic.pipeline_environment_check(endpoint, candidate, role, where="candidate", rollout_canary=approved)
    return candidate


# --- analysis -----------------------------------------------------------------------------


def rollout_analyse(rollout: Rollout, *, since: datetime, until: datetime) -> dict[str, Any]:
    """Candidate against stable on the same minutes: each check pass, fail or inconclusive
    (too few requests, or comparisons, on either side), with the values that decided it;
    the verdict is fail if any failed, else inconclusive if any was, else pass. In the
    shadow phase (step -1) only shadow_agreement runs (the candidate answers nobody, so
    its error rate and latency are not the callers'); at the weight steps every other."""
    shadow_phase = rollout.step < 0
    stats = deployment_window_totals(
        endpoint=rollout.endpoint.name, since=since, until=until, include_shadow=shadow_phase
    )
    label = rollout.candidate_label  # "pipeline:<name>:<version>" for a pipeline (inference.edge)
    candidate = stats.get(label, {})
    stable: dict[str, Any] = {}
    stable_labels = {_series(r) for r in rollout.stable_routes if r["role"] != "shadow"}
    for name, values in stats.items():
        if name in stable_labels and name != label:
            add_rollup(stable, values)
    cand, base = window_point(candidate), window_point(stable)
    checks = []
    for name, settings in rollout.plan["checks"].items():
        if (name == "shadow_agreement") != shadow_phase:
            continue
        if name == "shadow_agreement":
            checks.append(_agreement_check(cand, base, settings))
            continue
        enough = cand["requests"] >= settings["min_requests"] and base["requests"] >= settings["min_requests"]
        result: dict[str, Any] = {
            "check": name,
            "candidate_requests": cand["requests"],
            "stable_requests": base["requests"],
        }
        if name == "error_rate":
            result |= {
                "candidate": cand["error_rate"],
                "stable": base["error_rate"],
                "max_increase": settings["max_increase"],
            }
            enough = enough and cand["error_rate"] is not None and base["error_rate"] is not None
            failed = enough and cand["error_rate"] > base["error_rate"] + settings["max_increase"]
        elif name == "p99_latency":
            result |= {
                "candidate_ms": cand["p99_ms"],
                "stable_ms": base["p99_ms"],
                "max_ratio": settings["max_ratio"],
                "min_requests": settings["min_requests"],
            }
            enough = enough and cand["p99_ms"] is not None and base["p99_ms"] is not None
            failed = (
                enough
                and cand["p99_ms"] > base["p99_ms"] * settings["max_ratio"]
                and cand["p99_ms"] - base["p99_ms"] > settings["min_delta_ms"]
            )
        else:
            psi, output = output_psi(candidate, stable) if enough else (None, "")
            result |= {"psi": psi, "output": output, "max_psi": settings["max_psi"]}
            enough = enough and psi is not None
            failed = enough and psi > settings["max_psi"]
        result["result"] = "inconclusive" if not enough else ("fail" if failed else "pass")
        checks.append(result)
    results = {c["result"] for c in checks}
    verdict = "fail" if "fail" in results else "inconclusive" if "inconclusive" in results else "pass"
    return {
        "verdict": verdict,
        "phase": "shadow" if shadow_phase else "traffic",
        "since": since.isoformat(),
        "until": until.isoformat(),
        "checks": checks,
    }


def _agreement_check(cand: dict[str, Any], base: dict[str, Any], settings: dict[str, float]) -> dict[str, Any]:
    """The candidate's shadow answers that agreed with what the caller got (the stable
    routes' answers), as a share: fail under min_agreement, inconclusive with fewer than
    min_comparisons compared answers."""
    compared, agreement = cand["shadow_compared"], cand["shadow_agreement"]
    enough = compared >= settings["min_comparisons"] and agreement is not None
    failed = enough and agreement < settings["min_agreement"]
    return {
        "check": "shadow_agreement",
        "candidate_requests": cand["requests"],
        "stable_requests": base["requests"],
        "compared": compared,
        "agreed": cand["shadow_agreed"],
        "agreement": agreement,
        "min_agreement": settings["min_agreement"],
        "min_comparisons": settings["min_comparisons"],
        "result": "inconclusive" if not enough else ("fail" if failed else "pass"),
    }


# --- advancing ------------------------------------------------------------------------------


def _full_blocked(rollout: Rollout) -> str:
    """Why the candidate cannot take 100 % now ("" when it can)."""
    if rollout.plan["confirm_full"] and rollout.confirmed_by_id is None:
        return "the plan asks an approver to confirm 100 % (POST .../promote)"
    if rollout.candidate_pipeline_id is not None:
        try:
            traffic.pipeline_environment_check(rollout.endpoint, rollout.candidate_pipeline, Deployment.Role.PRIMARY)
        except environments.EnvironmentRuleBroken as exc:
            return f"{exc.message} (the rollout waits until it may)"
        return ""
    candidate = ModelVersion.objects.get(pk=rollout.candidate_id)
    if not environments.version_allowed(
        environment=rollout.endpoint.environment, stage=candidate.stage, role=Deployment.Role.PRIMARY
    ):
        return (
            f"{candidate} is in {candidate.stage}: a {rollout.endpoint.environment} endpoint's primary must be "
            "promoted first (ask for the promotion; the rollout waits for the approval)"
        )
    return ""


def _candidate_serves_all(rollout: Rollout) -> bool:
    current = rollout.endpoint.revisions.filter(is_current=True).first()
    taking = [r for r in (current.routes if current else []) if r["role"] != Deployment.Role.SHADOW]
    return len(taking) == 1 and _identity(taking[0]) == _identity(rollout.candidate_route)


@transaction.atomic
def rollout_advance(*, rollout_id: int, now: datetime | None = None) -> str:
    """One evaluation of one rollout: returns what was decided ("baking", "step",
    "rolled_back", "paused", "waiting", "succeeded", or "idle" when it is not running)."""
    now = now or timezone.now()
    rollout = (
        Rollout.objects.select_for_update(of=("self",))
        .select_related("endpoint", "candidate__model", "candidate_pipeline__pipeline")
        .filter(pk=rollout_id)
        .first()
    )
    if rollout is None or rollout.state not in (State.RUNNING, State.WAITING):
        return "idle"
    plan = rollout.plan
    if _candidate_serves_all(rollout):
        # Someone else finished it: approving the candidate to Production moved the
        # production endpoint's stable share to it (registry.promotions), or a person did.
        rollout.state, rollout.finished_at = State.SUCCEEDED, now
        rollout.reason = "the candidate already serves all the traffic"
        rollout.save(update_fields=["state", "finished_at", "reason", "updated_at"])
        _record(rollout, "succeeded", rollout.reason)
        return "succeeded"
    if rollout.state == State.WAITING:
        if _full_blocked(rollout):
            return "waiting"
        _step_apply(rollout, len(plan["steps"]) - 1, now)
        return "succeeded"
    bake_s = plan["shadow"]["bake_s"] if rollout.step < 0 else plan["steps"][rollout.step]["bake_s"]
    started = rollout.step_started_at or now
    analysis = rollout_analyse(rollout, since=started, until=now + timedelta(seconds=1))
    if analysis["verdict"] == "fail":
        rollout.failures += 1
        rollout.save(update_fields=["failures", "updated_at"])
        failed = [c for c in analysis["checks"] if c["result"] == "fail"]
        detail = "failed: " + ", ".join(c["check"] for c in failed)
        if rollout.failures >= plan["failure_limit"]:
            _roll_back(
                rollout,
                now,
                "rollback",
                f"{detail} ({rollout.failures} of {plan['failure_limit']} allowed)",
                analysis=analysis,
            )
            return "rolled_back"
        _record(
            rollout, "analysis", f"{detail} ({rollout.failures} of {plan['failure_limit']} allowed)", analysis=analysis
        )
        return "baking"
    if (now - started).total_seconds() < bake_s:
        return "baking"
    if analysis["verdict"] == "inconclusive":
        detail = "inconclusive after the bake time: " + ", ".join(
            f"{c['check']} ({c['compared']} of {c['min_comparisons']:g} comparisons)"
            if c["check"] == "shadow_agreement"
            else f"{c['check']} ({c['candidate_requests']}/{c['stable_requests']} requests)"
            for c in analysis["checks"]
            if c["result"] == "inconclusive"
        )
        if plan["on_inconclusive"] == "rollback":
            _roll_back(rollout, now, "rollback", detail, analysis=analysis)
            return "rolled_back"
        rollout.state, rollout.reason = State.PAUSED, detail
        rollout.save(update_fields=["state", "reason", "updated_at"])
        _record(rollout, "paused", detail, analysis=analysis)
        return "paused"
    passed = "the shadow phase" if rollout.step < 0 else f"step {rollout.step + 1}"
    _record(rollout, "analysis", f"{passed} passed", analysis=analysis)
    following = rollout.step + 1
    if plan["steps"][following]["weight"] == 100:
        blocked = _full_blocked(rollout)
        if blocked:
            rollout.state, rollout.reason = State.WAITING, blocked
            rollout.save(update_fields=["state", "reason", "updated_at"])
            _record(rollout, "waiting", blocked)
            return "waiting"
    _step_apply(rollout, following, now)
    return "succeeded" if rollout.state == State.SUCCEEDED else "step"


def rollouts_advance(*, now: datetime | None = None) -> dict[int, str]:
    """The periodic task's body: one evaluation of every running or waiting rollout."""
    decisions = {}
    for rollout_id in Rollout.objects.filter(state__in=[State.RUNNING, State.WAITING]).values_list("pk", flat=True):
        try:
            decisions[rollout_id] = rollout_advance(rollout_id=rollout_id, now=now)
        except DomainError as exc:
            log.warning("rollout %s could not advance: %s", rollout_id, exc.message)
            decisions[rollout_id] = f"error: {exc.message}"
    return decisions


# --- people's actions -----------------------------------------------------------------------


def _locked(rollout: Rollout) -> Rollout:
    return (
        Rollout.objects.select_for_update(of=("self",))
        .select_related("endpoint", "candidate__model", "candidate_pipeline__pipeline")
        .get(pk=rollout.pk)
    )


def _finished_check(rollout: Rollout, verb: str) -> None:
    if rollout.state not in Rollout.ACTIVE:
        raise RolloutConflict(
            f"rollout #{rollout.pk} is {rollout.state}: it cannot be {verb}", details={"state": rollout.state}
        )


@transaction.atomic
def rollout_pause(*, rollout: Rollout, user: AbstractBaseUser, source_ip: str | None = None) -> Rollout:
    rollout = _locked(rollout)
    _traffic_role(user, rollout.endpoint, "pausing a rollout")
    _finished_check(rollout, "paused")
    if rollout.state != State.PAUSED:
        rollout.state, rollout.reason = State.PAUSED, f"paused by {user.get_username()}"
        rollout.save(update_fields=["state", "reason", "updated_at"])
        _record(rollout, "paused", rollout.reason, actor=user, source_ip=source_ip)
    return rollout


@transaction.atomic
def rollout_resume(
    *, rollout: Rollout, user: AbstractBaseUser, source_ip: str | None = None, now: datetime | None = None
) -> Rollout:
    """Carry on from the current step; its bake time starts again (and its failure count)."""
    rollout = _locked(rollout)
    _traffic_role(user, rollout.endpoint, "resuming a rollout")
    _finished_check(rollout, "resumed")
    if rollout.state == State.PAUSED:
        rollout.state, rollout.reason, rollout.failures = State.RUNNING, "", 0
        rollout.step_started_at = now or timezone.now()
        rollout.save(update_fields=["state", "reason", "failures", "step_started_at", "updated_at"])
        _record(rollout, "resumed", f"resumed by {user.get_username()}", actor=user, source_ip=source_ip)
    return rollout


@transaction.atomic
def rollout_abort(
    *, rollout: Rollout, user: AbstractBaseUser, source_ip: str | None = None, now: datetime | None = None
) -> Rollout:
    """Stop and put the stable routes back; a finished rollout is a 409."""
    rollout = _locked(rollout)
    _traffic_role(user, rollout.endpoint, "aborting a rollout")
    _finished_check(rollout, "aborted")
    _roll_back(
        rollout, now or timezone.now(), "abort", f"aborted by {user.get_username()}", actor=user, source_ip=source_ip
    )
    return rollout


@transaction.atomic
def rollout_promote(
    *, rollout: Rollout, user: AbstractBaseUser, source_ip: str | None = None, now: datetime | None = None
) -> Rollout:
    """An approver confirms 100 %: the candidate takes all the traffic now (skipping the
    remaining steps), or, when it must be promoted first, as soon as it is."""
    rollout = _locked(rollout)
    role_check(user, APPROVER, to="promoting a rollout to 100 %")
    team_check(user, rollout.endpoint.team_id, what=f'endpoint "{rollout.endpoint.name}"')
    _finished_check(rollout, "promoted")
    rollout.confirmed_by = user
    rollout.save(update_fields=["confirmed_by", "updated_at"])
    blocked = _full_blocked(rollout)
    if blocked:
        rollout.state, rollout.reason = State.WAITING, blocked
        rollout.save(update_fields=["state", "reason", "updated_at"])
        _record(rollout, "waiting", f"confirmed by {user.get_username()}; {blocked}", actor=user, source_ip=source_ip)
        return rollout
    rollout.state = State.RUNNING
    _step_apply(rollout, len(rollout.plan["steps"]) - 1, now or timezone.now(), actor=user)
    return rollout


# --- alert rules with the rollback action ------------------------------------------------


def alert_rollback(*, endpoint_id: int, alert: dict[str, Any], now: datetime | None = None) -> str:
    """An alert rule with action "rollback" fired on the endpoint: roll back its running
    rollout (stable routes), else drop its canary routes (the primary takes their weight).
    `alert` is the firing as plain values (rule, metric, value, threshold, message), kept
    in the audit record. Returns what was done; safe to run twice (a finished rollout or
    no canary: nothing)."""
    detail = f"alert rule #{alert.get('rule')} fired: {alert.get('message', '')}"
    analysis = {"alert": alert}
    with transaction.atomic():
        rollout = (
            Rollout.objects.select_for_update(of=("self",))
            .select_related("endpoint", "candidate__model", "candidate_pipeline__pipeline")
            .filter(endpoint_id=endpoint_id, state__in=Rollout.ACTIVE)
            .first()
        )
        if rollout is not None:
            _roll_back(rollout, now or timezone.now(), "rollback", detail, analysis=analysis)
            return "rollout_rolled_back"
        endpoint = Endpoint.objects.get(pk=endpoint_id)
        current = endpoint.revisions.filter(is_current=True).first()
        routes = [{k: v for k, v in r.items() if k in traffic.ROUTE_KEYS} for r in (current.routes if current else [])]
        primary = next((r for r in routes if r["role"] == Deployment.Role.PRIMARY), None)
        if primary is None or not any(r["role"] == Deployment.Role.CANARY for r in routes):
            return "nothing"
        kept = [{**primary, "weight": 100}, *(r for r in routes if r["role"] == Deployment.Role.SHADOW)]
        traffic.traffic_policy_revise(
            endpoint=endpoint, routes=kept, user=None, comment=detail[:2000], action="traffic.alert_rollback"
        )
    return "canary_removed"
