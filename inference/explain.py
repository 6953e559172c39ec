"""Explanations: POST /api/v1/endpoints/{name}/explain and /v2/models/{name}[/versions/{v}]/explain.

Per-feature attributions of a tabular model's prediction (KernelSHAP,
`inference.runtime.explain`) against a background drawn from the answering version's
stored reference statistics (`ModelVersion.reference_stats`, docs/monitoring.md). The
request is authenticated, routed and pinned exactly like a prediction (inference.edge),
decoded by the same codec (and the simple API's pre-processing), and the model rows are
run through the deployment's own transport in chunks: the in-process batcher and ONNX
Runtime session, or the worker pool. See docs/explain.md for the limits and the cost.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson

from common.errors import ModelhubError
from common.http import PredictRequest, Reply, Shape, error_reply
from inference import edge
from inference.runtime import codec
from inference.runtime.errors import InputError
from inference.runtime.explain import ExplainBudgetError, kernel_shap
from inference.runtime.signature import Signature, TensorSpec, numpy_dtype
from inference.transport import DeploymentSpec, transport_for

MAX_INSTANCES = 16
BACKGROUND_ROWS = 50  # default background size
MAX_BACKGROUND_ROWS = 200
MAX_EVALUATIONS = 8192  # default model rows per request (all instances together)
MAX_EVALUATIONS_CAP = 65536
CHUNK_ROWS = 512  # model rows per call through the transport
MAX_FEATURES = 256
_FLOATS = frozenset({"FP16", "FP32", "FP64"})


class NotExplainable(ModelhubError):
    status = 422
    code = "not_explainable"


class NoBackground(ModelhubError):
    status = 422
    code = "no_background"


def _int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f'parameter "{name}" must be an integer from {low} to {high}')
    return value


def tabular_input(signature: Signature) -> TensorSpec:
    """The one 2-D float input of fixed width, any number of rows; else NotExplainable."""
    if len(signature.inputs) != 1:
        names = ", ".join(signature.input_names)
        raise NotExplainable(f"explanations need a model with one tabular input; this one takes {names}")
    spec = signature.inputs[0]
    width = spec.shape[1] if len(spec.shape) == 2 else -1
    if spec.datatype not in _FLOATS or len(spec.shape) != 2 or spec.shape[0] not in (-1, 0) or width < 1:
        raise NotExplainable(
            f'explanations need a tabular input (floats shaped [-1, features]); input "{spec.name}" '
            f"is {spec.describe()}"
        )
    if width > MAX_FEATURES:
        raise NotExplainable(f'input "{spec.name}" has {width} features; at most {MAX_FEATURES} can be explained')
    return spec


def explained_output(signature: Signature, name: str | None) -> TensorSpec:
    """The output named, or the first float output of rank 1 or 2."""
    candidates = [o for o in signature.outputs if o.datatype in _FLOATS and len(o.shape) in (1, 2)]
    if name:
        chosen = next((o for o in signature.outputs if o.name == name), None)
        if chosen is None:
            raise InputError(f'unknown output "{name}"; the model returns ' + ", ".join(signature.output_names))
        if chosen not in candidates:
            raise NotExplainable(f'output "{name}" is {chosen.describe()}: only float outputs of rank 1 or 2')
        return chosen
    if not candidates:
        raise NotExplainable("the model has no float output of rank 1 or 2 to explain")
    return candidates[0]


def feature_keys(tensor: str, width: int) -> list[str]:
    """How monitoring names the columns of a tensor (monitoring.stats.tensor_features)."""
    return [tensor] if width == 1 else [f"{tensor}[{j}]" for j in range(width)]


def background_from(reference: Mapping[str, Any] | None, keys: list[str], rows: int, seed: int) -> np.ndarray:
    """`rows` background rows from a version's reference statistics.

    The reference keeps a sample of each feature (monitoring.stats.reference_statistics):
    the whole column while the reference has at most REFERENCE_SAMPLE_CAP rows (then
    the same index is the same reference row in every feature, and rows drawn by index
    keep the features' joint distribution), a random subsample above that (then rows
    drawn by index pair the features independently, as interventional SHAP assumes).
    """
    features = (reference or {}).get("features") or {}
    missing = [k for k in keys if not (features.get(k) or {}).get("sample")]
    if not reference or not features:
        raise NoBackground("no background: this version has no reference statistics yet")
    if missing:
        raise NoBackground(
            f"no background: the reference statistics have no sample of feature {missing[0]!r} "
            f"(they describe {', '.join(sorted(features)[:8])})"
        )
    samples = [np.asarray(features[k]["sample"], dtype=float) for k in keys]
    size = min(len(s) for s in samples)
    rng = np.random.default_rng(seed)
    index = np.arange(size) if size <= rows else rng.choice(size, size=rows, replace=False)
    return np.column_stack([s[:size][index] for s in samples])


def _reference_of(spec: DeploymentSpec) -> Mapping[str, Any] | None:
    # The ORM needs Django's app registry; the fronts import the data plane (and so this
    # module) before Django has set up: imported when an explanation runs.
    from registry.models import ModelVersion

    row = (
        ModelVersion.objects.filter(model__name=spec.model, version=spec.version)
        .values_list("reference_stats", flat=True)
        .first()
    )
    return row or None


def explain(
    spec: DeploymentSpec,
    signature: Signature,
    inputs: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    *,
    timeout_s: float,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Explain the rows of `inputs` (already checked by the codec) with the deployment `spec`."""
    tensor = tabular_input(signature)
    output = explained_output(signature, params.get("output") if isinstance(params.get("output"), str) else None)
    matrix = np.asarray(inputs[tensor.name], dtype=float)
    n, width = matrix.shape
    if n > MAX_INSTANCES:
        raise InputError(f"at most {MAX_INSTANCES} instances per explanation, got {n}")
    background_rows = _int_param(params, "background_size", BACKGROUND_ROWS, 1, MAX_BACKGROUND_ROWS)
    budget = _int_param(params, "max_evaluations", MAX_EVALUATIONS, 1, MAX_EVALUATIONS_CAP)
    seed = _int_param(params, "seed", 0, 0, 2**31 - 1)
    class_index = params.get("class_index")
    if class_index is not None:
        class_index = _int_param(params, "class_index", 0, 0, 1_000_000)
    keys = feature_keys(tensor.name, width)
    background = background_from(_reference_of(spec), keys, background_rows, seed)
    dtype = numpy_dtype(tensor.datatype)
    transport = transport_for(spec)
    calls = 0
    evaluated = 0
    model_ms = 0.0

    def evaluate(rows: np.ndarray) -> np.ndarray:
        nonlocal calls, evaluated, model_ms
        parts = []
        for start in range(0, rows.shape[0], CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS].astype(dtype)
            began = time.perf_counter()
            result = transport.infer(spec, {tensor.name: chunk}, timeout_s=timeout_s)
            model_ms += (time.perf_counter() - began) * 1000.0
            calls += 1
            evaluated += chunk.shape[0]
            value = np.asarray(result.outputs[output.name], dtype=float)
            parts.append(value.reshape(value.shape[0], -1))
        return np.concatenate(parts)

    try:
        explanations = kernel_shap(matrix, background, evaluate, max_evaluations=max(budget // n, 1), seed=seed)
    except ExplainBudgetError as exc:
        raise InputError(f"max_evaluations {budget} is too small for {n} instance(s): {exc}") from None
    labels = names if names is not None and len(names) == width else keys
    answers = []
    for x, e in zip(matrix, explanations, strict=True):
        k = e.phi.shape[1]
        column = int(np.argmax(e.prediction)) if class_index is None else class_index
        if column >= k:
            raise InputError(f'class_index {column}: output "{output.name}" has {k} column(s)')
        answers.append(
            {
                "class_index": column if output.rank == 2 else None,
                "prediction": float(e.prediction[column]),
                "base_value": float(e.base_value[column]),
                "attributions": {label: float(v) for label, v in zip(labels, e.phi[:, column], strict=True)},
                "feature_values": {label: float(v) for label, v in zip(labels, x, strict=True)},
            }
        )
    return {
        "model": spec.model,
        "version": spec.version,
        "method": "kernel_shap" if not explanations[0].exact else "kernel_shap_exact",
        "output": output.name,
        "background_rows": int(background.shape[0]),
        "model_evaluations": evaluated,
        "model_calls": calls,
        "model_ms": round(model_ms, 3),
        "explanations": answers,
    }


# ------------------------------------------------------------------ the two routes


def _authorized(name: str, request: PredictRequest, pin: str | None) -> tuple[Any, DeploymentSpec]:
    table, _ = edge.authorized_table(name, request.headers)
    return table, edge.deployment_choose(table, request.headers, pin)


def _reply(body: dict[str, Any], spec: DeploymentSpec) -> Reply:
    headers = [("X-Model-Version", str(spec.version)), ("X-Model-Name", spec.model)]
    return Reply(200, orjson.dumps(body), headers)


def _refuse(exc: BaseException, shape: Shape) -> Reply:
    return Reply(*error_reply(exc, shape))


def simple_explain(name: str, request: PredictRequest) -> Reply:
    """The simple API's body ({"instances"} or {"inputs"}, named features through the
    endpoint's pre-processing) plus an optional "parameters" object."""
    try:
        pins = parse_qs(request.query).get("version") if request.query else None
        table, spec = _authorized(name, request, pins[0] if pins else None)
        signature = table.signature_for(spec)
        parsed = codec.parse_json(request.body)
        if not isinstance(parsed, dict):
            raise InputError('request body must be a JSON object with "instances" or "inputs"')
        params = parsed.pop("parameters", None) or {}
        if not isinstance(params, dict):
            raise InputError('"parameters" must be an object')
        tensor = tabular_input(signature)
        pipeline = table.pipeline_for(spec)
        if pipeline is not None:
            parsed = pipeline.prepare_body(parsed)
        inputs = codec.decode_simple(parsed, signature, max_batch_size=table.max_rows)
        if pipeline is not None:
            inputs = pipeline.prepare_inputs(inputs)
        names = None
        if pipeline is not None and pipeline.feature_names and pipeline.feature_input in ("", tensor.name):
            names = list(pipeline.feature_names)
        body = explain(spec, signature, inputs, params, timeout_s=table.timeout_s, names=names)
        return _reply({"endpoint": name, **body}, spec)
    except Exception as exc:  # noqa: BLE001 - every refusal is JSON
        return _refuse(exc, "simple")


def v2_explain(name: str, version: str | None, request: PredictRequest) -> Reply:
    """A V2 infer request body (JSON or binary tensors); parameters in its "parameters"."""
    try:
        table, spec = _authorized(name, request, version)
        signature = table.signature_for(spec)
        tabular_input(signature)
        header_length = codec.parse_header_length(request.headers.get("inference-header-content-length"))
        inputs, info = codec.decode_v2_request(
            request.body, request.headers.get("content-type"), header_length, signature, max_batch_size=table.max_rows
        )
        timeout_s = min(info.timeout_s or table.timeout_s, table.timeout_s)
        body = explain(spec, signature, inputs, dict(info.parameters), timeout_s=timeout_s)
        return _reply({"model_name": name, "model_version": str(spec.version), "id": info.id, **body}, spec)
    except Exception as exc:  # noqa: BLE001 - every refusal is JSON
        return _refuse(exc, "v2")


def global_importance(
    spec: DeploymentSpec, signature: Signature, rows: np.ndarray, *, timeout_s: float, seed: int = 0
) -> dict[str, Any]:
    """Mean |attribution| per feature over `rows` (sampled traffic): each row explained for
    the column it predicts, MAX_INSTANCES rows per KernelSHAP call, a smaller background
    (30 rows) and 2,048 model rows per instance so that 64 rows cost about 64 batched calls."""
    tensor = tabular_input(signature)
    totals: dict[str, float] = {}
    calls = evaluations = 0
    method = ""
    for start in range(0, rows.shape[0], MAX_INSTANCES):
        chunk = rows[start : start + MAX_INSTANCES]
        params = {"background_size": 30, "max_evaluations": 2048 * chunk.shape[0], "seed": seed}
        body = explain(spec, signature, {tensor.name: chunk}, params, timeout_s=timeout_s)
        calls += body["model_calls"]
        evaluations += body["model_evaluations"]
        method = body["method"]
        for answer in body["explanations"]:
            for feature, value in answer["attributions"].items():
                totals[feature] = totals.get(feature, 0.0) + abs(value)
    n = max(int(rows.shape[0]), 1)
    return {
        "model": spec.model,
        "version": spec.version,
        "method": method,
        "rows": int(rows.shape[0]),
        "model_calls": calls,
        "model_evaluations": evaluations,
        "importance": {feature: total / n for feature, total in totals.items()},
    }
