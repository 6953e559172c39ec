"""Endpoint pages: health, the traffic split editor, policy history and rollback, API keys,
a "try it" panel and code snippets.

Writes call inference.endpoints, inference.traffic and inference.api_keys (the same functions
the REST API calls) after the same role check as the API's permission class; the split's rules
(weights add up to 100, one primary, shadows weigh 0, ready versions only) are decided there
and come back as messages.
"""

from __future__ import annotations

import json
from typing import Any

import plotly
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from accounts.models import Team
from accounts.permissions import is_admin, team_for_user, team_scope
from accounts.roles import APPROVER, ML_ENGINEER, has_role
from audit.models import AuditEvent
from config.errors import DomainError, NotFound
from config.http import client_ip
from dashboard.views import deployment_health, domain_errors_as_messages, page, require_role
from inference import api_keys, environments, selectors, traffic
from inference import endpoints as inference_endpoints
from inference.models import ApiKey, Deployment, Endpoint, Rollout, TrafficPolicyRevision
from inference.pipelines.models import PipelineVersion
from inference.pool_services import deployment_warmup
from inference.selectors import endpoint_for_user_or_404, visible_endpoints
from registry.models import ModelVersion
from rollouts import services as rollouts

ROLES = ("primary", "canary", "shadow")
MAX_ROUTES = 8
# A pipeline version in the forms: "pipeline:<name>:<version>" (names are slugs: no ":").
PIPELINE_PREFIX = "pipeline:"


@login_required
def endpoint_list(request: HttpRequest) -> HttpResponse:
    endpoints = (
        visible_endpoints(request.user)
        .annotate(
            ready=Count("deployments", filter=Q(deployments__state=Deployment.State.READY)),
            failed=Count("deployments", filter=Q(deployments__state=Deployment.State.FAILED)),
            loading=Count("deployments", filter=Q(deployments__state=Deployment.State.LOADING)),
            keys=Count("api_keys", filter=Q(api_keys__revoked_at__isnull=True), distinct=True),
        )
        .order_by("name")
    )
    page_obj = Paginator(endpoints, 50).get_page(request.GET.get("page"))
    rows = list(page_obj)
    current = {
        r.endpoint_id: r
        for r in TrafficPolicyRevision.objects.filter(endpoint__in=[e.pk for e in rows], is_current=True)
    }
    for endpoint in rows:
        endpoint.health = deployment_health(endpoint.ready, endpoint.failed, endpoint.loading)
        endpoint.current = current.get(endpoint.pk)
    teams = Team.objects.all() if is_admin(request.user) else request.user.teams.all()
    team_choices = list(teams.order_by("name").values_list("name", flat=True))
    return page(
        request, "dashboard/endpoints/list.html", {"page_obj": page_obj, "rows": rows, "team_choices": team_choices}
    )


