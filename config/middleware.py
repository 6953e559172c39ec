from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from config.exceptions import is_api_path, json_error, max_body_bytes

log = logging.getLogger("modelhub.errors")


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
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        if isinstance(exception, RequestDataTooBig):
            return json_error(413, "payload_too_large", "request body is too large")
        if isinstance(exception, RecursionError):
            return json_error(400, "invalid", "request is nested too deeply")
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, "server_error", "internal error; it has been logged")
