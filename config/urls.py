from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import health

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/health/live", health.live, name="health-live"),
    path("api/v1/health/ready", health.ready, name="health-ready"),
    path("api/v1/", include("accounts.urls")),
    path("api/v1/", include("registry.urls")),
    path("api/v1/", include("inference.batch.urls")),
    path("api/v1/", include("inference.pipelines.urls")),
    path("", include("inference.urls")),
    path("", include("rollouts.urls")),
    path("", include("monitoring.urls")),
    path("", include("dashboard.urls")),
]

handler400 = "config.exceptions.handler400"
handler403 = "config.exceptions.handler403"
handler404 = "config.exceptions.handler404"
handler500 = "config.exceptions.handler500"
