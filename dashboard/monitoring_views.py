"""Monitoring and alert pages, over the monitoring app's selectors and alert rules.

Charts are built by dashboard.charts from `monitoring.selectors.endpoint_timeseries`
(pre-aggregated roll-ups, never raw logs); the page refreshes them by fetching
`charts.json` and handing the figures to Plotly.react, without a reload.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import plotly
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Sum
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.permissions import get_visible_or_404, team_scope
from accounts.roles import ML_ENGINEER
from config.errors import DomainError, NotFound
from config.http import client_ip
from dashboard import charts
from dashboard.views import domain_errors_as_messages, page, require_role
from inference.models import Deployment, Endpoint
from inference.selectors import endpoint_for_user_or_404, scope_by_endpoint_name, visible_endpoints
from monitoring import alerts, selectors
from monitoring.models import AlertEvent, AlertRule, MetricRollup

# range -> (minutes, step in seconds): at most a few hundred points per line.
RANGES = {"15m": (15, 60), "1h": (60, 60), "6h": (360, 300), "24h": (1440, 900), "7d": (10080, 3600)}


@login_required
def monitoring_index(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(hours=1)
    traffic = {
        row["endpoint"]: row
        for row in MetricRollup.objects.filter(minute__gte=since)
        .values("endpoint")
        .annotate(requests=Sum("count"), errors=Sum("error_count"))
    }
    firing = set(AlertRule.objects.filter(state=AlertRule.State.FIRING).values_list("endpoint__name", flat=True))
    page_obj = Paginator(visible_endpoints(request.user).order_by("name"), 50).get_page(request.GET.get("page"))
    rows = []
    for endpoint in page_obj:
        t = traffic.get(endpoint.name) or {}
        requests = t.get("requests") or 0
        rows.append(
            {
                "name": endpoint.name,
                "requests": requests,
                "rps": requests / 3600,
                "error_rate": (t.get("errors") or 0) / requests if requests else None,
                "firing": endpoint.name in firing,
            }
        )
    return page(request, "dashboard/monitoring/index.html", {"rows": rows, "page_obj": page_obj})


def _endpoint(request: HttpRequest, name: str) -> Endpoint:
    """The endpoint if the user's teams may see it; another team's is a 404."""
    try:
        endpoint: Endpoint = endpoint_for_user_or_404(request.user, name)
    except NotFound as exc:
        raise Http404(exc.message) from None
    return endpoint


def default_range(endpoint: Endpoint, now: Any) -> str:
    """A range that fits the data: the last 15 minutes for an endpoint younger than an hour
    (an hour would squeeze its first minutes into the right edge), else the last hour."""
    return "15m" if endpoint.created_at and now - endpoint.created_at < timedelta(hours=1) else "1h"


@login_required
def monitoring_endpoint(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = _endpoint(request, name)
    now = timezone.now()
    week_ago = now - timedelta(days=7)
    recorded = set(
        MetricRollup.objects.filter(endpoint=name, minute__gte=week_ago).values_list("deployment", flat=True)
    )
    served = {
        f"{model}:{version}"
        for model, version in endpoint.deployments.exclude(state=Deployment.State.RETIRED).values_list(
            "model_version__model__name", "model_version__version"
        )
    }
    # Versions first, then requests refused before a version was chosen ("").
    deployments = sorted(recorded | served, key=lambda d: (d == "", d))
    return page(
        request,
        "dashboard/monitoring/endpoint.html",
        {
            "endpoint": endpoint,
            "ranges": list(RANGES),
            "default_range": default_range(endpoint, now),
            "deployments": [{"value": d, "label": charts.version_label(d)} for d in deployments],
            "plotly_version": plotly.__version__,
            "scheduler": selectors.scheduler_status(),
        },
    )


@login_required
def monitoring_charts(request: HttpRequest, name: str) -> JsonResponse:
    """The endpoint's figures as JSON for Plotly.react: ?range=1h&versions=model:1,model:2.

    Figures come from `endpoint_timeseries` (roll-ups and the live minutes), marked with
    the endpoint's traffic changes and alerts (`endpoint_annotations`); `summary` is the
    per-version table over the same range from `endpoint_window_stats`.
    """
    endpoint = _endpoint(request, name)
    chosen = request.GET.get("range", "1h")
    if chosen not in RANGES:
        return JsonResponse(
            {"error": {"message": f"range must be one of {', '.join(RANGES)}, got {chosen!r}"}}, status=400
        )
    minutes, step = RANGES[chosen]
    until = timezone.now()
    since = until - timedelta(minutes=minutes)
    try:
        data = selectors.endpoint_timeseries(endpoint.name, since, until, step)
    except DomainError as exc:
        return JsonResponse({"error": {"message": exc.message}}, status=400)
    versions = _chosen_versions(request.GET.get("versions"))
    annotations = selectors.endpoint_annotations(endpoint.name, since, until)
    figures = charts.monitoring_figures(data, versions=versions, annotations=annotations)
    totals = {
        deployment: sum(series.get("requests") or []) for deployment, series in (data.get("versions") or {}).items()
    }
    try:
        window = selectors.endpoint_window_stats(endpoint.name, window_s=minutes * 60, now=until, include_shadow=True)
        summary = [
            {"version": charts.version_label(d, v["role"]), **_summary_row(v)}
            for d, v in window["versions"].items()
            if versions is None or d in versions
        ]
    except DomainError:  # a range longer than the minute retention: the charts still show it
        summary = []
    return JsonResponse(
        {
            "range": chosen,
            "step": step,
            "until": until.isoformat(),
            "requests": totals,
            "summary": summary,
            "annotations": annotations,
            "figures": {key: charts.figure_data(fig) for key, fig in figures.items()},
        }
    )


def _chosen_versions(raw: str | None) -> list[str] | None:
    """?versions=iris:1,refused -> ["iris:1", ""]; "-" is none of them; absent is all."""
    if raw is None or raw == "":
        return None
    return [REFUSED_PARAM_VALUES.get(v, v) for v in raw.split(",") if v and v != "-"]


REFUSED_PARAM_VALUES = {"refused": ""}  # refused requests have no version ("")


def _summary_row(stats: dict[str, Any]) -> dict[str, Any]:
    def r(value: Any, digits: int = 2) -> Any:
        return None if value is None else round(float(value), digits)

    return {
        "requests": stats["count"],
        "error_rate": r(stats["error_rate"], 4),
        "p50_ms": r(stats["p50_ms"]),
        "p95_ms": r(stats["p95_ms"]),
        "p99_ms": r(stats["p99_ms"]),
        "batch_size": r(stats["batch_size"]),
        "model_ms": r(stats["model_ms"], 3),
        "queue_ms": r(stats["queue_ms"], 3),
    }


# --- alerts ---------------------------------------------------------------------------------


def _rule_values(post: Any) -> dict[str, Any]:
    """Form fields as the service's values; the service decides what is allowed."""
    values: dict[str, Any] = {}
    for field in ("name", "metric", "comparison", "severity", "channel", "target", "deployment", "feature"):
        if post.get(field) is not None:
            values[field] = post.get(field, "").strip()
    values["threshold"] = post.get("threshold", "").strip()
    for field in ("window_minutes", "cooldown_minutes"):
        raw = post.get(field, "").strip()
        if raw:
            try:
                values[field] = int(raw)
            except ValueError:
                raise DomainError(f"{field.replace('_', ' ')} must be a whole number of minutes, got {raw!r}") from None
    return values


