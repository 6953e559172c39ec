from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from registry.models import ModelVersion, RegisteredModel


@login_required
def home(request: HttpRequest) -> HttpResponse:
    context = {
        "model_count": RegisteredModel.objects.count(),
        "recent_versions": ModelVersion.objects.select_related("model").order_by("-created_at")[:10],
    }
    return render(request, "dashboard/home.html", context)
