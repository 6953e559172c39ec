"""Every error of the API is JSON: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from config.errors import DomainError, ServiceUnavailable
from config.renderers import dumps

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/v2", "/metrics")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def json_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> HttpResponse:
    return HttpResponse(dumps(error_body(code, message, details)), status=status, content_type="application/json")


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def _first_message(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    if isinstance(detail, dict) and detail:
        key, value = next(iter(detail.items()))
        return f"{key}: {_first_message(value)}"
    return str(detail)


NUL_MESSAGE = "text may not contain a NUL byte (\\x00 or \\u0000): the database cannot store it"


def is_nul_error(exc: BaseException) -> bool:
    """The database driver refused a NUL in text or JSON (a client's bad data, not a bug)."""
    from django.db import DataError

    text = str(exc)
    if isinstance(exc, ValueError) and "NUL (0x00)" in text:
        return True  # psycopg: "PostgreSQL text fields cannot contain NUL (0x00) bytes"
    return isinstance(exc, DataError) and ("\\u0000" in text or "0x00" in text)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    headers: dict[str, str] = {}
    if is_nul_error(exc):
        return Response(error_body("invalid", NUL_MESSAGE), status=400)
    if isinstance(exc, ServiceUnavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status, headers=headers)
    if isinstance(exc, Http404):
        return Response(error_body("not_found", str(exc) or "not found"), status=404)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(error_body("forbidden", str(exc) or "permission denied"), status=403)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("payload_too_large", "request body is too large"), status=413)
    if isinstance(exc, RecursionError):
        return Response(error_body("invalid", "request is nested too deeply"), status=400)
    if isinstance(exc, drf.ValidationError):
        return Response(
            error_body("invalid", _first_message(exc.detail), {"fields": exc.detail}),
            status=exc.status_code,
        )
    if isinstance(exc, drf.APIException):
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait or 1))
        code = exc.get_codes()
        return Response(
            error_body(code if isinstance(code, str) else "error", _first_message(exc.detail)),
            status=exc.status_code,
            headers=headers,
        )
    return None  # unexpected: JsonErrorMiddleware logs it and answers a JSON 500


def _handler(status: int, code: str, message: str):  # type: ignore[no-untyped-def]
    def view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        if is_api_path(request.path):
            if isinstance(exception, RequestDataTooBig):
                return json_error(413, "payload_too_large", "request body is too large")
            return json_error(status, code, message)
        from django.views import defaults

        if status == 404:
            return defaults.page_not_found(request, exception or Http404())
        if status == 400:
            return defaults.bad_request(request, exception or Exception())
        if status == 403:
            return defaults.permission_denied(request, exception or DjangoPermissionDenied())
        return defaults.server_error(request)

    return view


handler400 = _handler(400, "bad_request", "bad request")
handler403 = _handler(403, "forbidden", "permission denied")
handler404 = _handler(404, "not_found", "no such resource")


def handler500(request: HttpRequest) -> HttpResponse:
    return _handler(500, "server_error", "internal error; it has been logged")(request)


def max_body_bytes() -> int:
    return settings.MAX_ARTIFACT_BYTES + 1024 * 1024
