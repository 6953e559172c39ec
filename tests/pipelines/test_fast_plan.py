"""The fast plan of a graph of transform and model steps (inference.pipelines.executor.Plan,
built once per compiled graph): the same outputs, per-step metrics, drift samples (what the
model received), trace and errors as the general executor, blocking and on the event loop;
and the prediction fronts really take it. Real ONNX Runtime sessions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import executor, serving, step_metrics
from inference.pipelines import services as pipeline_services
from inference.runtime.errors import DeadlineExceeded, ModelNotReady
from inference.telemetry.recorder import Recorder
from inference.transport import in_process_transport
from tests.inference.asgi_client import asgi_call
from tests.pipelines.conftest import fraud_bytes, fraud_spec

pytestmark = pytest.mark.django_db(transaction=True)

MEAN, STD = [1.0, -1.0, 0.5, 2.0], [2.0, 4.0, 1.0, 0.5]
SPEC: dict[str, Any] = {
    "inputs": [{"name": "raw", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": ["p", "label", "decision"],
    "steps": [
        # Out of order on purpose: the graph orders them by the tensors they read.
        {
            "name": "rule",
            "kind": "transform",
            "rules": ["score = p[1]", "if score > 0.5 then decision = 'review' else decision = 'approve'"],
        },
        {
            "name": "score",
            "kind": "model",
            "model": "fraud",
            "version": 1,
            "inputs": {"x": "features"},
            "outputs": {"probabilities": "p", "label": "label"},
        },
        {
            "name": "prep",
            "kind": "transform",
            "ops": [
                {"op": "stack", "fields": ["raw"], "output": "features"},
                {"op": "scale", "field": "features", "mean": MEAN, "std": STD},
            ],
        },
    ],
}
RAW = np.array([[0.1, -0.2, 0.3, 0.4], [3.0, 0.5, -0.5, 2.0], [-1.0, 2.0, 0.0, 1.5]], dtype=np.float32)
ENDPOINT = "plan-check"


@pytest.fixture(autouse=True)
def orm_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the ASGI front's lifespan start-up does in a server (the test skips lifespan)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """A private recorder that keeps every model step's inputs (drift rate 1)."""
    private = Recorder()
    private.default_drift_rate = 1.0
    monkeypatch.setattr("inference.telemetry.recorder.recorder", private)
    return private


@pytest.fixture
def graph(engineer: Any, fraud_versions: Any) -> Any:
    version = pipeline_services.pipeline_create(name="plan", spec=SPEC, user=engineer)
    compiled = pipeline_services.compile_version(version)
    executor.load_models(compiled)
    serving.spec_for(compiled, version.pk, endpoint=ENDPOINT, role="primary", weight=100)
    return compiled


def model_x() -> np.ndarray:
    return ((RAW - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)).astype(np.float32)


def expected() -> dict[str, np.ndarray]:
    p, label = ort.InferenceSession(fraud_bytes(11)).run(["probabilities", "label"], {"x": model_x()})
    return {"p": p, "label": label, "decision": np.where(p[:, 1] > 0.5, "review", "approve").astype(object)}


def general(graph: Any, *, on_loop: bool, timeout_s: float = 5.0) -> Any:
    """The general executor (a Run walking the graph), as infer/infer_async ran every graph."""
    run = executor._run(graph, ENDPOINT, executor.IN_PROCESS, "cpu", timeout_s, "req-1", True)
    started = time.perf_counter()
    outputs = asyncio.run(graph.run_async(run, {"raw": RAW})) if on_loop else graph.run(run, {"raw": RAW})
    return executor._result(run, outputs, started, True)


def planned(graph: Any, *, on_loop: bool, timeout_s: float = 5.0) -> Any:
    plan = executor.Plan.build(graph)
    assert plan is not None
    if on_loop:
        return asyncio.run(plan.run_async(ENDPOINT, {"raw": RAW}, timeout_s=timeout_s, request_id="req-1", trace=True))
    return plan.run(ENDPOINT, {"raw": RAW}, timeout_s=timeout_s, request_id="req-1", trace=True)


