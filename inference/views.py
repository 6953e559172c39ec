"""The Django front of the prediction paths: a thin adapter to inference.dataplane.

Under gunicorn and uvicorn the raw fronts (inference/wsgi.py, inference/asgi.py) answer
these paths before Django; this view serves them under `manage.py runserver`, the test
client and any server that loads Django's handler directly. No DRF, no session, no ORM
once the cache is warm. Django's middleware already checked the Host, so the dispatcher
does not again.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from common.http import EnvironHeaders, PredictRequest
from inference.dataplane import DATAPLANE


@csrf_exempt  # API keys, not cookies: and an unknown method must get the dispatcher's 405
def dataplane(request: HttpRequest, **_: str) -> HttpResponse:
    """Every route in inference.dataplane.ROUTES (inference/urls.py mounts them here)."""
    predict_request = PredictRequest(
        request.method or "GET", request.path_info, EnvironHeaders(request.META), request.META.get("QUERY_STRING", "")
    )
    reply = DATAPLANE.handle(predict_request, request.read)
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for key, value in reply.headers:
        response[key] = value
    return response


# ---- OpenAPI descriptions of the prediction paths (the views above do the work) ----------

_KEY = OpenApiParameter("Authorization", str, OpenApiParameter.HEADER, description="Bearer mh_app_... (or X-Api-Key)")
_PIN = OpenApiParameter("version", int, description="pin a model version instead of the traffic split")
_TRACE = OpenApiParameter(
    "trace",
    int,
    enum=[0, 1],
    description="a pipeline route: 1 returns each step's outputs and timing (docs/pipelines.md)",
)


@extend_schema(
    summary="Predict (simple JSON)",
    description=(
        'Body: {"instances": [row, ...]} or {"inputs": {name: nested list}}. Answer: '
        '{"endpoint", "model", "version", "outputs": {name: nested list}}. Errors: '
        '{"error": {"code", "message", "details"}} with 400 (bad input), 401 (missing or '
        "revoked key), 403 (key not scoped here), 404 (unknown endpoint or version), 413, "
        "503 (no ready deployment, overloaded), 504 (deadline)."
    ),
    parameters=[_KEY, _PIN, _TRACE],
    request=OpenApiTypes.OBJECT,
    responses={200: OpenApiTypes.OBJECT},
    tags=["predictions"],
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def predict_doc(request: object, name: str) -> None:  # pragma: no cover - schema only
    raise NotImplementedError


@extend_schema(
    summary="Open Inference Protocol (KServe V2) infer",
    description=(
        "JSON tensors, or the binary tensor extension (Inference-Header-Content-Length). "
        "The V2 model name is the endpoint name, the version the model version. Errors: "
        '{"error": "..."} with the matching 4xx/5xx. A pipeline route with ?trace=1 (or request '
        'parameters {"trace": true}) answers its trace in the response parameters.trace.'
    ),
    parameters=[_KEY, _TRACE],
    request=OpenApiTypes.OBJECT,
    responses={200: OpenApiTypes.OBJECT},
    tags=["predictions"],
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def v2_infer_doc(request: object, name: str) -> None:  # pragma: no cover - schema only
    raise NotImplementedError


@extend_schema(
    summary="V2 model metadata (from the signature)",
    parameters=[_KEY],
    responses={200: OpenApiTypes.OBJECT},
    tags=["predictions"],
)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def v2_model_doc(request: object, name: str) -> None:  # pragma: no cover - schema only
    raise NotImplementedError


@extend_schema(
    summary="Bandit feedback: a reward for a request a router decided",
    description=(
        'Body: {"request_id": "...", "reward": number} or {"request_id": "...", "rewards": '
        "[number per instance]}. The arm is taken from the feedback ledger written when the "
        "router decided, never from the body. Answer: "
        '{"request_id", "status": "accepted" | "duplicate", "duplicate", "reward", "count", '
        '"attributed": [{"router", "arm", "propensity"}]}; a second feedback for the same '
        "request changes nothing and says duplicate. Errors: 400 (reward not a number, or "
        "outside [0, 1] for a thompson_bernoulli router), 401/403 (API key), 404 (unknown or "
        "expired request id, unknown endpoint). The same route under /v2/models/{name}/feedback "
        "answers errors in V2's shape."
    ),
    parameters=[_KEY],
    request=OpenApiTypes.OBJECT,
    responses={code: OpenApiTypes.OBJECT for code in (200, 400, 401, 403, 404, 405, 413, 415, 503)},
    tags=["predictions"],
)
@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def feedback_doc(request: object, name: str) -> None:  # pragma: no cover - schema only
    raise NotImplementedError


_EXPLAIN = (
    "Per-feature attributions (KernelSHAP) of a tabular model's prediction against a background "
    "drawn from the answering version's reference statistics (docs/explain.md). Optional "
    '"parameters": {"output", "class_index", "background_size" (1-200, 50), "max_evaluations" '
    '(model rows, 1-65536, 8192), "seed"}. Answer: {"method", "output", "background_rows", '
    '"model_evaluations", "model_calls", "explanations": [{"class_index", "prediction", "base_value", '
    '"attributions": {feature: value}, "feature_values"}]}. 422 not_explainable (not one float input '
    "[-1, features]) or no_background (no reference statistics yet); otherwise the errors of predict."
)


def _explain_doc(summary: str, body: str, parameters: list[OpenApiParameter]) -> Any:
    """A schema-only stand-in for one of the two explain routes."""

    @extend_schema(
        summary=summary,
        description=body + " " + _EXPLAIN,
        parameters=parameters,
        request=OpenApiTypes.OBJECT,
        responses={code: OpenApiTypes.OBJECT for code in (200, 400, 401, 403, 404, 405, 413, 415, 422, 429, 503, 504)},
        tags=["predictions"],
    )
    @api_view(["POST"])
    @authentication_classes([])
    @permission_classes([])
    def view(request: object, name: str) -> None:  # pragma: no cover - schema only
        raise NotImplementedError

    return view


explain_doc = _explain_doc(
    "Explain predictions (simple JSON)",
    'Body: as predict ({"instances"} or {"inputs"}) plus "parameters".',
    [_KEY, _PIN],
)
v2_explain_doc = _explain_doc(
    "Explain predictions (Open Inference Protocol request body)",
    "Body: a V2 infer request (JSON or binary tensors), parameters in its parameters.",
    [_KEY],
)
