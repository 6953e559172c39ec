"""Plain Django views for predictions: no DRF, no session, no ORM once the cache is warm.

They only adapt Django's request to inference.edge. Under gunicorn the raw WSGI front
(inference/wsgi.py) answers these paths before Django's middleware runs; these views
serve the same paths under `manage.py runserver`, the test client and any server that
loads Django's handler directly.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from inference import edge


def _respond(reply: edge.Reply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for key, value in reply.headers:
        response[key] = value
    return response


def _method_not_allowed(allowed: str) -> HttpResponse:
    response = HttpResponse(
        b'{"error": {"code": "method_not_allowed", "message": "use ' + allowed.encode() + b'", "details": {}}}',
        status=405,
        content_type="application/json",
    )
    response["Allow"] = allowed
    return response


def _v2_method_not_allowed(allowed: str) -> HttpResponse:
    response = HttpResponse(
        b'{"error": "method not allowed; use ' + allowed.encode() + b'"}', status=405, content_type="application/json"
    )
    response["Allow"] = allowed
    return response


@csrf_exempt
def predict(request: HttpRequest, name: str) -> HttpResponse:
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        body = edge.read_body(request.META, request)
    except edge.EdgeError as exc:
        return _respond(edge.simple_error(exc.status, exc.code, exc.message))
    return _respond(edge.predict(name, request.META, body, pin=request.GET.get("version")))


@csrf_exempt
def v2_infer(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    if request.method != "POST":
        return _v2_method_not_allowed("POST")
    try:
        body = edge.read_body(request.META, request)
    except edge.EdgeError as exc:
        return _respond(edge.v2_error(exc.status, exc.code, exc.message))
    return _respond(edge.v2_infer(name, version, request.META, body))


def v2_model(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    if request.method != "GET":
        return _v2_method_not_allowed("GET")
    return _respond(edge.v2_model_metadata(name, version, request.META))


def v2_model_ready(request: HttpRequest, name: str, version: str | None = None) -> HttpResponse:
    return _respond(edge.v2_model_ready(name, version, request.META))


def v2_server(request: HttpRequest) -> HttpResponse:
    return _respond(edge.v2_server_metadata())


def v2_live(request: HttpRequest) -> HttpResponse:
    return _respond(edge.v2_live())


def v2_ready(request: HttpRequest) -> HttpResponse:
    return _respond(edge.v2_ready())


# ---- OpenAPI descriptions of the prediction paths (the views above do the work) ----------

_KEY = OpenApiParameter("Authorization", str, OpenApiParameter.HEADER, description="Bearer mh_app_... (or X-Api-Key)")
_PIN = OpenApiParameter("version", int, description="pin a model version instead of the traffic split")


@extend_schema(
    summary="Predict (simple JSON)",
    description=(
        'Body: {"instances": [row, ...]} or {"inputs": {name: nested list}}. Answer: '
        '{"endpoint", "model", "version", "outputs": {name: nested list}}. Errors: '
        '{"error": {"code", "message", "details"}} with 400 (bad input), 401 (missing or '
        "revoked key), 403 (key not scoped here), 404 (unknown endpoint or version), 413, "
        "503 (no ready deployment, overloaded), 504 (deadline)."
    ),
    parameters=[_KEY, _PIN],
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
        '{"error": "..."} with the matching 4xx/5xx.'
    ),
    parameters=[_KEY],
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