def counted(before: dict[Any, Any]) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(calls, errors) per series since `before` (a step_metrics.step_stats() copy)."""
    out = {}
    for series, stats in step_metrics.step_stats().items():
        delta = stats.minus(before.get(series))
        if delta.calls:
            out[series] = (delta.calls, delta.errors)
    return out


def observed(graph: Any, recorder: Recorder, run: Any) -> tuple[Any, Any, Any]:
    """A run's result, its step counts and the drift samples it left."""
    recorder.drain_step_inputs()
    before = step_metrics.step_stats()
    result = run()
    samples = {key[1:]: stats.inputs for key, stats in recorder.drain_step_inputs().items()}
    return result, counted(before), samples


def comparable_trace(trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trace without its timings, outputs as lists."""
    return [
        {
            **{k: v for k, v in entry.items() if k not in ("ms", "outputs")},
            "outputs": {k: np.asarray(v).tolist() for k, v in entry.get("outputs", {}).items()},
        }
        for entry in trace
    ]


@pytest.mark.parametrize("on_loop", [False, True], ids=["blocking", "event-loop"])
def test_the_plan_answers_as_the_general_executor(graph: Any, recorder: Recorder, on_loop: bool) -> None:
    plan = executor.Plan.build(graph)
    assert plan is not None and [step.name for step, *_ in plan.steps] == ["prep", "score", "rule"]
    mine, mine_counts, mine_samples = observed(graph, recorder, lambda: planned(graph, on_loop=on_loop))
    theirs, their_counts, their_samples = observed(graph, recorder, lambda: general(graph, on_loop=on_loop))

    want = expected()
    for result in (mine, theirs):
        assert sorted(result.outputs) == ["decision", "label", "p"]
        np.testing.assert_allclose(result.outputs["p"], want["p"], rtol=1e-6)
        np.testing.assert_array_equal(result.outputs["label"], want["label"])
        assert result.outputs["decision"].tolist() == want["decision"].tolist()
        assert result.extra["request_id"] == "req-1"
    for name in mine.outputs:
        np.testing.assert_array_equal(mine.outputs[name], theirs.outputs[name])
    assert set(mine.extra) == set(theirs.extra) == {"request_id", "trace"}
    assert comparable_trace(mine.extra["trace"]) == comparable_trace(theirs.extra["trace"])
    assert [e["step"] for e in mine.extra["trace"]] == ["prep", "score", "rule"]
    assert all(e["ms"] >= 0 for e in mine.extra["trace"])
    # One call per step, under the same series: (pipeline label, step, kind).
    assert (
        mine_counts
        == their_counts
        == {
            ("plan:1", "prep", "transform"): (1, 0),
            ("plan:1", "score", "model"): (1, 0),
            ("plan:1", "rule", "transform"): (1, 0),
        }
    )
    # Drift: the version got its own sample of what it received (after the scaling).
    assert list(mine_samples) == list(their_samples) == [(ENDPOINT, "fraud:1", "")]
    for samples in (mine_samples, their_samples):
        (kept,) = samples[(ENDPOINT, "fraud:1", "")]
        np.testing.assert_allclose(kept["x"], model_x(), rtol=1e-6)


@pytest.mark.parametrize("on_loop", [False, True], ids=["blocking", "event-loop"])
def test_past_the_deadline_both_fail_the_model_step_alike(graph: Any, recorder: Recorder, on_loop: bool) -> None:
    errors = []
    counts = []
    for run in (planned, general):
        before = step_metrics.step_stats()
        with pytest.raises(DeadlineExceeded) as raised:
            run(graph, on_loop=on_loop, timeout_s=0.0)
        errors.append(raised.value.message)
        counts.append(counted(before))
    assert errors[0] == errors[1] == 'pipeline "plan:1": past the deadline of 0 ms'
    assert counts[0] == counts[1] == {("plan:1", "prep", "transform"): (1, 0), ("plan:1", "score", "model"): (1, 1)}
    assert recorder.drain_step_inputs() == {}  # no model ran


@pytest.mark.parametrize("on_loop", [False, True], ids=["blocking", "event-loop"])
def test_a_model_calls_error_is_the_steps_error(graph: Any, recorder: Recorder, on_loop: bool) -> None:
    """An error raised by the model call itself (here: its batcher is closed) reaches the
    step loop: counted on the step, raised to the caller, as the general path does."""
    spec = executor.model_spec(graph.steps["score"].ref)
    served = in_process_transport().served(spec)
    assert served is not None and served.batcher is not None
    served.batcher.close()
    try:
        counts = []
        for run in (planned, general):
            before = step_metrics.step_stats()
            with pytest.raises(ModelNotReady):
                run(graph, on_loop=on_loop)
            counts.append(counted(before))
        assert counts[0] == counts[1] == {("plan:1", "prep", "transform"): (1, 0), ("plan:1", "score", "model"): (1, 1)}
    finally:
        in_process_transport().unload_key(spec.key)


def test_which_graphs_have_a_plan(graph: Any, engineer: Any, feature_set: str) -> None:
    assert executor.PLANS[-graph_version_id(graph)] is not None
    fraud = pipeline_services.pipeline_create(name="fraud", spec=fraud_spec(feature_set, 0.5), user=engineer)
    assert executor.Plan.build(pipeline_services.compile_version(fraud)) is None  # a lookup, an ensemble
    plan = executor.Plan.build(graph)
    assert plan is not None and plan.follows_route
    route = serving.spec_for(graph, graph_version_id(graph), endpoint="x", role="primary", weight=100)
    assert plan.serves(route)
    pooled = serving.spec_for(
        graph, graph_version_id(graph), endpoint="x", role="primary", weight=100, placement=executor.WORKER_POOL
    )
    assert not plan.serves(pooled)  # its model step runs where the route says: on the pool
    steps = [{**s, "placement": "worker_pool"} if s["kind"] == "model" else s for s in SPEC["steps"]]
    on_pool = {**SPEC, "steps": steps}
    version = pipeline_services.pipeline_create(name="plan-pool", spec=on_pool, user=engineer)
    assert executor.Plan.build(pipeline_services.compile_version(version)) is None


def graph_version_id(graph: Any) -> int:
    from inference.pipelines.models import PipelineVersion

    return int(PipelineVersion.objects.get(pipeline__name=graph.name, version=graph.version).pk)


def test_the_fronts_answer_through_the_plan(
    client: Any, engineer: Any, graph: Any, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Django view (blocking) and the ASGI front (awaiting) serve a pipeline route of
    this graph through its plan: the general runner is never built."""
    endpoint = endpoints.endpoint_create(name="planned", user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": "plan", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )

    def no_general_runner(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the general executor ran")

    monkeypatch.setattr(executor, "_run", no_general_runner)
    body = orjson.dumps({"inputs": {"raw": RAW.tolist()}})
    want = expected()
    response = client.post(
        "/api/v1/endpoints/planned/predict?trace=1", body, content_type="application/json", HTTP_X_REQUEST_ID="view-1"
    )
    assert response.status_code == 200, response.content
    views = orjson.loads(response.content)
    status, headers, raw = asgi_call(
        "POST", "/api/v1/endpoints/planned/predict", body, [("content-type", "application/json")], query="trace=1"
    )
    assert status == 200, raw
    loop = orjson.loads(raw)
    assert views["request_id"] == "view-1" and response["X-Request-Id"] == "view-1"
    assert len(loop["request_id"]) == 32 and headers["x-request-id"] == loop["request_id"]
    for answer in (views, loop):
        assert answer["pipeline"] == "plan" and answer["version"] == 1
        np.testing.assert_allclose(answer["outputs"]["p"], want["p"], rtol=1e-5)
        assert answer["outputs"]["decision"] == want["decision"].tolist()
        assert [e["step"] for e in answer["trace"]] == ["prep", "score", "rule"]
    # V2 with the request's own id: the plan answers there too.
    v2 = orjson.dumps(
        {"id": "v2-1", "inputs": [{"name": "raw", "datatype": "FP32", "shape": [3, 4], "data": RAW.ravel().tolist()}]}
    )
    status, headers, raw = asgi_call("POST", "/v2/models/planned/infer", v2, [("content-type", "application/json")])
    assert status == 200, raw
    assert orjson.loads(raw)["id"] == "v2-1" and headers["x-request-id"] == "v2-1"


def test_new_request_ids_are_distinct_hex() -> None:
    ids = [executor.new_request_id() for _ in range(1000)]  # several refills of the buffer
    assert len(set(ids)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
