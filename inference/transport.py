"""How the edge reaches a deployment's model: one interface, two placements.

- `in_process`: the batcher and ONNX Runtime session live inside each web process
  (lowest latency; the embedded default).
- `worker_pool`: separate inference worker processes pull requests from a
  per-deployment Redis queue and reply directly (GPUs, isolation, scale-out).

The edge builds a `DeploymentSpec` (plain values, no ORM object) from its cached routing
table and calls `transport_for(spec).infer(...)`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class DeploymentSpec:
    """Everything a transport needs to serve one deployment, as plain values."""

    deployment_id: int
    endpoint: str
    model: str
    version: int
    role: str  # primary, canary, shadow
    weight: int
    artifact_sha256: str
    artifact_path: str
    signature: dict[str, Any]  # registry signature JSON: {"inputs": [...], "outputs": [...]}
    device: str = "cpu"  # cpu or gpu
    placement: str = "in_process"  # in_process or worker_pool
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0

    @property
    def key(self) -> str:
        """Stable name of the loaded model: one per deployment."""
        return f"d{self.deployment_id}"

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class InferResult:
    outputs: dict[str, np.ndarray]
    batch_rows: int | None = None  # rows in the ONNX Runtime call this request ran in
    queue_ms: float | None = None
    model_ms: float | None = None
    provider: str = ""  # the execution provider that really ran it
    extra: dict[str, Any] = field(default_factory=dict)


class Transport(Protocol):
    def ensure_loaded(self, spec: DeploymentSpec) -> None:
        """Load and warm the deployment (in-process), or ask workers to (pool)."""

    def ready(self, spec: DeploymentSpec) -> bool:
        """Loaded and warm somewhere that can serve it now."""

    def infer(self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float) -> InferResult:
        """Run one request (rows along dim 0); raises inference.runtime.errors on failure."""

    async def infer_async(
        self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float
    ) -> InferResult:
        """`infer` for an event loop (the ASGI front): the model call awaited, no thread held."""

    def unload(self, spec: DeploymentSpec) -> None: ...


class InProcessTransport:
    """Serves deployments inside this process, from an inference.runtime ModelRepository.

    Loading is lazy and happens at most once per process and deployment (the repository
    locks per key), so the first request a web process gets for a deployment waits for
    load + warm-up; every later one goes straight to the session (or its batcher when
    max_batch_size > 1). A deployment's settings never change (other settings make a new
    deployment), so the key and the artifact digest say whether what is loaded fits.
    """

    def __init__(self, repository: Any = None) -> None:
        from inference.runtime.repository import ModelRepository

        self.repository = repository if repository is not None else ModelRepository()
        self._served: dict[str, tuple[str, Any]] = {}  # key -> (sha256, ServedModel)

    def ensure_loaded(self, spec: DeploymentSpec) -> None:
        self.load(spec)

    def served(self, spec: DeploymentSpec) -> Any:
        """The runtime ServedModel loaded here for this deployment, or None (not loaded, or
        loaded from other bytes): then `load(spec)` it, which blocks for load + warm-up."""
        entry = self._served.get(spec.key)
        return entry[1] if entry is not None and entry[0] == spec.artifact_sha256 else None

    def served_models(self) -> list[Any]:
        return [entry[1] for entry in list(self._served.values())]

    def ready(self, spec: DeploymentSpec) -> bool:
        entry = self._served.get(spec.key)
        return entry is not None and entry[1].ready

    def provider(self, spec: DeploymentSpec) -> str:
        """The provider the session really got in this process, "" when not loaded here."""
        entry = self._served.get(spec.key)
        return entry[1].model.provider if entry is not None else ""

    def infer(self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float) -> InferResult:
        served = self.served(spec) or self.load(spec)
        outputs, (batch_rows, queue_ms, model_ms) = served.predict_timed(inputs, timeout_s=timeout_s)
        return InferResult(
            outputs=outputs,
            batch_rows=batch_rows,
            queue_ms=queue_ms,
            model_ms=model_ms,
            provider=served.model.provider,
        )

    async def infer_async(
        self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float
    ) -> InferResult:
        served = self.served(spec)
        if served is None:  # first request in this process: load + warm off the loop
            served = await asyncio.get_running_loop().run_in_executor(None, self.load, spec)
        # The batcher fails the future itself at the deadline (queued or running).
        future = served.submit(inputs, timeout_s=timeout_s)
        outputs = await asyncio.wrap_future(future)
        batch_rows, queue_ms, model_ms = future.timing or (None, None, None)
        return InferResult(
            outputs=outputs,
            batch_rows=batch_rows,
            queue_ms=queue_ms,
            model_ms=model_ms,
            provider=served.model.provider,
        )

    def unload(self, spec: DeploymentSpec) -> None:
        self.unload_key(spec.key)

    def unload_key(self, key: str) -> None:
        self._served.pop(key, None)
        self.repository.unload(key)

    def loaded_keys(self) -> list[str]:
        return list(self._served)

    def load(self, spec: DeploymentSpec) -> Any:
        """Load and warm (once per process and deployment; the repository locks per key)."""
        served = self.repository.load(
            spec.key,
            spec.artifact_path,
            device="gpu" if spec.device == "gpu" else "cpu",
            max_batch_size=spec.max_batch_size,
            max_queue_delay_ms=spec.max_queue_delay_ms,
            name=spec.model,
            version=str(spec.version),
            sha256=spec.artifact_sha256,
            intra_op_threads=_intra_op_threads(),
            **_admission_options(),
        )
        self._served[spec.key] = (spec.artifact_sha256, served)
        return served


def _intra_op_threads() -> int | None:
    """ONNX Runtime threads per in-process session: settings.INTRA_OP_THREADS, derived in
    config/serving.py from the cores and the web processes (MODELHUB_INTRA_OP_THREADS
    overrides), so the processes do not fight over the cores."""
    from django.conf import settings

    return settings.INTRA_OP_THREADS or None


def _admission_options() -> dict[str, Any]:
    """The batcher's queue bounds and admission policy, from settings (config/settings.py)."""
    from django.conf import settings

    from inference.runtime.batcher import AdmissionPolicy

    wait_ms = settings.SERVING_MAX_QUEUE_WAIT_MS
    return {
        "max_queue_size": settings.SERVING_MAX_QUEUE_SIZE,
        "admission": AdmissionPolicy(
            enabled=settings.SERVING_ADMISSION_CONTROL,
            deadline_fraction=settings.SERVING_ADMISSION_DEADLINE_FRACTION,
            max_queue_wait_s=wait_ms / 1000.0 if wait_ms > 0 else None,
        ),
    }