@login_required
def alert_list(request: HttpRequest) -> HttpResponse:
    endpoint = request.GET.get("endpoint", "")
    rules = team_scope(selectors.alert_rule_list(endpoint=endpoint), request.user, team_field="endpoint__team")
    rules = rules.order_by("endpoint__name", "id")
    events = scope_by_endpoint_name(selectors.alert_event_list(endpoint=endpoint), request.user)
    events = Paginator(events.order_by("-created_at", "-id"), 30).get_page(request.GET.get("page"))
    return page(
        request,
        "dashboard/monitoring/alerts.html",
        {
            "rules": rules,
            "page_obj": events,
            "endpoint_filter": endpoint,
            "query": f"endpoint={endpoint}" if endpoint else "",
            "endpoints": visible_endpoints(request.user).order_by("name").values_list("name", flat=True),
            "metrics": AlertRule.Metric.values,
            "comparisons": AlertRule.Comparison.values,
            "severities": AlertRule.Severity.values,
            "channels": AlertRule.Channel.values,
            "firing_count": sum(1 for r in rules if r.state == AlertRule.State.FIRING),
            "event_kinds": AlertEvent.Kind.values,
            # Rules fire only while the periodic jobs run: say so when nothing runs them.
            "scheduler": selectors.scheduler_status(),
        },
    )


@login_required
@require_POST
@domain_errors_as_messages
def alert_rule_create(request: HttpRequest) -> HttpResponse:
    require_role(request, ML_ENGINEER, "creating an alert rule")
    endpoint_for_user_or_404(request.user, request.POST.get("endpoint", ""))
    rule = alerts.alert_rule_create(
        endpoint_name=request.POST.get("endpoint", ""),
        values=_rule_values(request.POST),
        user=request.user,
        source_ip=client_ip(request),
    )
    messages.success(request, f"Alert rule “{rule}” created.")
    return redirect(request.POST.get("next") or "dash-alerts")


@login_required
@require_POST
@domain_errors_as_messages
def alert_rule_delete(request: HttpRequest, rule_id: int) -> HttpResponse:
    require_role(request, ML_ENGINEER, "deleting an alert rule")
    try:
        get_visible_or_404(AlertRule.objects.all(), request.user, team_field="endpoint__team", pk=rule_id)
    except NotFound:
        raise Http404(f"no alert rule {rule_id}") from None
    alerts.alert_rule_delete(rule_id=rule_id, user=request.user, source_ip=client_ip(request))
    messages.success(request, "Alert rule deleted.")
    return redirect("dash-alerts")
