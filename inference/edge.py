"""The prediction hot path, independent of Django's request objects.

parse -> cached auth -> cached route -> codec validate -> transport.infer -> encode.

Each function takes the WSGI environ (Django's request.META is the same mapping), the
body bytes and the path values, and returns a `Reply`. The plain Django views
(inference/views.py), the raw WSGI front (inference/wsgi.py, in front of Django under
gunicorn) and the ASGI front (inference/asgi.py, under uvicorn) all call them, so they
behave the same; the ASGI front awaits the model call between `V2Infer`'s steps.
Nothing here touches the ORM once the edge cache is warm (tests/inference/test_predict_runs_no_sql.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from config.renderers import dumps
from inference.router import RoutingError, RoutingTable
from inference.routing_cache import KeyEntry, edge_cache
from inference.runtime import codec
from inference.runtime.errors import InputError, Overloaded, RuntimeErrorBase
from inference.shadow import shadow_pool, shadow_run
from inference.transport import DeploymentSpec, transport_for
from monitoring.recorder import PredictionRecord, record

log = logging.getLogger("modelhub.edge")

JSON = "application/json"
SERVER_NAME = "modelhub"
SERVER_VERSION = "1.0.0"
V2_EXTENSIONS = ["binary_tensor_data"]
PIN_HEADER = "HTTP_X_MODEL_VERSION"
# The prediction paths the fronts answer without Django (names and versions as the API allows).
PREDICT_PATH = re.compile(r"^/api/v1/endpoints/([A-Za-z0-9_-]{1,64})/predict$")
V2_MODEL_PATH = re.compile(r"^/v2/models/([A-Za-z0-9_-]{1,64})(?:/versions/([A-Za-z0-9_:.-]{1,64}))?(/infer|/ready)?$")


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = JSON


class EdgeError(Exception):
    """A refusal decided at the edge (auth, unknown endpoint, body size)."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


def max_body_bytes() -> int:
    from django.conf import settings

    return int(getattr(settings, "PREDICT_MAX_BODY_BYTES", 16 * 1024 * 1024))


