"""The data plane: one dispatcher for the prediction paths, whatever server is in front.

Each front is a thin adapter: the raw WSGI callable (inference/wsgi.py, under gunicorn),
the raw ASGI callable (inference/asgi.py, under uvicorn) and the Django views
(inference/views.py, under runserver and the test client) turn their server's request
into one `PredictRequest` and call `DATAPLANE.handle()` (blocking) or
`DATAPLANE.handle_async()` (awaiting the model call). Everything a prediction path
decides is decided here, once:

    host (ALLOWED_HOSTS) -> route (ROUTES, declared once; Django's urls are built from
    them) -> method (405) -> announced length (413, before a byte is read) -> content
    type (415) -> body, read through the front's reader up to the limit (413) -> the
    route's handler (inference.edge: auth, route, ?version= pin, codec, model call)

and every refusal is rendered by `common.http.error_reply` in the route's shape (the
API's `{"error": {...}}` or V2's `{"error": "..."}`).

The core is synchronous with an awaitable model call: the checks cost microseconds and
the ASGI front runs them on its event loop; only the model call differs (blocking
`transport.infer` vs awaited `transport.infer_async`). Routes whose handler may read the
database on a cold cache for longer (readiness, metadata) run in the ASGI front's
thread pool (`offload`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from common.errors import (
    BadRequest,
    MethodNotAllowed,
    ModelhubError,
    UnsupportedMediaType,
    host_not_allowed,
    payload_too_large,
)
from common.http import PredictRequest, Reply, Shape, error_reply
from inference import edge, explain
from inference.routing_cache import edge_cache
from inference.transport import transport_for

BodyKind = Literal["json", "v2"]
Handler = Callable[[PredictRequest, dict[str, str | None]], "Reply | edge.InferCall"]

_NAME = r"(?P<name>[A-Za-z0-9_-]{1,64})"
_VERSION = r"(?P<version>[A-Za-z0-9_:.-]{1,64})"
_MODEL = rf"v2/models/{_NAME}(?:/versions/{_VERSION})?"


@dataclass(frozen=True, slots=True)
class Route:
    """One prediction path. `pattern` is a Django-style regex without the leading slash
    (inference/urls.py mounts the same patterns); `methods` () takes any method; `body`
    says what a body must be."""

    name: str
    pattern: str
    methods: tuple[str, ...]
    handler: Handler
    shape: Shape
    body: BodyKind | None = None
    offload: bool = False


def _predict(request: PredictRequest, args: dict[str, str | None]) -> edge.InferCall:
    pin = None
    if request.query:
        pins = parse_qs(request.query).get("version")
        pin = pins[0] if pins else None
    return edge.SimplePredict(args["name"] or "", request, pin=pin)


def _v2_infer(request: PredictRequest, args: dict[str, str | None]) -> edge.InferCall:
    return edge.V2Infer(args["name"] or "", request, version=args["version"])


def _explain(request: PredictRequest, args: dict[str, str | None]) -> Reply:
    return explain.simple_explain(args["name"] or "", request)


def _v2_explain(request: PredictRequest, args: dict[str, str | None]) -> Reply:
    return explain.v2_explain(args["name"] or "", args["version"], request)


def _v2_model(request: PredictRequest, args: dict[str, str | None]) -> Reply:
    return edge.v2_model_metadata(args["name"] or "", args["version"], request.headers)


def _v2_model_ready(request: PredictRequest, args: dict[str, str | None]) -> Reply:
    return edge.v2_model_ready(args["name"] or "", args["version"], request.headers)


def _feedback(request: PredictRequest, args: dict[str, str | None]) -> Reply:
    return edge.feedback(args["name"] or "", request, _shape(request.path))


def _v2_unknown(request: PredictRequest, args: dict[str, str | None]) -> Reply:
    return Reply(*error_reply(ModelhubError(f"no V2 route {request.path}", status=404, code="not_found"), "v2"))


GET = ("GET",)
# The prediction paths, declared once: the fronts match them here, Django mounts them
# (inference/urls.py). The most frequent first; the V2 catch-all last.
ROUTES: tuple[Route, ...] = (
    Route("v2-infer", rf"{_MODEL}/infer", ("POST",), _v2_infer, "v2", body="v2"),
    Route("endpoint-predict", rf"api/v1/endpoints/{_NAME}/predict", ("POST",), _predict, "simple", body="json"),
    # Explanations run many model rows and read the version's reference statistics: in
    # the ASGI front's thread pool (offload), never on its event loop.
    Route("v2-explain", rf"{_MODEL}/explain", ("POST",), _v2_explain, "v2", body="v2", offload=True),
    Route(
        "endpoint-explain",
        rf"api/v1/endpoints/{_NAME}/explain",
        ("POST",),
        _explain,
        "simple",
        body="json",
        offload=True,
    ),
    Route("v2-model-ready", rf"{_MODEL}/ready", GET, _v2_model_ready, "v2", offload=True),
    Route("v2-model", _MODEL, GET, _v2_model, "v2", offload=True),
    Route("v2-live", r"v2/health/live", GET, lambda r, a: edge.v2_live(), "v2"),
    Route("v2-ready", r"v2/health/ready", GET, lambda r, a: edge.v2_ready(), "v2", offload=True),
    Route("v2-server", r"v2/?", GET, lambda r, a: edge.v2_server_metadata(), "v2"),
    # Bandit feedback (inference.bandits): the store may be the database, so off the loop.
    Route("endpoint-feedback", rf"api/v1/endpoints/{_NAME}/feedback", ("POST",), _feedback, "simple", "json", True),
    Route("v2-feedback", rf"v2/models/{_NAME}/feedback", ("POST",), _feedback, "v2", "json", True),
    Route("v2-unknown", r"v2/.*", (), _v2_unknown, "v2"),
)

# Every announced media type the JSON bodies accept (parameters such as charset aside);
# `+json` types too. A V2 binary request (Inference-Header-Content-Length) may be typed
# as bytes. No Content-Type at all is accepted: tritonclient sends none.
_BINARY_TYPES = frozenset({"application/octet-stream"})


def _json_type(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _shape(path: str) -> Shape:
    return "v2" if path.startswith("/v2") else "simple"


class Dispatcher:
    """Routes a `PredictRequest` and answers it; one instance per process (`DATAPLANE`)."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes
        self._matchers = [(re.compile("^/" + route.pattern + "$").match, route) for route in routes]
        self._endpoint_paths = [match for match, route in self._matchers if route.name.startswith("endpoint-")]
        self._hosts: dict[str, bool] = {}
        self._hosts_for: object = None

    def claims(self, path: str) -> bool:
        """Whether a path is the data plane's (else the front hands it to Django): all of
        /v2 (an unknown V2 path is answered here, in V2's shape), and the predict, explain
        and feedback paths."""
        if path.startswith("/v2"):
            return len(path) == 3 or path[3] == "/"
        if not path.endswith(("/predict", "/explain", "/feedback")):
            return False
        return any(match(path) is not None for match in self._endpoint_paths)

    # ---------------------------------------------------------------- checks before the body

    def _host_allowed(self, host: str) -> bool:
        allowed = settings.ALLOWED_HOSTS
        if allowed is not self._hosts_for:  # settings changed (tests): start over
            self._hosts, self._hosts_for = {}, allowed
        verdict = self._hosts.get(host)
        if verdict is None:
            if settings.DEBUG and not allowed:
                allowed = [".localhost", "127.0.0.1", "[::1]"]  # as Django does
            domain, _ = split_domain_port(host)
            verdict = bool(domain) and validate_host(domain, allowed)
            if len(self._hosts) > 1000:  # any caller-chosen host: keep it bounded
                self._hosts.clear()
            self._hosts[host] = verdict
        return verdict

    def _match(self, path: str) -> tuple[Route, re.Match[str]]:
        for matches, route in self._matchers:
            match = matches(path)
            if match is not None:
                return route, match
        raise ModelhubError(f"no route {path}", status=404, code="not_found")  # claims() took it, no route did

    def resolve(self, request: PredictRequest) -> Reply | tuple[Route, dict[str, str | None], int]:
        """The route and its arguments, and how many bytes of body to read (0: none);
        or the refusal that needs no body."""
        path = request.path
        shape = _shape(path)
        try:
            if request.host is not None and not self._host_allowed(request.host):
                raise host_not_allowed(request.host)
            route, match = self._match(path)
            shape = route.shape
            if route.methods and request.method not in route.methods:
                raise MethodNotAllowed(request.method, route.methods)
            to_read = 0
            if route.body is not None:
                to_read = self._body_size(request, route.body)
        except ModelhubError as exc:
            return Reply(*error_reply(exc, shape))
        return route, match.groupdict(), to_read

    @staticmethod
    def _body_size(request: PredictRequest, kind: BodyKind) -> int:
        limit = edge.max_body_bytes()
        raw_length = request.headers.get("content-length")
        if raw_length:
            try:
                length = int(raw_length)
            except ValueError:
                raise BadRequest("Content-Length is not a number") from None
            if length > limit:
                raise payload_too_large(limit, length)  # refused before a byte is read
        else:
            length = limit + 1  # chunked or unannounced: read one byte past the limit
        content_type = request.headers.get("content-type")
        if content_type:
            media = content_type.partition(";")[0].strip().lower()
            binary = kind == "v2" and request.headers.get("inference-header-content-length") is not None
            if not _json_type(media) and not (binary and media in _BINARY_TYPES):
                expected = "application/json" + (" (or application/octet-stream with binary tensors)" if binary else "")
                raise UnsupportedMediaType(f'expected Content-Type {expected}, got "{media[:100]}"')
        return length

    @staticmethod
    def _take_body(request: PredictRequest, route: Route, body: bytes) -> Reply | None:
        limit = edge.max_body_bytes()
        if len(body) > limit:
            return Reply(*error_reply(payload_too_large(limit), route.shape))
        request.body = body
        return None

    # ---------------------------------------------------------------- the two ways to answer

    def handle(self, request: PredictRequest, read: Callable[[int], bytes]) -> Reply:
        """Answer blocking (WSGI, Django). `read(n)` returns up to n bytes of the body."""
        try:
            resolved = self.resolve(request)
            if isinstance(resolved, Reply):
                return resolved
            route, args, to_read = resolved
            if route.body is not None:
                refused = self._take_body(request, route, read(to_read) if to_read else b"")
                if refused is not None:
                    return refused
            out = route.handler(request, args)
            return out if isinstance(out, Reply) else out.run()
        except Exception as exc:  # noqa: BLE001 - a bug here still answers JSON (logged)
            return Reply(*error_reply(exc, _shape(request.path)))

    async def handle_async(
        self, request: PredictRequest, read: Callable[[int], Awaitable[bytes]], executor: Executor
    ) -> Reply:
        """Answer on an event loop (ASGI): the same steps, the model call awaited."""
        try:
            resolved = self.resolve(request)
            if isinstance(resolved, Reply):
                return resolved
            route, args, to_read = resolved
            if route.body is not None:
                refused = self._take_body(request, route, await read(to_read) if to_read else b"")
                if refused is not None:
                    return refused
            if route.offload:
                out: Any = await asyncio.get_running_loop().run_in_executor(executor, route.handler, request, args)
            else:
                out = route.handler(request, args)
            return out if isinstance(out, Reply) else await out.run_async()
        except Exception as exc:  # noqa: BLE001 - a bug here still answers JSON (logged)
            return Reply(*error_reply(exc, _shape(request.path)))


DATAPLANE = Dispatcher()


def server_started() -> None:
    """What a server does once per process before traffic: config/wsgi.py (gunicorn) and
    the ASGI front's lifespan start-up (uvicorn); not the Django views, not a test.

    Outside Django's request cycle nobody closes stale database connections: the edge
    cache closes them before a cache miss touches the ORM (after a PostgreSQL restart an
    old connection would otherwise fail every miss).
    """
    edge_cache.close_stale_connections = True


def warm_in_process_deployments() -> int:
    """Load and warm, in this process, every ready in-process deployment (before traffic)."""
    from django.db import close_old_connections

    # The ORM models need Django's app registry, and the fronts import this module before
    # Django has set up (config/wsgi.py, config/asgi_edge.py): imported at start-up, here.
    from inference.models import Deployment
    from inference.selectors import deployment_spec  # (the same: it imports the models)

    count = 0
    try:
        deployments = Deployment.objects.filter(
            placement=Deployment.Placement.IN_PROCESS, state=Deployment.State.READY
        ).select_related("endpoint", "model_version__model")
        for deployment in deployments:
            spec = deployment_spec(deployment)
            transport_for(spec).ensure_loaded(spec)
            count += 1
    finally:
        close_old_connections()
    return count
