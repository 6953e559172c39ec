"""The raw WSGI front (gunicorn, config/wsgi.py): a thin adapter to inference.dataplane.

The prediction paths skip Django's URL resolver, middleware, request and response
objects: the environ becomes a `PredictRequest` (headers read from the environ in place)
and the one dispatcher answers it, as it does for the ASGI front and the Django views.
Everything else goes to Django. The server's start-up step (`inference.dataplane.
server_started`) is config/wsgi.py's: constructing this front changes no global state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from common.http import EnvironHeaders, PredictRequest, Reply
from inference.dataplane import DATAPLANE

StartResponse = Callable[..., Any]
_STATUS = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}


def _host(environ: dict[str, Any]) -> str | None:
    host: str | None = environ.get("HTTP_HOST")
    if host:
        return host
    name = environ.get("SERVER_NAME")
    return f"{name}:{environ.get('SERVER_PORT', '80')}" if name else None


class EdgeWSGI:
    def __init__(self, django_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.django_app = django_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not DATAPLANE.claims(path):
            return self.django_app(environ, start_response)
        request = PredictRequest(
            environ.get("REQUEST_METHOD", "GET"),
            path,
            EnvironHeaders(environ),
            environ.get("QUERY_STRING", ""),
            host=_host(environ),
        )
        reply: Reply = DATAPLANE.handle(request, environ["wsgi.input"].read)
        headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))), *reply.headers]
        start_response(_STATUS.get(reply.status) or f"{reply.status} Error", headers)
        return [reply.body]
