"""Running a compiled pipeline for one request: model calls, lookups, bandit decisions,
per-step timing, the trace and the request id. Called by the edge (inference/edge.py)
for a route whose spec has placement "pipeline"; no ORM here once the table is built
(the embedded default's feature lookups excepted: they read the database).

Model steps run on the in-process transport by default: one ONNX Runtime session and
batcher per model version and process (key "d-<version id>" in the process's one
ModelRepository, under its memory budget, shared by every pipeline that uses the version),
so a pipeline's model call joins the same dynamic batches as any other. On a route of
placement "worker_pool" (or a step that names it) they run on the inference workers
through inference.pool's client, the same key on the pool. An ensemble submits every
member before it waits for any: they run in parallel.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from inference.pipelines import features, step_metrics
from inference.pipelines.graph import CompiledPipeline, FeatureLookup, ModelRef, Router, Step
from inference.pool import worker_pool_transport
from inference.runtime.errors import DeadlineExceeded
from inference.telemetry.recorder import record_inputs
from inference.transport import DeploymentSpec, InferResult, in_process_transport, placement_register

PLACEMENT = "pipeline"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Compiled graphs by their route's deployment id (-pipeline version id), filled when the
# routing table is built (inference.pipelines.serving.route_specs).
GRAPHS: dict[int, CompiledPipeline] = {}


def request_id_for(header: str | None) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


IN_PROCESS, WORKER_POOL = "in_process", "worker_pool"
# The endpoint a worker-pool step's spec names: the key d-<version id> is shared by every
# pipeline and endpoint using the version, so one name for all (errors add the endpoint).
POOL_STEPS = "pipeline model steps"
_SPECS: dict[tuple[int, str, str, str], DeploymentSpec] = {}


def model_spec(ref: ModelRef, placement: str = IN_PROCESS, device: str = "cpu") -> DeploymentSpec:
    """The transport's spec of a model step's version (built once per version, placement
    and device, and process). In process: the key d-<version id> in this process's
    ModelRepository; on the worker pool: the same key in the pool's queues and assignments."""
    key = (ref.version_id, ref.artifact_sha256, placement, device)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = _model_spec(ref, placement, device)
    return spec


def _model_spec(ref: ModelRef, placement: str, device: str) -> DeploymentSpec:
    return DeploymentSpec(
        deployment_id=-ref.version_id,
        endpoint=POOL_STEPS if placement == WORKER_POOL else "",
        model=ref.model,
        version=ref.version,
        role="pipeline",
        weight=0,
        artifact_sha256=ref.artifact_sha256,
        artifact_path=ref.artifact_path,
        signature=ref.signature.to_dict(),
        device=device if placement == WORKER_POOL else "cpu",
        placement=placement,
        max_batch_size=32,
        max_queue_delay_ms=0.0,
    )


def step_specs(graph: CompiledPipeline, placement: str = IN_PROCESS, device: str = "cpu") -> list[DeploymentSpec]:
    """Every model step's spec on a route of this placement and device (a step's own
    placement wins over the route's)."""
    return [model_spec(ref, ref.placement or placement, device) for ref in graph.models()]


def load_models(
    graph: CompiledPipeline, placement: str = IN_PROCESS, device: str = "cpu", *, assign: bool = True
) -> None:
    """Load and warm every in-process model step's session in this process (at save and at
    start); with `assign`, assign every worker-pool step to the inference workers of `device`
    (they load and warm it; the pool reconciler keeps the assignment, inference/reconcile.py)."""
    transport = in_process_transport()
    for spec in step_specs(graph, placement, device):
        if spec.placement == WORKER_POOL:
            if assign:
                worker_pool_transport().ensure_loaded(spec)
        elif transport.served(spec) is None:
            transport.load(spec)


_pool_threads: ThreadPoolExecutor | None = None
_pool_threads_lock = threading.Lock()


def _pool_executor() -> ThreadPoolExecutor:
    """Threads that wait on worker-pool replies for an ensemble's members (outside an event
    loop), so the members' round trips overlap."""
    global _pool_threads
    if _pool_threads is None:
        with _pool_threads_lock:
            if _pool_threads is None:
                _pool_threads = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pipeline-pool")
    return _pool_threads


# ------------------------------------------------------------------ one request


