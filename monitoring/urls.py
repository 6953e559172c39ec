from __future__ import annotations

from django.urls import path

from monitoring import api

urlpatterns = [
    path("metrics", api.metrics, name="metrics"),
    path("api/v1/alerts/rules/", api.AlertRuleListCreate.as_view(), name="alert-rule-list"),
    path("api/v1/alerts/rules/<int:pk>/", api.AlertRuleDetail.as_view(), name="alert-rule-detail"),
    path("api/v1/alerts/events/", api.AlertEventList.as_view(), name="alert-event-list"),
    path("api/v1/endpoints/<str:name>/metrics", api.EndpointMetrics.as_view(), name="endpoint-metrics"),
    path("api/v1/endpoints/<str:name>/metrics/window", api.EndpointWindowStats.as_view(), name="endpoint-window-stats"),
    path(
        "api/v1/endpoints/<str:name>/monitoring", api.EndpointMonitoringSettings.as_view(), name="endpoint-monitoring"
    ),
    path("api/v1/endpoints/<str:name>/samples/", api.EndpointSamples.as_view(), name="endpoint-samples"),
    path(
        "api/v1/models/<str:name>/versions/<int:version>/reference",
        api.VersionReference.as_view(),
        name="version-reference",
    ),
]
