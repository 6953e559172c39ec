"""The prediction steps, independent of any server's request object.

parse -> cached auth -> cached route -> codec validate -> transport.infer -> encode.

Every front (raw WSGI, raw ASGI, the Django views) turns its request into one
`PredictRequest` and hands it to `inference.dataplane`, which routes it, checks method,
host, size and content type, reads the body, and calls these steps: a `SimplePredict` or
`V2Infer` call (`run()` blocking, `run_async()` awaiting the model call) or one of the V2
metadata functions. Refusals are `common.errors.ModelhubError`s rendered by
`common.http.error_reply`, so every front answers them the same.
Nothing here touches the ORM once the edge cache is warm (tests/inference/test_predict_runs_no_sql.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson

from common.errors import ModelhubError
from common.http import JSON, Headers, PredictRequest, Reply, Shape, as_modelhub_error, error_reply
from config.renderers import dumps
from inference.bandits import feedback as bandit_feedback
from inference.bandits.router import CURRENT_ENDPOINT
from inference.pipelines import executor as pipelines
from inference.router import RoutingError, RoutingTable
from inference.routing_cache import KeyEntry, edge_cache
from inference.runtime import codec
from inference.runtime.errors import DeadlineExceeded, InputError
from inference.runtime.outliers import OutlierScorer, Scores
from inference.shadow import shadow_pool, shadow_run
from inference.spec import DeploymentSpec, InferResult
from inference.telemetry.recorder import PredictionRecord, record
from inference.transport import transport_for

log = logging.getLogger("modelhub.edge")

SERVER_NAME = "modelhub"
SERVER_VERSION = "1.0.0"
V2_EXTENSIONS = ["binary_tensor_data"]
PIN_HEADER = "x-model-version"


class EdgeError(ModelhubError):
    """A refusal decided at the edge (auth, unknown endpoint, body size)."""

    def __init__(self, status: int, code: str, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message, status=status, code=code, headers=headers)


def max_body_bytes() -> int:
    from django.conf import settings

    return int(getattr(settings, "PREDICT_MAX_BODY_BYTES", 16 * 1024 * 1024))


# ------------------------------------------------------------------ shared steps


def authorized_table(name: str, headers: Headers) -> tuple[RoutingTable, KeyEntry | None]:
    """The routing table of endpoint `name` and the API key in `headers` that may call it:
    404 for an unknown endpoint, 401 for a missing or unknown key, 403 for a key of other
    endpoints (EdgeError). Every route that serves an endpoint starts here."""
    table = edge_cache.table(name)
    if table is None:
        raise EdgeError(404, "unknown_endpoint", f'no endpoint named "{name}"')
    return table, _authorize(table, headers)


def _authorize(table: RoutingTable, headers: Headers) -> KeyEntry | None:
    if not table.require_key:
        return None
    raw = headers.get("x-api-key") or ""
    if not raw:
        header = headers.get("authorization") or ""
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


_HEADER_NAMES: dict[str, str] = {}


def _header_name(environ_key: str) -> str:
    """ "HTTP_X_ROUTING_KEY" (how RoutingTable keeps the sticky header) -> "x-routing-key"."""
    name = _HEADER_NAMES.get(environ_key)
    if name is None:
        name = _HEADER_NAMES[environ_key] = environ_key.removeprefix("HTTP_").lower().replace("_", "-")
    return name


def deployment_choose(table: RoutingTable, headers: Headers, pin: str | None) -> DeploymentSpec:
    """The deployment this request goes to: the `?version=` pin or the pin header, else the
    sticky header's hash, else the weighted split."""
    sticky = headers.get(_header_name(table.sticky_header)) if table.sticky_header else None
    return table.choose(sticky_key=sticky or None, pin=pin or headers.get(PIN_HEADER) or None)