class Run:
    """The runner a CompiledPipeline calls back (graph.Runner)."""

    def __init__(
        self,
        graph: CompiledPipeline,
        *,
        timeout_s: float,
        request_id: str,
        trace: bool,
        endpoint: str = "",
        placement: str = IN_PROCESS,
        device: str = "cpu",
    ) -> None:
        self.graph = graph
        self.placement = placement  # the route's: where model steps without their own run
        self.device = device
        self.endpoint = endpoint
        self.deadline = time.monotonic() + timeout_s
        self.timeout_s = timeout_s
        self.request_id = request_id
        self.tracing = trace
        self.trace: list[dict[str, Any]] = []
        self.decisions: dict[str, dict[str, Any]] = {}
        self.transport = in_process_transport()
        self.label = f"{graph.name}:{graph.version}"
        self.prefix = ""  # a sub-pipeline's steps are traced as "<router>/<arm>/<step>"

    def child(self, graph: CompiledPipeline, *, prefix: str) -> Run:
        """The runner of a pipeline that is an arm: same deadline, request id and trace."""
        child = _run(graph, self.endpoint, self.placement, self.device, self.timeout_s, self.request_id, self.tracing)
        child.deadline, child.trace, child.decisions = self.deadline, self.trace, self.decisions
        child.prefix = f"{prefix}/"
        return child

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f'pipeline "{self.label}": past the deadline of {self.timeout_s * 1000:.0f} ms')
        return left

    def _pool_spec(self, ref: ModelRef) -> DeploymentSpec | None:
        """The worker-pool spec when this step runs on the pool, else None (in process)."""
        if (ref.placement or self.placement) != WORKER_POOL:
            return None
        return model_spec(ref, WORKER_POOL, self.device)

    def _pool_call(
        self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], timeout_s: float
    ) -> dict[str, np.ndarray]:
        # The pool's errors as they are: 503 + Retry-After (no worker, Redis unreachable),
        # 504 (no answer by the deadline), the worker's own 4xx/5xx.
        return worker_pool_transport().infer(spec, inputs, timeout_s=timeout_s).outputs

    async def _pool_call_async(
        self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], timeout_s: float
    ) -> dict[str, np.ndarray]:
        return (await worker_pool_transport().infer_async(spec, inputs, timeout_s=timeout_s)).outputs

    def submit(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> Any:
        pool = self._pool_spec(ref)
        if pool is not None:
            try:  # on an event loop (run_async): a task on the loop, no thread held
                loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            timeout_s = self.remaining()
            if loop is not None:
                future: Any = loop.create_task(self._pool_call_async(pool, inputs, timeout_s))
            else:
                future = _pool_executor().submit(self._pool_call, pool, inputs, timeout_s)
            record_inputs(self.endpoint, ref.label, inputs)
            return future
        spec = model_spec(ref)
        served = self.transport.acquire(spec, self.remaining())
        future = served.submit(inputs, timeout_s=self.remaining())
        # What the version really received (after lookups and transforms), for its drift
        # on this endpoint: sampled at the endpoint's drift rate, kept by reference.
        record_inputs(self.endpoint, ref.label, inputs)
        return future

    def predict(self, ref: ModelRef, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pool = self._pool_spec(ref)
        if pool is not None:
            outputs = self._pool_call(pool, inputs, self.remaining())
            record_inputs(self.endpoint, ref.label, inputs)
            return outputs
        spec = model_spec(ref)
        served = self.transport.acquire(spec, self.remaining())
        outputs = served.predict_timed(inputs, timeout_s=self.remaining())[0]
        record_inputs(self.endpoint, ref.label, inputs)  # as in submit()
        return outputs  # type: ignore[no-any-return]

    def result(self, ref: ModelRef, future: Any) -> dict[str, np.ndarray]:
        try:
            return future.result(timeout=self.remaining() + 0.05)  # type: ignore[no-any-return]
        except FutureTimeout:
            raise DeadlineExceeded(f'pipeline "{self.label}": {ref.label} did not answer in time') from None

    async def result_async(self, ref: ModelRef, future: Any) -> dict[str, np.ndarray]:
        # The batcher fails the future itself at the deadline (queued or running), as for
        # a direct route: no timer of our own (asyncio.wait_for costs a task per call). A
        # worker-pool call is a task bounded by its own deadline.
        if isinstance(future, asyncio.Future):
            return await future  # type: ignore[no-any-return]
        return await asyncio.wrap_future(future)  # type: ignore[no-any-return]

    def features(self, step: FeatureLookup, keys: np.ndarray) -> np.ndarray:
        self.remaining()
        return features.fetch(step, keys)

    def decide(self, step: Router) -> str:
        from inference.bandits import decide  # the bandit library (another package), on first use

        decision = decide(
            f"pipeline:{self.graph.pipeline_id}:{step.name}",
            list(step.arms),
            step.config,
            self.request_id,
            endpoint=self.endpoint,  # feedback for this request is taken through this endpoint only
        )
        self.decisions[step.name] = {"arm": decision.arm, "propensity": float(decision.propensity)}
        return str(decision.arm)

    def step_done(self, step: Step, seconds: float, out: Mapping[str, np.ndarray] | None, exc: Any) -> None:
        step_metrics.count(self.label, step.name, step.kind, seconds, exc is None)
        if self.tracing:
            entry: dict[str, Any] = {
                "step": self.prefix + step.name,
                "kind": step.kind,
                "ms": round(seconds * 1000.0, 3),
            }
            if exc is None and out is not None:
                entry["outputs"] = {k: jsonable(v) for k, v in out.items()}
            else:
                entry["error"] = str(getattr(exc, "message", exc))[:500]
            if step.name in self.decisions:
                entry["decision"] = self.decisions[step.name]
            self.trace.append(entry)


def jsonable(arr: np.ndarray) -> Any:
    if arr.dtype.kind in "OSU":
        return [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
    return arr


def infer(
    spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float, request_id: str, trace: bool = False
) -> InferResult:
    """Run the pipeline a route serves; `extra` carries request_id, decisions and trace."""
    graph = GRAPHS.get(spec.deployment_id)
    if graph is None:
        from inference.runtime.errors import ModelNotReady  # only on this rare miss

        raise ModelNotReady(f"pipeline {spec.label} is not loaded in this process")
    started = time.perf_counter()
    run = _run(graph, spec.endpoint, spec.step_placement, spec.device, timeout_s, request_id, trace)
    outputs = graph.run(run, inputs)
    return _result(run, outputs, started, trace)


def _run(
    graph: CompiledPipeline, endpoint: str, placement: str, device: str, timeout_s: float, request_id: str, trace: bool
) -> Run:
    """A runner for `graph` on `endpoint`, its model steps placed as the route says."""
    return Run(
        graph,
        timeout_s=timeout_s,
        request_id=request_id,
        trace=trace,
        endpoint=endpoint,
        placement=placement,
        device=device,
    )


def _result(run: Run, outputs: dict[str, np.ndarray], started: float, trace: bool) -> InferResult:
    extra: dict[str, Any] = {"request_id": run.request_id}
    if run.decisions:
        extra["decisions"] = run.decisions
    if trace:
        extra["trace"] = run.trace
    return InferResult(outputs=outputs, model_ms=(time.perf_counter() - started) * 1000.0, extra=extra)


async def infer_async(
    spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float, request_id: str, trace: bool = False
) -> InferResult:
    """`infer` on an event loop: model calls awaited; a graph with a lookup, a switch or a
    router (`loop_safe` says why) runs in the loop's thread pool instead."""
    graph = GRAPHS.get(spec.deployment_id)
    if graph is None or not graph.loop_safe:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            None, lambda: infer(spec, inputs, timeout_s=timeout_s, request_id=request_id, trace=trace)
        )
    started = time.perf_counter()
    run = _run(graph, spec.endpoint, spec.step_placement, spec.device, timeout_s, request_id, trace)
    outputs = await graph.run_async(run, inputs)
    return _result(run, outputs, started, trace)


class PipelineTransport:
    """The Transport interface for a pipeline route (used when a pipeline is a shadow)."""

    def ensure_loaded(self, spec: DeploymentSpec) -> None:
        load_models(GRAPHS[spec.deployment_id], spec.step_placement, spec.device)

    def ready(self, spec: DeploymentSpec) -> bool:
        return spec.deployment_id in GRAPHS

    def infer(self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float) -> InferResult:
        return infer(spec, inputs, timeout_s=timeout_s, request_id=request_id_for(None))

    async def infer_async(
        self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float
    ) -> InferResult:
        return await infer_async(spec, inputs, timeout_s=timeout_s, request_id=request_id_for(None))

    def unload(self, spec: DeploymentSpec) -> None:
        GRAPHS.pop(spec.deployment_id, None)


PIPELINE_TRANSPORT = PipelineTransport()
placement_register(PLACEMENT, PIPELINE_TRANSPORT)
