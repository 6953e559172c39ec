"""Monitoring and alert pages, over the monitoring app's selectors and services.

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

from accounts.permissions import (
    endpoint_for_user_or_404,
    get_visible_or_404,
    scope_by_endpoint_name,
    team_scope,
    visible_endpoints,
)
from accounts.roles import ML_ENGINEER
from config.errors import DomainError, NotFound
from config.http import client_ip
from dashboard import charts
from dashboard.views import domain_errors_as_messages, page, require_role
from inference.models import Endpoint
from monitoring import selectors, services
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


@login_required
def monitoring_endpoint(request: HttpRequest, name: str) -> HttpResponse:
    endpoint = _endpoint(request, name)
    week_ago = timezone.now() - timedelta(days=7)
    deployments = sorted(
        set(MetricRollup.objects.filter(endpoint=name, minute__gte=week_ago).values_list("deployment", flat=True))
    )
    return page(
        request,
        "dashboard/monitoring/endpoint.html",
        {
            "endpoint": endpoint,
            "ranges": list(RANGES),
            "deployments": deployments,
            "plotly_version": plotly.__version__,
        },
    )


@login_required
def monitoring_charts(request: HttpRequest, name: str) -> JsonResponse:
    """The endpoint's figures as JSON for Plotly.react: ?range=1h&versions=model:1,model:2."""
    endpoint = _endpoint(request, name)
    chosen = request.GET.get("range", "1h")
    if chosen not in RANGES:
        return JsonResponse(
            {"error": {"message": f"range must be one of {', '.join(RANGES)}, got {chosen!r}"}}, status=400
        )
    minutes, step = RANGES[chosen]
    until = timezone.now()
    try:
        data = selectors.endpoint_timeseries(endpoint.name, until - timedelta(minutes=minutes), until, step)
    except DomainError as exc:
        return JsonResponse({"error": {"message": exc.message}}, status=400)
    versions = [v for v in request.GET.get("versions", "").split(",") if v] or None
    figures = charts.monitoring_figures(data, versions=versions)
    totals = {
        deployment: sum(series.get("requests") or []) for deployment, series in (data.get("versions") or {}).items()
    }
    return JsonResponse(
        {
            "range": chosen,
            "step": step,
            "until": until.isoformat(),
            "requests": totals,
            "figures": {key: charts.figure_data(fig) for key, fig in figures.items()},
        }
    )


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
        },
    )


@login_required
@require_POST
@domain_errors_as_messages
def alert_rule_create(request: HttpRequest) -> HttpResponse:
    require_role(request, ML_ENGINEER, "creating an alert rule")
    endpoint_for_user_or_404(request.user, request.POST.get("endpoint", ""))
    rule = services.alert_rule_create(
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
    services.alert_rule_delete(rule_id=rule_id, user=request.user, source_ip=client_ip(request))
    messages.success(request, "Alert rule deleted.")
    return redirect("dash-alerts")
