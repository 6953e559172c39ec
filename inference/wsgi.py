"""A raw WSGI front for the prediction paths, in front of Django's handler.

Under gunicorn (config/wsgi.py) the prediction calls skip Django's URL resolver,
middleware, request and response objects: they go straight to inference.edge, which
the Django views (inference/views.py) also call, so both answer the same. Everything
else goes to Django.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from inference import edge

_STATUS = {
    200: "200 OK",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    409: "409 Conflict",
    413: "413 Payload Too Large",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
    504: "504 Gateway Timeout",
}

StartResponse = Callable[..., Any]


def _send(reply: edge.Reply, start_response: StartResponse) -> Iterable[bytes]:
    headers = [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body))), *reply.headers]
    start_response(_STATUS.get(reply.status, f"{reply.status} Error"), headers)
    return [reply.body]


class EdgeWSGI:
    def __init__(self, django_app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.django_app = django_app
        from inference.routing_cache import edge_cache

        edge_cache.close_stale_connections = True

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/v2"):
            reply = self._v2(path, method, environ)
            if reply is not None:
                return _send(reply, start_response)
        elif method == "POST" and path.endswith("/predict"):
            match = edge.PREDICT_PATH.match(path)
            if match is not None:
                pin = None
                query = environ.get("QUERY_STRING")
                if query:
                    pin = (parse_qs(query).get("version") or [None])[0]
                return _send(
                    edge.predict(match.group(1), environ, None, stream=environ["wsgi.input"], pin=pin), start_response
                )
        return self.django_app(environ, start_response)

    def _v2(self, path: str, method: str, environ: dict[str, Any]) -> edge.Reply | None:
        if path.endswith("/infer") and method == "POST":
            match = edge.V2_MODEL_PATH.match(path)
            if match is not None and match.group(3) == "/infer":
                return edge.v2_infer(match.group(1), match.group(2), environ, None, stream=environ["wsgi.input"])
            return None
        if method != "GET":
            return None
        if path in ("/v2", "/v2/"):
            return edge.v2_server_metadata()
        if path == "/v2/health/live":
            return edge.v2_live()
        if path == "/v2/health/ready":
            return edge.v2_ready()
        match = edge.V2_MODEL_PATH.match(path)
        if match is None:
            return None
        name, version, tail = match.groups()
        if tail == "/ready":
            return edge.v2_model_ready(name, version, environ)
        if tail is None:
            return edge.v2_model_metadata(name, version, environ)
        return None
