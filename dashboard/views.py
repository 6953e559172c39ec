"""The browser pages. Views are thin: read through selectors, write through services.

Every write from a page calls the same service (and the same role check) as the API, and
a refused action comes back as a message on the page, never as a stack trace.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import plotly
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import CharField, Count, Max, OuterRef, Q, Subquery
from django.db.models.functions import Cast
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.permissions import team_scope
from accounts.roles import ML_ENGINEER, has_role, user_role
from audit.models import AuditEvent
from config.errors import DomainError, Forbidden, NotFound
from config.http import client_ip
from inference.models import Deployment
from inference.runtime.validate_child import CHECKS as VALIDATION_CHECKS
from inference.selectors import visible_endpoints
from monitoring.models import AlertRule
from registry import selectors, services
from registry.models import ModelVersion, RegisteredModel
from registry.promotions import TRANSITIONS
from registry.selectors import visible_models

MODELS_PER_PAGE = 25
VERSIONS_PER_PAGE = 50
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    role = user_role(request.user)
    context = {"user_role": role, "can_write": has_role(request.user, ML_ENGINEER) if role else False, **context}
    return render(request, template, context, status=status)


def domain_errors_as_messages(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A refused service call (DomainError) becomes a message and a redirect back.

    Objects named in the URL are looked up before the service is called (a 404 page);
    a NotFound from the service is about something the form named, so it is a message.
    """

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            return view(request, *args, **kwargs)
        except DomainError as exc:
            messages.error(request, exc.message)
            return redirect(request.POST.get("next") or request.META.get("HTTP_REFERER") or "/")

    return wrapper


def require_role(request: HttpRequest, role: str, what: str) -> None:
    if not has_role(request.user, role):
        raise Forbidden(f"{what} needs the {role} role or above")


# --- assets -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _plotly_bytes() -> bytes:
    return PLOTLY_JS.read_bytes()


