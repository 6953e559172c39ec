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
import os
import re
import threading
import time
from collections import deque
from collections.abc import Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from inference.pipelines import features, step_metrics
from inference.pipelines.graph import CompiledPipeline, FeatureLookup, Model, ModelRef, Router, Step, Transform, rows_of
from inference.pool import worker_pool_transport
from inference.runtime.errors import DeadlineExceeded
from inference.runtime.repository import ServedModel
from inference.spec import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_MS
from inference.telemetry.recorder import record_inputs
from inference.transport import DeploymentSpec, InferResult, in_process_transport, placement_register

PLACEMENT = "pipeline"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Compiled graphs by their route's deployment id (-pipeline version id), filled when the
# routing table is built (inference.pipelines.serving.spec_for, through `register`), and
# the fast plan of those that have one (`Plan`).
GRAPHS: dict[int, CompiledPipeline] = {}
PLANS: dict[int, Plan] = {}


def register(deployment_id: int, graph: CompiledPipeline) -> None:
    """Serve `graph` for routes of this deployment id in this process, with its fast plan
    when it has one (built here, once per compiled graph: the routing table's rebuild is
    the invalidation, as for the graph itself)."""
    if GRAPHS.get(deployment_id) is graph:
        return
    GRAPHS[deployment_id] = graph
    plan = Plan.build(graph)
    if plan is None:
        PLANS.pop(deployment_id, None)
    else:
        PLANS[deployment_id] = plan


def request_id_for(header: str | None) -> str:
    """The caller's X-Request-Id when it is a sane token, else a new one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return new_request_id()


_IDS: deque[str] = deque()
_IDS_PER_CALL = 256
os.register_at_fork(after_in_child=_IDS.clear)  # a forked worker draws its own


def new_request_id() -> str:
    """128 random bits as 32 hex digits (unguessable, like uuid4().hex), from one
    os.urandom call per 256 ids.

    Not os.urandom (uuid4) per request: that system call releases the GIL, and on the
    event loop it did so between one request's model submit and the next one's, so the
    model's batcher thread woke and took the queue one request at a time: a pipeline of
    one model step ran its batches at 1 row where the direct route ran 16 (bench/pipeline.py
    --overhead, ASGI c=16: 201 against 99 us/request; with this, 145). deque.popleft and
    extend are atomic, so threads need no lock (two refilling at once both add ids)."""
    try:
        return _IDS.popleft()
    except IndexError:
        digits = os.urandom(16 * _IDS_PER_CALL).hex()
        _IDS.extend(digits[i : i + 32] for i in range(32, len(digits), 32))
        return digits[:32]


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
        max_batch_size=DEFAULT_MAX_BATCH_SIZE,
        max_queue_delay_ms=DEFAULT_MAX_QUEUE_DELAY_MS,
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
            entry = trace_entry(self.prefix + step.name, step.kind, seconds, out, exc)
            if step.name in self.decisions:
                entry["decision"] = self.decisions[step.name]
            self.trace.append(entry)


def trace_entry(name: str, kind: str, seconds: float, out: Mapping[str, np.ndarray] | None, exc: Any) -> dict[str, Any]:
    """One step's line of a ?trace=1 answer: its outputs, or its error, and its time."""
    entry: dict[str, Any] = {"step": name, "kind": kind, "ms": round(seconds * 1000.0, 3)}
    if exc is None and out is not None:
        entry["outputs"] = {k: jsonable(v) for k, v in out.items()}
    else:
        entry["error"] = str(getattr(exc, "message", exc))[:500]
    return entry


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
    plan = PLANS.get(spec.deployment_id)
    if plan is not None and plan.serves(spec):
        return plan.run(spec.endpoint, inputs, timeout_s=timeout_s, request_id=request_id, trace=trace)
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
    plan = PLANS.get(spec.deployment_id)
    if plan is not None and plan.serves(spec):
        return await plan.run_async(spec.endpoint, inputs, timeout_s=timeout_s, request_id=request_id, trace=trace)
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


# ------------------------------------------------------------------ the fast plan

# What the plan's step loop asks its driver for: run this model on these inputs (its
# outputs are sent back) within this many seconds.
_ModelCall = tuple[ServedModel, dict[str, np.ndarray], float]