def _shadow(table: RoutingTable, spec: DeploymentSpec, inputs: dict[str, np.ndarray], answered: Any) -> None:
    for route in table.shadows:
        shadow = route.spec
        if shadow.deployment_id == spec.deployment_id:
            continue
        signature = table.signature_for(shadow)

        def call(shadow: DeploymentSpec = shadow, signature: Any = signature) -> Any:
            checked = codec.check_inputs(inputs, signature)
            return transport_for(shadow).infer(shadow, checked, timeout_s=table.timeout_s).outputs

        def done(ok: bool, value: Any, latency_ms: float, agreed: bool | None, shadow: DeploymentSpec = shadow) -> None:
            record(
                PredictionRecord(
                    endpoint=table.endpoint,
                    deployment=_series(shadow),
                    role="shadow",
                    latency_ms=latency_ms,
                    ok=ok,
                    error_kind=None if ok else getattr(value, "code", "error"),
                    rows=_rows(inputs),
                    outputs=value if ok else None,
                    agreed=agreed,
                )
            )

        shadow_run(
            pool=shadow_pool,
            key=(table.endpoint, _series(spec), _series(shadow)),
            call=call,
            answered=answered,
            on_done=done,
        )


def _series(spec: DeploymentSpec) -> str:
    """The deployment label monitoring records for a route: a pipeline's is
    "pipeline:<name>:<version>", so that a pipeline named like a model never shares that
    model version's series (its counters, output summaries and output drift, which would be
    scored against the version's reference)."""
    return f"pipeline:{spec.label}" if spec.placement == pipelines.PLACEMENT else spec.label


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    for arr in inputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 0


def _refused(name: str, spec: DeploymentSpec | None, started: float, exc: BaseException, shape: Shape) -> Reply:
    """Count a refused prediction and render it."""
    error = as_modelhub_error(exc)
    if error.code == "unknown_endpoint":
        name = "(unknown)"  # any caller-chosen name would grow the counters without bound
    record(
        PredictionRecord(
            endpoint=name,
            deployment=_series(spec) if spec is not None else "",
            role=spec.role if spec is not None else "",
            latency_ms=(time.perf_counter() - started) * 1000.0,
            ok=False,
            error_kind=error.code,
            rows=0,
        )
    )
    return Reply(*error_reply(error, shape))


def _scorer(table: RoutingTable, spec: DeploymentSpec) -> OutlierScorer | None:
    """The deployment's outlier scorer when the endpoint scores requests (outlier_scoring)."""
    return table.outliers.get(spec.deployment_id) if table.outliers else None


def _scores_now(scorer: OutlierScorer | None, inputs: Mapping[str, np.ndarray]) -> Scores | None:
    """Score on the request (only when the caller asked to see the scores): otherwise the
    recorder keeps the inputs and the flusher scores them off the request path, together."""
    if scorer is None:
        return None
    try:
        return scorer.score(inputs)
    except Exception as exc:  # noqa: BLE001 - a scoring bug must not fail the prediction
        log.warning("outlier scoring failed: %s", exc)
        return None


def _wants_outliers(query: str) -> bool:
    """?outlier=1 (or true/yes) asks for the scores in the answer."""
    if "outlier" not in query:
        return False
    values = parse_qs(query).get("outlier") or [""]
    return values[0].lower() in ("1", "true", "yes")


def _wants_trace(query: str) -> bool:
    """?trace=1 (or true) asks a pipeline route for each step's outputs and timing."""
    return "trace" in query and (parse_qs(query).get("trace") or [""])[0] in ("1", "true")


