"""Every error of the API is JSON: {"error": {"code", "message", "details"}} (V2's shape
under /v2). DRF's exceptions and Django's error views are translated to the one error
base (`common.errors.ModelhubError`) and rendered by the one function the prediction edge
uses too (`common.http.error_reply`)."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost, RequestDataTooBig
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from common.errors import ModelhubError, host_not_allowed
from common.http import error_parts, error_reply, shape_for_path

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/", "/v2", "/metrics")


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def respond(exc: BaseException, path: str = "") -> HttpResponse:
    """The JSON answer to a refusal, in the shape the path's clients expect."""
    status, body, headers = error_reply(exc, shape_for_path(path))
    response = HttpResponse(body, status=status, content_type="application/json")
    for name, value in headers:
        response[name] = value
    return response


def json_error(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> HttpResponse:
    return respond(ModelhubError(message, status=status, code=code, details=details))


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


DATABASE_RETRY_AFTER_S = 2.0


def database_unavailable(exc: BaseException) -> ModelhubError | None:
    """The database is down, restarting or refused the connection: 503, worth retrying."""
    from django.db import InterfaceError, OperationalError

    if not isinstance(exc, (OperationalError, InterfaceError)):
        return None
    message = f"the database is unavailable, retry shortly ({str(exc).strip()[:160] or type(exc).__name__})"
    return ModelhubError(message, status=503, code="unavailable", retry_after=DATABASE_RETRY_AFTER_S)


def as_error(exc: BaseException) -> ModelhubError | None:
    """DRF's and Django's exceptions as the one error base; None for an unexpected one."""
    if isinstance(exc, ModelhubError):
        return exc
    if is_nul_error(exc):
        return ModelhubError(NUL_MESSAGE, status=400, code="invalid")
    if isinstance(exc, Http404):
        return ModelhubError(str(exc) or "not found", status=404, code="not_found")
    if isinstance(exc, DjangoPermissionDenied):
        return ModelhubError(str(exc) or "permission denied", status=403, code="forbidden")
    if isinstance(exc, RequestDataTooBig):
        return ModelhubError("request body is too large", status=413, code="payload_too_large")
    if isinstance(exc, DisallowedHost):
        return host_not_allowed(str(exc).partition("'")[2].partition("'")[0])
    if isinstance(exc, RecursionError):
        return ModelhubError("request is nested too deeply", status=400, code="invalid")
    if isinstance(exc, drf.ValidationError):
        return ModelhubError(_first_message(exc.detail), status=exc.status_code, details={"fields": exc.detail})
    if isinstance(exc, drf.APIException):
        code = exc.get_codes()
        wait = getattr(exc, "wait", None)
        return ModelhubError(
            _first_message(exc.detail),
            status=exc.status_code,
            code=code if isinstance(code, str) else "error",
            retry_after=float(int(wait or 1)) if wait else None,
        )
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    error = as_error(exc)
    if error is None:
        return None  # unexpected: JsonErrorMiddleware logs it and answers a JSON 500
    request = context.get("request")
    status, data, headers = error_parts(error, shape_for_path(getattr(request, "path", "")))
    return Response(data, status=status, headers=dict(headers))


def _handler(status: int, code: str, message: str):  # type: ignore[no-untyped-def]
    def view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
        if is_api_path(request.path):
            if isinstance(exception, (DisallowedHost, RequestDataTooBig)):
                return respond(as_error(exception) or exception, request.path)
            return respond(ModelhubError(message, status=status, code=code), request.path)
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
