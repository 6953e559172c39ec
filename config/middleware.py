from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from config.exceptions import (
    NUL_MESSAGE,
    database_unavailable,
    is_api_path,
    is_nul_error,
    json_error,
    max_body_bytes,
    respond,
)

log = logging.getLogger("modelhub.errors")


def nul_byte_in(request: HttpRequest) -> str:
    """Where a NUL byte is in the request's path or query string ("" when nowhere)."""
    if "\x00" in request.path:
        return "the path"
    if "%00" not in request.META.get("QUERY_STRING", "") and "\x00" not in request.META.get("QUERY_STRING", ""):
        return ""
    for key, values in request.GET.lists():
        if "\x00" in key or any("\x00" in value for value in values):
            return f"query parameter {key.replace(chr(0), '')!r}"
    return ""


class JsonErrorMiddleware:
    """API paths answer JSON even when something fails outside DRF's exception handler.

    It also refuses bodies that announce more than the largest upload before anything
    reads them.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if is_api_path(request.path):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return json_error(400, "bad_request", "Content-Length is not a number")
            if length > max_body_bytes():
                return json_error(413, "payload_too_large", f"request body of {length} bytes is over the limit")
            where = nul_byte_in(request)
            if where:
                # PostgreSQL text cannot hold a NUL: refuse it here, before a filter reaches
                # the database (a 500) or a streamed export starts (a truncated body).
                return json_error(400, "invalid", f"{where} contains a NUL byte (\\x00), which is not allowed")
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        if isinstance(exception, RequestDataTooBig):
            return json_error(413, "payload_too_large", "request body is too large")
        if isinstance(exception, RecursionError):
            return json_error(400, "invalid", "request is nested too deeply")
        if is_nul_error(exception):
            return json_error(400, "invalid", NUL_MESSAGE)
        unavailable = database_unavailable(exception)
        if unavailable is not None:
            log.warning("database unavailable on %s %s: %s", request.method, request.path, exception)
            return respond(unavailable, request.path)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "server_error", "internal error; it has been logged")