def read_body(environ: Mapping[str, Any], stream: Any) -> bytes:
    """The request body, refusing more than the prediction limit (413) before reading it."""
    limit = max_body_bytes()
    raw_length = environ.get("CONTENT_LENGTH") or ""
    try:
        length = int(raw_length) if raw_length else None
    except ValueError:
        raise EdgeError(400, "bad_request", "Content-Length is not a number") from None
    if length is not None and length > limit:
        raise EdgeError(413, "payload_too_large", f"request body of {length} bytes is over the limit of {limit} bytes")
    data = stream.read(length if length is not None else limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise EdgeError(413, "payload_too_large", f"request body is over the limit of {limit} bytes")
    return data


# ------------------------------------------------------------------ errors


def simple_error(status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    body = orjson.dumps({"error": {"code": code, "message": message, "details": {}}})
    return Reply(status, body, headers or [])


def v2_error(status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, orjson.dumps({"error": message, "code": code}), headers or [])


def _error_parts(exc: BaseException) -> tuple[int, str, str, list[tuple[str, str]]]:
    if isinstance(exc, EdgeError):
        return exc.status, exc.code, exc.message, exc.headers
    if isinstance(exc, RoutingError):
        headers = [("Retry-After", "1")] if exc.status == 503 else []
        return exc.status, exc.code, exc.message, headers
    if isinstance(exc, RuntimeErrorBase):
        headers = []
        if isinstance(exc, Overloaded):
            headers.append(("Retry-After", str(max(1, round(exc.retry_after_s)))))
        elif exc.status == 503:
            headers.append(("Retry-After", "1"))
        return exc.status, exc.code, exc.message, headers
    if isinstance(exc, RecursionError):
        return 400, "invalid_input", "request is nested too deeply", []
    log.exception("unexpected error on the prediction path")
    return 500, "server_error", "internal error; it has been logged", []


# ------------------------------------------------------------------ shared steps


def _table(name: str) -> RoutingTable:
    table = edge_cache.table(name)
    if table is None:
        raise EdgeError(404, "unknown_endpoint", f'no endpoint named "{name}"')
    return table


def _authorize(table: RoutingTable, environ: Mapping[str, Any]) -> KeyEntry | None:
    if not table.require_key:
        return None
    raw = environ.get("HTTP_X_API_KEY") or ""
    if not raw:
        header = environ.get("HTTP_AUTHORIZATION") or ""
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer":
            raw = ""
        raw = raw.strip()
    challenge = [("WWW-Authenticate", 'Bearer realm="modelhub"')]
    if not raw:
        raise EdgeError(
            401, "missing_key", "an API key is required: 'Authorization: Bearer mh_app_...' or 'X-Api-Key'", challenge
        )
    entry = edge_cache.api_key(raw)
    if entry is None:
        raise EdgeError(401, "invalid_key", "the API key is unknown or revoked", challenge)
    if table.endpoint not in entry.endpoints:
        raise EdgeError(403, "key_not_allowed", f'this API key is not allowed to call endpoint "{table.endpoint}"')
    return entry


def _route(table: RoutingTable, environ: Mapping[str, Any], pin: str | None) -> DeploymentSpec:
    sticky = environ.get(table.sticky_header) if table.sticky_header else None
    return table.choose(sticky_key=sticky or None, pin=pin or environ.get(PIN_HEADER) or None)


def _shadow(table: RoutingTable, spec: DeploymentSpec, inputs: dict[str, np.ndarray], answered: Any) -> None:
    for route in table.shadows:
        shadow = route.spec
        if shadow.deployment_id == spec.deployment_id:
            continue
        signature = table.signature_for(shadow)

        def call(shadow: DeploymentSpec = shadow, signature: Any = signature) -> Any:
            checked = codec.check_inputs(inputs, signature)
            return transport_for(shadow).infer(shadow, checked, timeout_s=table.timeout_s).outputs

        def done(ok: bool, value: Any, latency_ms: float, shadow: DeploymentSpec = shadow) -> None:
            record(
                PredictionRecord(
                    endpoint=table.endpoint,
                    deployment=shadow.label,
                    role="shadow",
                    latency_ms=latency_ms,
                    ok=ok,
                    error_kind=None if ok else getattr(value, "code", "error"),
                    rows=_rows(inputs),
                    outputs=value if ok else None,
                )
            )

        shadow_run(
            pool=shadow_pool, key=(table.endpoint, spec.label, shadow.label), call=call, answered=answered, on_done=done
        )


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    for arr in inputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 0


def _refused(name: str, spec: DeploymentSpec | None, started: float, exc: BaseException) -> tuple[int, str, str, list]:
    status, code, message, headers = _error_parts(exc)
    if code == "unknown_endpoint":
        name = "(unknown)"  # any caller-chosen name would grow the counters without bound
    record(
        PredictionRecord(
            endpoint=name,
            deployment=spec.label if spec is not None else "",
            role=spec.role if spec is not None else "",
            latency_ms=(time.perf_counter() - started) * 1000.0,
            ok=False,
            error_kind=code,
            rows=0,
        )
    )
    return status, code, message, headers


# ------------------------------------------------------------------ simple JSON


def predict(
    name: str, environ: Mapping[str, Any], body: bytes | None, *, stream: Any = None, pin: str | None = None
) -> Reply:
    """POST /api/v1/endpoints/{name}/predict"""
    started = time.perf_counter()
    spec: DeploymentSpec | None = None
    try:
        table = _table(name)
        key = _authorize(table, environ)
        if body is None:
            body = read_body(environ, stream)
        spec = _route(table, environ, pin)
        signature = table.signature_for(spec)
        pipeline = table.pipeline_for(spec)
        parsed = codec.parse_json(body)
        if pipeline is not None:
            parsed = pipeline.prepare_body(parsed)
        inputs = codec.decode_simple(parsed, signature, max_batch_size=table.max_rows)
        if pipeline is not None:
            inputs = pipeline.prepare_inputs(inputs)
        result = transport_for(spec).infer(spec, inputs, timeout_s=table.timeout_s)
        outputs = result.outputs
        if table.shadows:
            _shadow(table, spec, inputs, outputs)
        if pipeline is not None:
            outputs = pipeline.finish(outputs)
        payload = dumps({"endpoint": name, "model": spec.model, "version": spec.version, "outputs": outputs})
    except Exception as exc:  # noqa: BLE001 - every refusal is JSON and recorded
        return simple_error(*_refused(name, spec, started, exc))
    _record_ok(name, spec, started, inputs, result, body, payload, key)
    # As docs/serving.md says: the answering version (what the X-Model-Version request
    # header pins), and the model it belongs to.
    return Reply(200, payload, [("X-Model-Version", str(spec.version)), ("X-Model-Name", spec.model)])


def _record_ok(
    name: str,
    spec: DeploymentSpec,
    started: float,
    inputs: dict[str, Any],
    result: Any,
    body: bytes | None,
    payload: bytes,
    key: KeyEntry | None = None,
) -> None:
    """Count an answered prediction (refusals are counted in _refused)."""
    record(
        PredictionRecord(
            endpoint=name,
            deployment=spec.label,
            role=spec.role,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            ok=True,
            rows=_rows(inputs),
            batch_rows=result.batch_rows,
            queue_ms=result.queue_ms,
            model_ms=result.model_ms,
            inputs=inputs,
            outputs=result.outputs,
            payload=body,
            response=payload,
            api_key=key.prefix if key is not None else None,
        )
    )


# ------------------------------------------------------------------ Open Inference Protocol (V2)


class V2Infer:
    """One V2 infer request, in the steps every front shares.

    `prepare()` authorizes, routes and checks the inputs (raising on a refusal); the front
    then runs the model call the way that suits it (a blocking `transport.infer` on a WSGI
    thread, an awaited batcher future on the ASGI event loop) and finishes with
    `answer(result)` or, for any exception on the way, `refuse(exc)`. Both build the reply
    and count the request for monitoring.
    """

    __slots__ = (
        "body",
        "environ",
        "info",
        "inputs",
        "key",
        "name",
        "spec",
        "started",
        "stream",
        "table",
        "timeout_s",
        "version",
    )

    def __init__(
        self, name: str, version: str | None, environ: Mapping[str, Any], body: bytes | None, *, stream: Any = None
    ) -> None:
        self.started = time.perf_counter()
        self.name, self.version, self.environ, self.body, self.stream = name, version, environ, body, stream
        self.spec: DeploymentSpec | None = None
        self.key: KeyEntry | None = None

    def prepare(self) -> None:
        table = self.table = _table(self.name)
        self.key = _authorize(table, self.environ)
        if self.body is None:
            self.body = read_body(self.environ, self.stream)
        spec = self.spec = _route(table, self.environ, self.version)
        header_length = codec.parse_header_length(self.environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
        self.inputs, self.info = codec.decode_v2_request(
            self.body,
            self.environ.get("CONTENT_TYPE"),
            header_length,
            table.signature_for(spec),
            max_batch_size=table.max_rows,
        )
        self.timeout_s = min(self.info.timeout_s or table.timeout_s, table.timeout_s)

    def answer(self, result: Any) -> Reply:
        spec = self.spec
        assert spec is not None, "prepare() first"
        if self.table.shadows:
            _shadow(self.table, spec, self.inputs, result.outputs)
        payload, headers = codec.encode_v2_response(self.name, str(spec.version), result.outputs, self.info)
        _record_ok(self.name, spec, self.started, self.inputs, result, self.body, payload, self.key)
        content_type = headers.pop("Content-Type", JSON)
        return Reply(200, payload, list(headers.items()), content_type)

    def refuse(self, exc: BaseException) -> Reply:
        return v2_error(*_refused(self.name, self.spec, self.started, exc))


def v2_infer(
    name: str, version: str | None, environ: Mapping[str, Any], body: bytes | None, *, stream: Any = None
) -> Reply:
    """POST /v2/models/{name}[/versions/{version}]/infer (JSON or binary tensors)."""
    call = V2Infer(name, version, environ, body, stream=stream)
    try:
        call.prepare()
        assert call.spec is not None
        return call.answer(transport_for(call.spec).infer(call.spec, call.inputs, timeout_s=call.timeout_s))
    except Exception as exc:  # noqa: BLE001 - every refusal is JSON and recorded
        return call.refuse(exc)


def _tensor_meta(specs: Any) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]


def _default_spec(table: RoutingTable, version: str | None) -> DeploymentSpec:
    if version:
        return table.choose(pin=version)
    routes = sorted(table.routes, key=lambda r: (r.role != "primary", -r.weight))
    if not routes:
        raise RoutingError(f'endpoint "{table.endpoint}" has no ready deployment')
    return routes[0].spec


def v2_model_metadata(name: str, version: str | None, environ: Mapping[str, Any]) -> Reply:
    try:
        table = _table(name)
        _authorize(table, environ)
        spec = _default_spec(table, version)
        signature = table.signature_for(spec)
        versions = sorted({str(s.version) for s in table.all_specs()}, key=int)
        body = {
            "name": name,
            "versions": versions if version is None else [str(spec.version)],
            "platform": "onnxruntime_onnx",
            "inputs": _tensor_meta(signature.inputs),
            "outputs": _tensor_meta(signature.outputs),
            "parameters": {"model": spec.model, "version": spec.version, "revision": table.revision},
        }
    except Exception as exc:  # noqa: BLE001
        status, code, message, headers = _error_parts(exc)
        return v2_error(status, code, message, headers)
    return Reply(200, orjson.dumps(body))


def v2_model_ready(name: str, version: str | None, environ: Mapping[str, Any]) -> Reply:
    try:
        table = _table(name)
        _authorize(table, environ)
        spec = _default_spec(table, version)
    except Exception as exc:  # noqa: BLE001
        status, code, message, headers = _error_parts(exc)
        return v2_error(status, code, message, headers)
    return Reply(200, orjson.dumps({"name": name, "version": str(spec.version), "ready": True}))


def v2_server_metadata() -> Reply:
    return Reply(200, orjson.dumps({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": V2_EXTENSIONS}))


def v2_live() -> Reply:
    return Reply(200, orjson.dumps({"live": True}))


def v2_ready() -> Reply:
    """Ready once this process can reach its routing data (the database, on a cache miss)."""
    try:
        from django.db import connection

        if not edge_cache.warmed:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            edge_cache.warmed = True
    except Exception as exc:  # noqa: BLE001
        return v2_error(503, "not_ready", f"not ready: {exc}", [("Retry-After", "1")])
    return Reply(200, orjson.dumps({"ready": True}))


__all__ = [
    "EdgeError",
    "InputError",
    "Reply",
    "predict",
    "read_body",
    "v2_infer",
    "v2_live",
    "v2_model_metadata",
    "v2_model_ready",
    "v2_ready",
    "v2_server_metadata",
]