_IN_PROCESS: InProcessTransport | None = None
_POOL: Transport | None = None


def in_process_transport() -> InProcessTransport:
    global _IN_PROCESS
    if _IN_PROCESS is None:
        _IN_PROCESS = InProcessTransport()
    return _IN_PROCESS


_PLACEMENTS: dict[str, Transport] = {}


def placement_register(placement: str, transport: Transport) -> None:
    """Another kind of route's transport (inference.pipelines registers "pipeline"), so
    that this module imports nothing above it."""
    _PLACEMENTS[placement] = transport


def transport_for(spec: DeploymentSpec) -> Transport:
    """The transport serving `spec`, by its placement (one instance of each per process).

    The worker-pool transport lives in `inference.pool` (`WorkerPoolTransport()`), imported
    on first use so that the in-process path never pays for it.
    """
    other = _PLACEMENTS.get(spec.placement)
    if other is not None:
        return other
    if spec.placement == "worker_pool":
        global _POOL
        if _POOL is None:
            try:
                from inference.pool import WorkerPoolTransport  # type: ignore[import-not-found]
            except ImportError as exc:
                from inference.runtime.errors import ModelNotReady

                raise ModelNotReady(f"{spec.label}: worker-pool placement is not available here ({exc})") from None
            _POOL = WorkerPoolTransport()
        return _POOL
    return in_process_transport()