@login_required
@require_POST
@domain_errors_as_messages
def endpoint_create(request: HttpRequest) -> HttpResponse:
    require_role(request, ML_ENGINEER, "creating an endpoint")
    team_name = request.POST.get("team", "").strip()
    endpoint = inference_endpoints.endpoint_create(
        name=request.POST.get("name", "").strip(),
        description=request.POST.get("description", "").strip(),
        team=team_for_user(request.user, team_name) if team_name else None,
        user=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Endpoint {endpoint.name} created. Give it a traffic split below.")
    return redirect("dash-endpoint", name=endpoint.name)


def _endpoint(request: HttpRequest, name: str) -> Endpoint:
    """The endpoint if the user's teams may see it; another team's is a 404 page."""
    try:
        endpoint: Endpoint = endpoint_for_user_or_404(request.user, name, selectors.endpoint_list())
    except NotFound as exc:
        raise Http404(exc.message) from None
    return endpoint


def example_payload(signature: dict[str, Any]) -> dict[str, Any]:
    """A request body the version accepts: one row per input, its shape with -1 as 1."""
    inputs = signature.get("inputs") or []
    tensors = {}
    for tensor in inputs:
        shape = [1 if not isinstance(d, int) or d < 1 else d for d in tensor.get("shape") or [1]]
        dtype = str(tensor.get("datatype") or tensor.get("dtype") or "").lower()
        value: Any = 1 if "int" in dtype else 0.5
        for size in reversed(shape):
            value = [value] * size if not isinstance(value, list) else [value for _ in range(size)]
        tensors[tensor.get("name", "input")] = value
    if len(tensors) == 1:
        (only,) = tensors.values()
        return {"instances": only}
    return {"inputs": tensors}


def _detail_context(request: HttpRequest, endpoint: Endpoint, **extra: Any) -> dict[str, Any]:
    revisions = list(endpoint.revisions.select_related("created_by").order_by("-revision")[:20])
    current = next((r for r in revisions if r.is_current), None)
    ids = [route.get("deployment") for route in (current.routes if current else [])]
    by_id = {d.pk: d for d in Deployment.objects.filter(pk__in=ids).select_related("model_version__model")}
    warmup = deployment_warmup(d for d in by_id.values() if d.state == Deployment.State.LOADING)
    routes = []
    for route in current.routes if current else []:
        deployment = by_id.get(route.get("deployment"))
        routes.append(
            {
                **route,
                "state": deployment.state if deployment else "",
                "detail": deployment and deployment.state_detail,
                "warmup": warmup.get(deployment.pk) if deployment else None,
            }
        )
    editor = [
        {
            "model": r.get("model") or f"{PIPELINE_PREFIX}{r.get('pipeline')}",
            "version": r["version"],
            "role": r["role"],
            "weight": r["weight"],
        }
        for r in routes
    ]
    editor += [{"model": "", "version": "", "role": "canary", "weight": 0}] * (2 if editor else 3)
    primary = next((by_id.get(r.get("deployment")) for r in routes if r["role"] == "primary"), None)
    signature = primary.model_version.signature if primary else {}
    options = _version_options(request.user, endpoint)
    pipelines = _pipeline_options(request.user, endpoint)
    # The split editor's rows offer both, so that a pipeline route is kept when the split is saved.
    both = options + (format_html('<optgroup label="Pipeline versions">{}</optgroup>', pipelines) if pipelines else "")
    for row in editor:
        picked = format_html('value="{}:{}"', row["model"], row["version"])
        row["options"] = mark_safe(both.replace(picked, picked + " selected", 1))
    base = request.build_absolute_uri("/").rstrip("/")
    payload = json.dumps(example_payload(signature or {}))
    return {
        "endpoint": endpoint,
        "revisions": revisions,
        "current": current,
        "routes": routes,
        "warming": any(r["state"] == Deployment.State.LOADING for r in routes),
        "editor_rows": editor,
        "roles": ROLES,
        "environment_rule": environments.ENVIRONMENT_RULES[endpoint.environment],
        "can_change_traffic": endpoint.environment != Endpoint.Environment.PRODUCTION
        or has_role(request.user, APPROVER),
        "keys": ApiKey.objects.filter(endpoints=endpoint).order_by("-created_at")[:20],
        "rollouts": _rollouts_context(request, endpoint),
        "version_options": mark_safe(options),  # built by _version_options from escaped parts
        "pipeline_options": pipelines,
        "can_start_rollout": can_change(request.user, endpoint),
        "is_approver": has_role(request.user, APPROVER),
        "events": AuditEvent.objects.filter(object_type="inference.endpoint", object_id=str(endpoint.pk)).order_by(
            "-created_at", "-id"
        )[:20],
        "payload": payload,
        "predict_url": f"{base}/api/v1/endpoints/{endpoint.name}/predict",
        "plotly_version": plotly.__version__,
        **extra,
    }


def can_change(user: Any, endpoint: Endpoint) -> bool:
    """Whether the user's role lets them change this endpoint's traffic (the services decide)."""
    needed = APPROVER if endpoint.environment == Endpoint.Environment.PRODUCTION else ML_ENGINEER
    return has_role(user, needed)


def check_summary(check: dict[str, Any]) -> str:
    """One analysis check as people read it: "error_rate fail: candidate 0.3 vs stable 0 (100/98 requests)"."""
    name = check.get("check", "")
    if name == "error_rate":
        values = f"candidate {check.get('candidate')} vs stable {check.get('stable')}, max +{check.get('max_increase')}"
    elif name == "p99_latency":
        values = f"p99 {check.get('candidate_ms')} vs {check.get('stable_ms')} ms, max x{check.get('max_ratio')}"
    elif name == "shadow_agreement":
        values = (
            f"{check.get('agreed')} of {check.get('compared')} shadow answers agreed, "
            f"min {check.get('min_agreement')} (at least {check.get('min_comparisons', 0):g} compared)"
        )
        return f"{name} {check.get('result')}: {values}"
    else:
        values = f"PSI {check.get('psi')} on {check.get('output') or '-'}, max {check.get('max_psi')}"
    requests = f"{check.get('candidate_requests')}/{check.get('stable_requests')} requests"
    return f"{name} {check.get('result')}: {values} ({requests})"


def _rollouts_context(request: HttpRequest, endpoint: Endpoint) -> list[dict[str, Any]]:
    rows = (
        team_scope(Rollout.objects.filter(endpoint=endpoint), request.user)
        .select_related("candidate__model", "candidate_pipeline__pipeline", "started_by")
        .prefetch_related("events")[:5]
    )
    out = []
    for rollout in rows:
        steps = rollout.plan.get("steps", [])
        events = [
            {
                "at": e.created_at,
                "kind": e.kind,
                "step": e.step,
                "detail": e.detail,
                "actor": e.actor_name,
                "checks": [check_summary(c) for c in (e.analysis or {}).get("checks", [])],
            }
            for e in rollout.events.all()
        ]
        out.append(
            {
                "rollout": rollout,
                "weights": (["shadow"] if rollout.plan.get("shadow") else []) + [s["weight"] for s in steps],
                "weight": steps[rollout.step]["weight"] if 0 <= rollout.step < len(steps) else 0,
                "active": rollout.state in Rollout.ACTIVE,
                "events": events,
            }
        )
    return out


def _version_options(user: Any, endpoint: Endpoint, limit: int = 300) -> str:
    """The editor's <option>s for ready versions, built once per page (not once per row).

    Only versions the user may see and the endpoint may serve (its team's or no team's).
    Versions the endpoint's environment forbids are greyed out (disabled) with the reason
    in their label; a version allowed only as a shadow says so. The service decides again
    on save (environments.environment_rule_check): this only spares people a refusal.
    """
    environment = endpoint.environment
    versions = team_scope(ModelVersion.objects.filter(status=ModelVersion.Status.READY), user, team_field="model__team")
    if endpoint.team_id is not None:
        versions = versions.filter(Q(model__team__isnull=True) | Q(model__team=endpoint.team_id))
    rows = versions.order_by("model__name", "-version").values_list("model__name", "version", "stage")[:limit]
    options = []
    for name, n, stage in rows:
        taking = environments.version_allowed(environment=environment, stage=stage, role=Deployment.Role.PRIMARY)
        shadow = environments.version_allowed(environment=environment, stage=stage, role=Deployment.Role.SHADOW)
        if taking:
            options.append(format_html('<option value="{}:{}">{} v{} ({})</option>', name, n, name, n, stage))
        elif shadow:
            options.append(
                format_html('<option value="{}:{}">{} v{} ({}: shadow only)</option>', name, n, name, n, stage)
            )
        else:
            options.append(
                format_html(
                    '<option value="{}:{}" disabled title="{}">{} v{} ({}: not allowed on a {} endpoint)</option>',
                    name,
                    n,
                    environments.ENVIRONMENT_RULES[environment],
                    name,
                    n,
                    stage,
                    environment,
                )
            )
    return mark_safe("".join(options))  # every part went through format_html


def _pipeline_options(user: Any, endpoint: Endpoint, limit: int = 100) -> str:
    """The rollout form's <option>s for pipeline versions: those the user may see and the
    endpoint's team may serve (its team's or no team's), newest first. Whether its models
    may serve there is the service's decision when the rollout starts (its 409 is shown)."""
    versions = team_scope(PipelineVersion.objects.all(), user, team_field="pipeline__team")
    if endpoint.team_id is not None:
        versions = versions.filter(Q(pipeline__team__isnull=True) | Q(pipeline__team=endpoint.team_id))
    rows = versions.order_by("pipeline__name", "-version").values_list("pipeline__name", "version")[:limit]
    return mark_safe(  # every part went through format_html
        "".join(
            format_html('<option value="{}{}:{}">pipeline {} v{}</option>', PIPELINE_PREFIX, name, n, name, n)
            for name, n in rows
        )
    )


@login_required
def endpoint_detail(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = _endpoint(request, name)
    return page(request, "dashboard/endpoints/detail.html", _detail_context(request, endpoint))


def routes_from_form(post: Any) -> list[dict[str, Any]]:
    """Rows of the split editor as the service's routes; blank rows are skipped.

    Only parsing happens here: whether the split is allowed is the service's decision.
    """
    routes = []
    for i in range(MAX_ROUTES):
        picked = post.get(f"route-{i}-version", "").strip()
        if not picked:
            continue
        name, _, number = picked.rpartition(":")
        role = post.get(f"route-{i}-role", "primary")
        raw_weight = post.get(f"route-{i}-weight", "0").strip() or "0"
        try:
            version, weight = int(number), int(raw_weight)
        except ValueError:
            raise DomainError(f"row {i + 1}: weight must be a whole number, got {raw_weight!r}") from None
        kind = "pipeline" if name.startswith(PIPELINE_PREFIX) else "model"
        route = {kind: name.removeprefix(PIPELINE_PREFIX), "version": version, "role": role}
        routes.append({**route, "weight": 0 if role == "shadow" else weight})
    return routes


@login_required
@require_POST
@domain_errors_as_messages
def traffic_update(request: HttpRequest, name: str) -> HttpResponse:
    require_role(request, ML_ENGINEER, "changing the traffic split")
    endpoint = _endpoint(request, name)
    revision = traffic.traffic_policy_revise(
        endpoint=endpoint,
        routes=routes_from_form(request.POST),
        user=request.user,
        comment=request.POST.get("comment", "")[:2000],
        source_ip=client_ip(request),
    )
    messages.success(request, f"Revision {revision.revision} is the split of {endpoint.name} now.")
    return redirect("dash-endpoint", name=name)


@login_required
@require_POST
@domain_errors_as_messages
def traffic_rollback(request: HttpRequest, name: str) -> HttpResponse:
    require_role(request, ML_ENGINEER, "rolling back the traffic split")
    raw = request.POST.get("revision", "")
    revision = traffic.traffic_policy_rollback(
        endpoint=_endpoint(request, name),
        revision=int(raw) if raw.isdigit() else None,
        user=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Rolled back: revision {revision.revision} ({revision.comment}).")
    return redirect("dash-endpoint", name=name)


@login_required
@require_POST
@domain_errors_as_messages
def endpoint_settings(request: HttpRequest, name: str) -> HttpResponse:
    require_role(request, ML_ENGINEER, "changing an endpoint")
    inference_endpoints.endpoint_update(
        endpoint=_endpoint(request, name),
        user=request.user,
        source_ip=client_ip(request),
        sticky_header=request.POST.get("sticky_header", "").strip(),
        description=request.POST.get("description", "").strip(),
        outlier_scoring=request.POST.get("outlier_scoring") == "on",
    )
    messages.success(request, "Settings saved.")
    return redirect("dash-endpoint", name=name)


@login_required
@require_POST
@domain_errors_as_messages
def key_create(request: HttpRequest, name: str) -> HttpResponse:
    require_role(request, ML_ENGINEER, "creating an API key")
    endpoint = _endpoint(request, name)
    key, secret = api_keys.api_key_create(
        name=request.POST.get("key_name", "").strip(),
        endpoints=[endpoint],
        user=request.user,
        source_ip=client_ip(request),
    )
    # The secret is rendered into this one response and stored nowhere.
    response = page(
        request,
        "dashboard/endpoints/detail.html",
        _detail_context(request, endpoint, new_key=key, new_secret=secret),
    )
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_POST
@domain_errors_as_messages
def key_revoke(request: HttpRequest, name: str, prefix: str) -> HttpResponse:
    require_role(request, ML_ENGINEER, "revoking an API key")
    endpoint = _endpoint(request, name)
    key = ApiKey.objects.filter(endpoints=endpoint, prefix=prefix).first()
    if key is None:
        raise Http404(f"no key {prefix!r} on {name}")
    api_keys.api_key_revoke(key=key, user=request.user, source_ip=client_ip(request))
    messages.success(request, f"Key {key.name} ({prefix}) revoked.")
    return redirect("dash-endpoint", name=name)


@login_required
@require_POST
@domain_errors_as_messages
def rollout_start(request: HttpRequest, name: str) -> HttpResponse:
    """Start a rollout from the page: a candidate (a model version "iris:2", or a pipeline
    version "pipeline:fraud:3") and (optionally) a plan as JSON; the API's service decides,
    its refusals (404, 400, 409 environment_rule, 403) come back as messages."""
    name_part, _, number = request.POST.get("candidate", "").rpartition(":")
    model, pipeline = name_part, None
    if name_part.startswith(PIPELINE_PREFIX):
        model, pipeline = None, name_part.removeprefix(PIPELINE_PREFIX)
    raw_plan = request.POST.get("plan", "").strip()
    try:
        plan = json.loads(raw_plan) if raw_plan else None
    except ValueError as exc:
        raise DomainError(f"plan: not JSON ({exc})") from None
    if not number.isdigit():
        raise DomainError("choose a candidate version")
    rollout = rollouts.rollout_start(
        endpoint=_endpoint(request, name),
        model=model,
        pipeline=pipeline,
        version=int(number),
        plan=plan,
        user=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Rollout #{rollout.pk} started: {rollout.candidate_name} takes its first step.")
    return redirect("dash-endpoint", name=name)


ROLLOUT_ACTIONS = {
    "pause": rollouts.rollout_pause,
    "resume": rollouts.rollout_resume,
    "abort": rollouts.rollout_abort,
    "promote": rollouts.rollout_promote,
}


@login_required
@require_POST
@domain_errors_as_messages
def rollout_action(request: HttpRequest, name: str, rollout_id: int, action: str) -> HttpResponse:
    endpoint = _endpoint(request, name)
    rollout = team_scope(Rollout.objects.filter(endpoint=endpoint), request.user).filter(pk=rollout_id).first()
    act = ROLLOUT_ACTIONS.get(action)
    if rollout is None or act is None:
        raise Http404(f"no rollout #{rollout_id} ({action}) on {name}")
    rollout = act(rollout=rollout, user=request.user, source_ip=client_ip(request))
    rollout.refresh_from_db()
    messages.success(request, f"Rollout #{rollout.pk}: {action} done, it is {rollout.state} now.")
    return redirect("dash-endpoint", name=name)
