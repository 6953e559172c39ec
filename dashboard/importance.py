"""The version page's global importance: mean |KernelSHAP attribution| per feature over the
version's sampled traffic (monitoring's input samples), computed on request through a
ready deployment of the version (inference.explain.global_importance)."""

from __future__ import annotations

import numpy as np
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, JsonResponse

from common.errors import ModelhubError
from config.errors import NotFound
from inference import explain
from inference.models import Deployment
from inference.runtime.signature import Signature
from inference.selectors import deployment_spec
from monitoring.models import InputSample
from registry import selectors

MAX_ROWS = 64


def sampled_rows(label: str, keys: list[str], limit: int = MAX_ROWS) -> np.ndarray:
    """The latest sampled traffic rows of a deployment label ("model:version"). Each stored
    sample keeps its features' values in the same row order, so rows are read across them."""
    rows: list[list[float]] = []
    for features in (
        InputSample.objects.filter(deployment=label).order_by("-minute", "-id").values_list("features", flat=True)[:200]
    ):
        columns = [features.get(k) for k in keys]
        if any(not c for c in columns):
            continue
        for i in range(min(len(c) for c in columns)):
            rows.append([float(c[i]) for c in columns])
            if len(rows) >= limit:
                return np.asarray(rows)
    return np.asarray(rows, dtype=float).reshape(-1, len(keys))


@login_required
def version_importance(request: HttpRequest, name: str, version: int) -> JsonResponse:
    try:
        found = selectors.version_get(model_name=name, version=version, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from None
    try:
        signature = Signature.from_dict(found.signature or {})
        tensor = explain.tabular_input(signature)
        deployment = (
            Deployment.objects.filter(model_version=found, state=Deployment.State.READY)
            .select_related("endpoint", "model_version__model")
            .order_by("pk")
            .first()
        )
        if deployment is None:
            return JsonResponse(
                {"error": "no ready deployment serves this version: deploy it to compute importance"}, status=409
            )
        keys = explain.feature_keys(tensor.name, int(tensor.shape[1]))
        rows = sampled_rows(f"{name}:{version}", keys)
        if rows.shape[0] == 0:
            return JsonResponse(
                {"error": "no sampled traffic yet: the endpoint's drift sample rate keeps input rows (monitoring)"},
                status=409,
            )
        answer = explain.global_importance(
            deployment_spec(deployment), signature, rows, timeout_s=deployment.endpoint.timeout_ms / 1000
        )
    except ModelhubError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status)
    return JsonResponse(answer)