def _v2_trace(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A pipeline's trace for V2's response `parameters`: outputs as nested JSON lists."""
    out = []
    for entry in trace:
        entry = dict(entry)
        if "outputs" in entry:
            entry["outputs"] = {
                name: value.tolist() if isinstance(value, np.ndarray) else value
                for name, value in entry["outputs"].items()
            }
        out.append(entry)
    return out


def _record_ok(
    name: str,
    spec: DeploymentSpec,
    started: float,
    inputs: dict[str, Any],
    result: Any,
    body: bytes | None,
    payload: bytes,
    key: KeyEntry | None = None,
    scorer: OutlierScorer | None = None,
    scores: Scores | None = None,
) -> None:
    """Count an answered prediction (refusals are counted in _refused)."""
    record(
        PredictionRecord(
            endpoint=name,
            deployment=_series(spec),
            role=spec.role,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            ok=True,
            rows=_rows(inputs),
            batch_rows=result.batch_rows,
            queue_ms=result.queue_ms,
            model_ms=result.model_ms,
            # A pipeline's drift samples are what each model step received, recorded by
            # its executor under the step's version; the request's own inputs (entity keys,
            # raw fields) are not a model's and could collide with a model of the same name.
            inputs=None if spec.placement == pipelines.PLACEMENT else inputs,
            outputs=result.outputs,
            payload=body,
            response=payload,
            api_key=key.prefix if key is not None else None,
            outlier_scorer=scorer if scores is None else None,
            scored_rows=0 if scores is None else int(scores.outlier.shape[0]),
            outlier_rows=0 if scores is None else int(scores.outlier.sum()),
        )
    )


# ------------------------------------------------------------------ the two prediction calls


class InferCall:
    """One prediction request, in the steps every front shares.

    `prepare()` authorizes, routes and checks the inputs (raising on a refusal); the model
    call runs blocking (`run()`, a WSGI thread or a Django view) or awaited (`run_async()`,
    the ASGI event loop: an in-process batcher future or a redis.asyncio round trip);
    `answer(result)` builds the reply, `refuse(exc)` renders any exception on the way.
    Both count the request for monitoring.
    """

    __slots__ = ("inputs", "key", "name", "request", "spec", "started", "table", "timeout_s", "trace")
    shape: Shape = "simple"
    inputs: dict[str, np.ndarray]
    table: RoutingTable
    timeout_s: float

    def __init__(self, name: str, request: PredictRequest) -> None:
        self.started = time.perf_counter()
        self.name, self.request = name, request
        CURRENT_ENDPOINT.set(name)  # a bandit router's decisions take feedback through this endpoint only
        self.spec: DeploymentSpec | None = None
        self.key: KeyEntry | None = None
        self.trace = False

    def request_id(self) -> str:
        """The id a pipeline's answer carries (feedback references it): the caller's
        X-Request-Id when sane, else a new one."""
        return pipelines.request_id_for(self.request.headers.get("x-request-id"))

    def prepare(self) -> None:
        raise NotImplementedError

    def answer(self, result: InferResult) -> Reply:
        raise NotImplementedError

    def refuse(self, exc: BaseException) -> Reply:
        return _refused(self.name, self.spec, self.started, exc, self.shape)

    def run(self) -> Reply:
        try:
            self.prepare()
            spec = self.spec
            assert spec is not None, "prepare() routes"
            called = time.perf_counter()
            if spec.placement == pipelines.PLACEMENT:
                result = pipelines.infer(
                    spec, self.inputs, timeout_s=self.timeout_s, request_id=self.request_id(), trace=self.trace
                )
            else:
                result = transport_for(spec).infer(spec, self.inputs, timeout_s=self.timeout_s)
            self._in_time(called)
            return self.answer(result)
        except Exception as exc:  # noqa: BLE001 - every refusal is JSON and recorded
            return self.refuse(exc)

    async def run_async(self) -> Reply:
        try:
            self.prepare()
            spec = self.spec
            assert spec is not None, "prepare() routes"
            called = time.perf_counter()
            if spec.placement == pipelines.PLACEMENT:
                result = await pipelines.infer_async(
                    spec, self.inputs, timeout_s=self.timeout_s, request_id=self.request_id(), trace=self.trace
                )
            else:
                result = await transport_for(spec).infer_async(spec, self.inputs, timeout_s=self.timeout_s)
            self._in_time(called)
            return self.answer(result)
        except Exception as exc:  # noqa: BLE001 - every refusal is JSON and recorded
            return self.refuse(exc)

    def _in_time(self, called: float) -> None:
        """A result that arrives after the deadline is a 504 all the same.

        The transports enforce the deadline with other threads (ONNX Runtime's terminate
        flag set by the watchdog thread, the batcher's timed wait); on a starved machine
        those threads can be scheduled only after the run finished, and a late result
        then came back as a 200 (the flaky tests/inference/test_deadlines.py). The
        deadline is on the answer, so it is checked here, on the thread that answers.
        """
        elapsed = time.perf_counter() - called
        if elapsed > self.timeout_s:
            raise DeadlineExceeded(
                f'endpoint "{self.name}": the model answered after {elapsed * 1000:.0f} ms, '
                f"past the deadline of {self.timeout_s * 1000:.0f} ms"
            )


class SimplePredict(InferCall):
    """POST /api/v1/endpoints/{name}/predict (simple JSON), pinned by ?version= or X-Model-Version."""

    __slots__ = ("pin", "pipeline")

    def __init__(self, name: str, request: PredictRequest, *, pin: str | None = None) -> None:
        super().__init__(name, request)
        self.pin = pin

    def prepare(self) -> None:
        request = self.request
        table, self.key = authorized_table(self.name, request.headers)
        self.table = table
        spec = self.spec = deployment_choose(table, request.headers, self.pin)
        signature = table.signature_for(spec)
        pipeline = self.pipeline = table.pipeline_for(spec)
        parsed = codec.parse_json(request.body)
        if pipeline is not None:
            parsed = pipeline.prepare_body(parsed)
        inputs = codec.decode_simple(parsed, signature, max_batch_size=table.max_rows)
        if pipeline is not None:
            inputs = pipeline.prepare_inputs(inputs)
        self.inputs = inputs
        self.timeout_s = table.timeout_s
        if request.query and spec.placement == pipelines.PLACEMENT:
            self.trace = _wants_trace(request.query)

    def answer(self, result: InferResult) -> Reply:
        spec = self.spec
        assert spec is not None, "prepare() first"
        outputs = result.outputs
        if self.table.shadows:
            _shadow(self.table, spec, self.inputs, outputs)
        if self.pipeline is not None:
            outputs = self.pipeline.finish(outputs)
        scorer = _scorer(self.table, spec)
        scores = None
        headers = [("X-Model-Version", str(spec.version)), ("X-Model-Name", spec.model)]
        answer: dict[str, Any]
        if spec.placement == pipelines.PLACEMENT:
            # A pipeline's answer: its request id (for feedback), bandit choices, the trace.
            answer = {
                "endpoint": self.name,
                "version": spec.version,
                "outputs": {k: pipelines.jsonable(v) for k, v in outputs.items()},
                "pipeline": spec.model,
                **result.extra,
            }
            headers.append(("X-Request-Id", result.extra["request_id"]))
        else:
            answer = {"endpoint": self.name, "model": spec.model, "version": spec.version, "outputs": outputs}
        if self.request.query and _wants_outliers(self.request.query):
            scores = _scores_now(scorer, self.inputs)
            answer["outliers"] = None if scores is None or scorer is None else scores.rows(scorer.names)
        payload = dumps(answer)
        _record_ok(
            self.name, spec, self.started, self.inputs, result, self.request.body, payload, self.key, scorer, scores
        )
        # As docs/serving.md says: the answering version (what the X-Model-Version request
        # header pins), and the model it belongs to.
        return Reply(200, payload, headers)


class V2Infer(InferCall):
    """POST /v2/models/{name}[/versions/{version}]/infer (JSON or binary tensors)."""

    __slots__ = ("info", "version")
    shape: Shape = "v2"

    def __init__(self, name: str, request: PredictRequest, *, version: str | None = None) -> None:
        super().__init__(name, request)
        self.version = version

    def request_id(self) -> str:
        """V2's request "id" when the caller sent one, else as the simple API."""
        given = self.info.id
        return given if given and pipelines.request_id_for(given) == given else super().request_id()

    def prepare(self) -> None:
        request = self.request
        table, self.key = authorized_table(self.name, request.headers)
        self.table = table
        spec = self.spec = deployment_choose(table, request.headers, self.version)
        header_length = codec.parse_header_length(request.headers.get("inference-header-content-length"))
        self.inputs, self.info = codec.decode_v2_request(
            request.body,
            request.headers.get("content-type"),
            header_length,
            table.signature_for(spec),
            max_batch_size=table.max_rows,
        )
        self.timeout_s = min(self.info.timeout_s or table.timeout_s, table.timeout_s)
        if spec.placement == pipelines.PLACEMENT:  # ?trace=1, or the request's parameters {"trace": true}
            self.trace = self.info.parameters.get("trace") is True or bool(
                request.query and _wants_trace(request.query)
            )

    def answer(self, result: InferResult) -> Reply:
        spec = self.spec
        assert spec is not None, "prepare() first"
        if self.table.shadows:
            _shadow(self.table, spec, self.inputs, result.outputs)
        info = self.info
        request_id = result.extra.get("request_id") if spec.placement == pipelines.PLACEMENT else None
        if request_id is not None and info.id is None:
            info = dataclasses.replace(info, id=request_id)  # a pipeline's answer carries its request id
        scorer = _scorer(self.table, spec)
        scores = parameters = None
        if (self.request.query and _wants_outliers(self.request.query)) or info.parameters.get("outlier") is True:
            scores = _scores_now(scorer, self.inputs)
            parameters = {"outliers": None if scores is None or scorer is None else scores.rows(scorer.names)}
        if self.trace and "trace" in result.extra:
            parameters = {**(parameters or {}), "trace": _v2_trace(result.extra["trace"])}
        payload, headers = codec.encode_v2_response(self.name, str(spec.version), result.outputs, info, parameters)
        _record_ok(
            self.name, spec, self.started, self.inputs, result, self.request.body, payload, self.key, scorer, scores
        )
        content_type = headers.pop("Content-Type", JSON)
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        return Reply(200, payload, list(headers.items()), content_type)


# ------------------------------------------------------------------ bandit feedback


def feedback(name: str, request: PredictRequest, shape: Shape) -> Reply:
    """POST /api/v1/endpoints/{name}/feedback and /v2/models/{name}/feedback: a reward for
    a request a bandit router decided, authenticated like a prediction (the endpoint's API
    keys); the arm comes from the ledger (inference.bandits.feedback)."""
    try:
        authorized_table(name, request.headers)
        request_id, rewards = bandit_feedback.parse_body(codec.parse_json(request.body))
        result = bandit_feedback.feedback(name, request_id, rewards)
    except Exception as exc:  # noqa: BLE001 - every refusal is JSON
        return Reply(*error_reply(exc, shape))
    return Reply(200, orjson.dumps(bandit_feedback.reply_body(request_id, result)))


# ------------------------------------------------------------------ V2 metadata and health


def _tensor_meta(specs: Any) -> list[dict[str, Any]]:
    return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in specs]


def _default_spec(table: RoutingTable, version: str | None) -> DeploymentSpec:
    if version:
        return table.choose(pin=version)
    routes = sorted(table.routes, key=lambda r: (r.role != "primary", -r.weight))
    if not routes:
        raise RoutingError(f'endpoint "{table.endpoint}" has no ready deployment')
    return routes[0].spec


def v2_model_metadata(name: str, version: str | None, headers: Headers) -> Reply:
    try:
        table, _ = authorized_table(name, headers)
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
        return Reply(*error_reply(exc, "v2"))
    return Reply(200, orjson.dumps(body))


def v2_model_ready(name: str, version: str | None, headers: Headers) -> Reply:
    try:
        table, _ = authorized_table(name, headers)
        spec = _default_spec(table, version)
    except Exception as exc:  # noqa: BLE001
        return Reply(*error_reply(exc, "v2"))
    return Reply(200, orjson.dumps({"name": name, "version": str(spec.version), "ready": True}))


def v2_server_metadata() -> Reply:
    return Reply(200, orjson.dumps({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": V2_EXTENSIONS}))


def v2_live() -> Reply:
    return Reply(200, orjson.dumps({"live": True}))


ReadinessProbe = Callable[[], tuple[bool, dict[str, dict[str, Any]]]]
# THE readiness answer (config.health.readiness: the database, Redis, the flusher, the
# worker pool) belongs to the project's wiring, above this app: config/apps.py installs it
# here at Django's start-up, so this module imports nothing upward.
_readiness: tuple[ReadinessProbe, float] | None = None


def readiness_probe_install(probe: ReadinessProbe, *, retry_after_s: float) -> None:
    global _readiness
    _readiness = (probe, retry_after_s)


def v2_ready() -> Reply:
    """The same answer as /api/v1/health/ready (config.health.readiness), in the V2 shape."""
    if _readiness is None:
        return Reply(*error_reply(EdgeError(503, "not_ready", "not ready (Django has not started)"), "v2"))
    probe, retry_after_s = _readiness
    ok, checks = probe()
    if not ok:
        failed = ", ".join(f"{name}: {c.get('error', 'failed')}" for name, c in checks.items() if not c["ok"])
        refusal = EdgeError(503, "not_ready", f"not ready ({failed})")
        refusal.retry_after = retry_after_s
        return Reply(*error_reply(refusal, "v2"))
    return Reply(200, orjson.dumps({"ready": True}))


__all__ = [
    "EdgeError",
    "InputError",
    "Reply",
    "SimplePredict",
    "V2Infer",
    "v2_live",
    "v2_model_metadata",
    "v2_model_ready",
    "v2_ready",
    "v2_server_metadata",
]