class Plan:
    """A graph of transform and model steps only, every model step in process, run on one
    request without the general runner: built once per compiled graph (`register`, when
    the routing table is built), not per request.

    Per request the general path builds a `Run` (a dozen attributes), resolves each model
    call's placement and spec, builds the step's call list and its output dict from the
    signature, and walks the graph through `run_step`; the plan has the steps, their
    model specs and their tensor name pairs ready, and a step loop shared by the blocking
    and the awaiting drivers. The same outputs, per-step metrics, drift samples (what each
    model received), trace and errors as the general path
    (tests/pipelines/test_fast_plan.py); one difference: a drift sample is kept once the
    model answered (the general path on the loop keeps it at submit, also for a call that
    then fails). Ensembles, lookups, switches, routers and worker-pool steps take the
    general path.
    """

    __slots__ = ("follows_route", "label", "outputs", "steps")

    def __init__(self, graph: CompiledPipeline, steps: list[tuple[Step, DeploymentSpec | None, str]]) -> None:
        self.label = f"{graph.name}:{graph.version}"
        self.steps = tuple(steps)  # (step, its model's spec or None for a transform, the model's label)
        self.outputs = tuple(spec.name for spec in graph.outputs)
        # A model step without a placement of its own runs where the route says: then the
        # plan serves in-process routes only.
        self.follows_route = any(isinstance(s, Model) and s.ref is not None and not s.ref.placement for s, *_ in steps)

    @classmethod
    def build(cls, graph: CompiledPipeline) -> Plan | None:
        steps: list[tuple[Step, DeploymentSpec | None, str]] = []
        for name in graph.order:
            step = graph.steps[name]
            if isinstance(step, Transform):
                steps.append((step, None, ""))
            elif isinstance(step, Model) and step.ref is not None and step.ref.placement != WORKER_POOL:
                steps.append((step, model_spec(step.ref), step.ref.label))
            else:
                return None
        return cls(graph, steps)

    def serves(self, spec: DeploymentSpec) -> bool:
        return spec.step_placement == IN_PROCESS or not self.follows_route

    def step_loop(
        self, endpoint: str, inputs: dict[str, np.ndarray], timeout_s: float, trace: list[dict[str, Any]] | None
    ) -> Generator[_ModelCall, dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The step loop: yields each model call (the model, its inputs, the seconds left)
        to the driver, which sends the model's outputs back or throws its error in;
        returns the pipeline's outputs."""
        deadline = time.monotonic() + timeout_s
        transport = in_process_transport()
        env = dict(inputs)
        rows = rows_of(inputs)
        count = step_metrics.count
        for step, spec, model_label in self.steps:
            started = time.perf_counter()
            try:
                if spec is None:
                    out = step.run(None, env, rows)  # type: ignore[arg-type] # a transform needs no runner
                else:
                    model: Model = step  # type: ignore[assignment]
                    model_inputs = model.model_inputs(env)
                    served = transport.acquire(spec, self.time_left(deadline, timeout_s))
                    result = yield served, model_inputs, self.time_left(deadline, timeout_s)
                    # What the version really received, for its drift on this endpoint (as Run's).
                    record_inputs(endpoint, model_label, model_inputs)
                    out = model.model_outputs(result)
            except Exception as exc:
                seconds = time.perf_counter() - started
                count(self.label, step.name, step.kind, seconds, False)
                if trace is not None:
                    trace.append(trace_entry(step.name, step.kind, seconds, None, exc))
                raise
            seconds = time.perf_counter() - started
            count(self.label, step.name, step.kind, seconds, True)
            if trace is not None:
                trace.append(trace_entry(step.name, step.kind, seconds, out, None))
            env.update(out)
        return {name: env[name] for name in self.outputs}

    def time_left(self, deadline: float, timeout_s: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f'pipeline "{self.label}": past the deadline of {timeout_s * 1000:.0f} ms')
        return left

    def run(
        self, endpoint: str, inputs: dict[str, np.ndarray], *, timeout_s: float, request_id: str, trace: bool
    ) -> InferResult:
        """Blocking: each model call waits in this thread as a direct route's does."""
        run = _PlanRun(self, endpoint, inputs, timeout_s, trace)
        call = run.resume()
        while call is not None:
            served, model_inputs, left = call
            try:
                outputs = served.predict_timed(model_inputs, timeout_s=left)[0]
            except Exception as exc:  # noqa: BLE001 - the step loop counts it and raises it
                outputs, run.error = {}, exc
            call = run.resume(outputs)
        return run.result(request_id)

    async def run_async(
        self, endpoint: str, inputs: dict[str, np.ndarray], *, timeout_s: float, request_id: str, trace: bool
    ) -> InferResult:
        """On the event loop: each model call is the batcher's future, awaited as a direct
        route's is (the batcher enforces the deadline)."""
        run = _PlanRun(self, endpoint, inputs, timeout_s, trace)
        call = run.resume()
        while call is not None:
            served, model_inputs, left = call
            try:
                outputs = await asyncio.wrap_future(served.submit(model_inputs, timeout_s=left))
            except Exception as exc:  # noqa: BLE001 - the step loop counts it and raises it
                outputs, run.error = {}, exc
            call = run.resume(outputs)
        return run.result(request_id)


class _PlanRun:
    """One request through a plan: the step loop, what it returned, the trace."""

    __slots__ = ("error", "loop", "outputs", "started", "trace")

    def __init__(self, plan: Plan, endpoint: str, inputs: dict[str, np.ndarray], timeout_s: float, trace: bool) -> None:
        self.started = time.perf_counter()
        self.trace: list[dict[str, Any]] | None = [] if trace else None
        self.loop = plan.step_loop(endpoint, inputs, timeout_s, self.trace)
        self.error: BaseException | None = None
        self.outputs: dict[str, np.ndarray] = {}

    def resume(self, outputs: dict[str, np.ndarray] | None = None) -> _ModelCall | None:
        """The last model call's outputs (or `error`) in, the next model call out; None
        once the graph is done. A step's error is raised from here."""
        try:
            if self.error is not None:
                error, self.error = self.error, None
                return self.loop.throw(error)
            return self.loop.send(outputs)  # type: ignore[arg-type] # None starts the loop
        except StopIteration as done:
            self.outputs = done.value
            return None

    def result(self, request_id: str) -> InferResult:
        extra: dict[str, Any] = {"request_id": request_id}
        if self.trace is not None:
            extra["trace"] = self.trace
        return InferResult(outputs=self.outputs, model_ms=(time.perf_counter() - self.started) * 1000.0, extra=extra)


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
        PLANS.pop(spec.deployment_id, None)


PIPELINE_TRANSPORT = PipelineTransport()
placement_register(PLACEMENT, PIPELINE_TRANSPORT)