def plotly_js(request: HttpRequest, version: str) -> HttpResponse:
    """Plotly's JavaScript from the installed `plotly` package: no CDN, cached for a year.

    The version is in the URL, so a new plotly release gets a new address.
    """
    if version != plotly.__version__:
        raise Http404("unknown plotly version")
    response = HttpResponse(_plotly_bytes(), content_type="text/javascript; charset=utf-8")
    response["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


FAVICON = Path(__file__).resolve().parent / "static" / "dashboard" / "favicon.ico"


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on every page (the admin and API docs too)."""
    response = HttpResponse(FAVICON.read_bytes(), content_type="image/x-icon")
    response["Cache-Control"] = "public, max-age=86400"
    return response


# --- home -----------------------------------------------------------------------------------


@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    endpoints = list(
        visible_endpoints(user)
        .annotate(
            ready=Count("deployments", filter=Q(deployments__state=Deployment.State.READY)),
            failed=Count("deployments", filter=Q(deployments__state=Deployment.State.FAILED)),
            loading=Count("deployments", filter=Q(deployments__state=Deployment.State.LOADING)),
        )
        .order_by("name")[:20]
    )
    for endpoint in endpoints:
        endpoint.health = deployment_health(endpoint.ready, endpoint.failed, endpoint.loading)
    context = {
        "model_count": visible_models(user).count(),
        "version_count": team_scope(ModelVersion.objects.all(), user, team_field="model__team").count(),
        "endpoint_count": visible_endpoints(user).count(),
        "endpoints": endpoints,
        "recent_versions": team_scope(ModelVersion.objects.all(), user, team_field="model__team")
        .select_related("model", "created_by")
        .order_by("-created_at")[:8],
        "recent_deployments": team_scope(Deployment.objects.all(), user, team_field="endpoint__team")
        .select_related("endpoint", "model_version__model")
        .order_by("-created_at")[:8],
    }
    context.update(_home_approvals(request))
    context.update(_home_alerts(user))
    return page(request, "dashboard/home.html", context)


def _home_approvals(request: HttpRequest) -> dict[str, Any]:
    pending = selectors.promotion_list(user=request.user, status="pending")
    return {"pending_count": pending.count(), "pending": pending[:5]}


def _home_alerts(user: Any) -> dict[str, Any]:
    firing = (
        team_scope(AlertRule.objects.all(), user, team_field="endpoint__team")
        .filter(state=AlertRule.State.FIRING)
        .select_related("endpoint")
        .order_by("-last_fired_at")
    )
    return {"firing_count": firing.count(), "firing": firing[:8]}


def deployment_health(ready: int, failed: int, loading: int) -> str:
    if failed:
        return "unhealthy"
    if loading:
        return "degraded"
    if ready:
        return "healthy"
    return "no deployments"


# --- models -------------------------------------------------------------------------------


def _latest(field: str, **filters: Any) -> Subquery:
    return Subquery(ModelVersion.objects.filter(model=OuterRef("pk"), **filters).order_by("-version").values(field)[:1])


@login_required
def model_list(request: HttpRequest) -> HttpResponse:
    params = {key: request.GET.get(key, "").strip() for key in ("search", "tag", "stage", "status")}
    if params["stage"] and params["stage"] not in ModelVersion.Stage.values:
        params["stage"] = ""
    if params["status"] and params["status"] not in ModelVersion.Status.values:
        params["status"] = ""
    models = selectors.model_list(**params, user=request.user).annotate(
        version_count=Subquery(
            ModelVersion.objects.filter(model=OuterRef("pk"))
            .order_by()
            .values("model")
            .annotate(n=Count("pk"))
            .values("n")[:1]
        ),
        latest_version=_latest("version"),
        latest_status=_latest("status"),
        latest_at=_latest("created_at"),
        production_version=_latest("version", stage=ModelVersion.Stage.PRODUCTION),
        staging_version=_latest("version", stage=ModelVersion.Stage.STAGING),
    )
    paginator = Paginator(models.order_by("name"), MODELS_PER_PAGE)
    page_obj = paginator.get_page(request.GET.get("page"))
    all_tags = sorted({tag for tags in RegisteredModel.objects.values_list("tags", flat=True) for tag in tags or []})
    query = urlencode({k: v for k, v in params.items() if v})
    return page(
        request,
        "dashboard/models/list.html",
        {
            "page_obj": page_obj,
            "params": params,
            "query": query,
            "all_tags": all_tags,
            "stages": ModelVersion.Stage.values,
            "statuses": ModelVersion.Status.values,
        },
    )


@login_required
@require_POST
@domain_errors_as_messages
def model_create(request: HttpRequest) -> HttpResponse:
    require_role(request, ML_ENGINEER, "registering a model")
    tags = [tag.strip() for tag in request.POST.get("tags", "").split(",") if tag.strip()]
    model = services.model_register(
        name=request.POST.get("name", "").strip(),
        description=request.POST.get("description", "").strip(),
        tags=tags,
        user=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Model {model.name} registered. Upload its first version below.")
    return redirect("dash-model", name=model.name)


def _model_events(model: RegisteredModel, limit: int = 40) -> list[AuditEvent]:
    version_ids = ModelVersion.objects.filter(model=model).annotate(pk_text=Cast("pk", CharField())).values("pk_text")
    return list(
        AuditEvent.objects.filter(
            Q(object_type="registry.registeredmodel", object_id=str(model.pk))
            | Q(object_type="registry.modelversion", object_id__in=version_ids)
        ).order_by("-created_at", "-id")[:limit]
    )


@login_required
def model_detail(request: HttpRequest, name: str) -> HttpResponse:
    try:
        model = selectors.model_get(name=name, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    versions = selectors.version_list(model=model)
    page_obj = Paginator(versions, VERSIONS_PER_PAGE).get_page(request.GET.get("page"))
    stages = {
        row["stage"]: row
        for row in ModelVersion.objects.filter(model=model)
        .order_by()
        .values("stage")
        .annotate(latest=Max("version"), n=Count("pk"))
    }
    return page(
        request,
        "dashboard/models/detail.html",
        {
            "model": model,
            "page_obj": page_obj,
            "stages": [(stage, stages.get(stage)) for stage in ModelVersion.Stage.values if stage != "None"],
            "events": _model_events(model),
            "validation_checks": VALIDATION_CHECKS,
        },
    )


@login_required
def version_detail(request: HttpRequest, name: str, version: int) -> HttpResponse:
    try:
        found = selectors.version_get(model_name=name, version=version, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    report = found.validation_report or {}
    checks = report.get("checks") if isinstance(report.get("checks"), list) else []
    signature = found.signature or {}
    metadata = found.metadata or {}
    lineage = {key: metadata.get(key) for key in ("training_data", "code_commit") if metadata.get(key)}
    extra = {k: v for k, v in metadata.items() if k not in ("metrics", "params", "training_data", "code_commit")}
    events = AuditEvent.objects.filter(object_type="registry.modelversion", object_id=str(found.pk)).order_by(
        "-created_at", "-id"
    )[:50]
    promotion = _promotion_context(found)
    deployments = Deployment.objects.filter(model_version=found).select_related("endpoint").order_by("endpoint__name")
    return page(
        request,
        "dashboard/models/version.html",
        {
            "model": found.model,
            "version": found,
            "report": report,
            "checks": checks,
            "inputs": signature.get("inputs") or [],
            "outputs": signature.get("outputs") or [],
            "metrics": metadata.get("metrics") or {},
            "params": metadata.get("params") or {},
            "lineage": lineage,
            "extra_metadata": extra,
            "events": events,
            "deployments": deployments,
            "in_progress": found.status in (ModelVersion.Status.PENDING, ModelVersion.Status.VALIDATING),
            "checklist": (checklist := _checklist(checks, _running_check(found))),
            "checklist_done": sum(c["state"] in ("ok", "fail") for c in checklist),
            "plotly_version": plotly.__version__,
            **promotion,
        },
    )


def _checklist(checks: list[dict[str, Any]], running: str = "") -> list[dict[str, str]]:
    """The validator's checks in the order it runs them, each ok, fail, running or pending."""
    results = {c.get("name"): bool(c.get("ok")) for c in checks if isinstance(c, dict)}

    def state(name: str) -> str:
        if name in results:
            return "ok" if results[name] else "fail"
        return "running" if name == running else "pending"

    return [{"name": name, "state": state(name)} for name in VALIDATION_CHECKS]


def _running_check(version: ModelVersion) -> str:
    progress = version.validation_progress if isinstance(version.validation_progress, dict) else {}
    return str(progress.get("running") or "") if version.status == ModelVersion.Status.VALIDATING else ""


def _promotion_context(version: ModelVersion) -> dict[str, Any]:
    """The stages this version may be asked to move to, and its requests."""
    return {
        "promotion_targets": TRANSITIONS.get(version.stage, ()),
        "version_requests": version.promotion_requests.select_related("requester", "reviewer").order_by("-created_at")[
            :10
        ],
    }
