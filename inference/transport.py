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
import logging
import threading
import time
from typing import Any, Protocol

import numpy as np

from inference.pool import worker_pool_transport
from inference.runtime.batcher import AdmissionPolicy
from inference.runtime.errors import ColdStart
from inference.runtime.repository import ModelRepository, ServedModel, cold_start_seconds
from inference.spec import DeploymentSpec, InferResult

log = logging.getLogger("modelhub.transport")

__all__ = ["DeploymentSpec", "InProcessTransport", "InferResult", "Transport", "in_process_transport", "transport_for"]


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
    """Serves deployments inside this process, from the process's one ModelRepository.

    The repository is the only record of what is loaded here; this class only turns a
    spec into a repository key and load options. Loading is lazy and happens at most once
    per process and deployment (the repository locks per key), so the first request a web
    process gets for a deployment waits for load + warm-up; every later one goes straight
    to the session (or its batcher when max_batch_size > 1). A deployment's settings never
    change (other settings make a new deployment), so the key and the artifact digest say
    whether what is loaded fits.
    """

    def __init__(self, repository: ModelRepository | None = None) -> None:
        self.repository = repository if repository is not None else ModelRepository(budget_bytes=_memory_budget())
        self._reloading: set[str] = set()  # keys being reloaded in the background (cold starts refused)
        self._reloading_lock = threading.Lock()

    def ensure_loaded(self, spec: DeploymentSpec) -> None:
        self.load(spec)

    def served(self, spec: DeploymentSpec) -> ServedModel | None:
        """The runtime ServedModel loaded here for this deployment, or None (not loaded, or
        loaded from other bytes): then `load(spec)` it, which blocks for load + warm-up."""
        served = self.repository.find(spec.key)
        return served if served is not None and served.spec.sha256 == spec.artifact_sha256 else None

    def acquire(self, spec: DeploymentSpec, timeout_s: float) -> ServedModel:
        """The model a request of `timeout_s` runs on: loaded here, or reloaded now when that
        fits the deadline, else ColdStart (503 + Retry-After) with the reload started, as
        `infer` does (a pipeline's model steps call it)."""
        served = self.served(spec)
        return served if served is not None else self._cold_load(spec, timeout_s)

    def served_models(self) -> list[ServedModel]:
        return self.repository.served()

    def ready(self, spec: DeploymentSpec) -> bool:
        served = self.served(spec)
        return served is not None and served.ready

    def provider(self, spec: DeploymentSpec) -> str:
        """The provider the session really got in this process, "" when not loaded here."""
        served = self.repository.find(spec.key)
        return served.model.provider if served is not None else ""

    def infer(self, spec: DeploymentSpec, inputs: dict[str, np.ndarray], *, timeout_s: float) -> InferResult:
        served = self.served(spec)
        if served is None:
            started = time.monotonic()
            served = self._cold_load(spec, timeout_s)
            timeout_s -= time.monotonic() - started
        elif served.pinned != spec.pinned:
            served.pinned = spec.pinned
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
        if served is None:  # first request in this process, or unloaded: load + warm off the loop
            started = time.monotonic()
            served = await asyncio.get_running_loop().run_in_executor(None, self._cold_load, spec, timeout_s)
            timeout_s -= time.monotonic() - started
        elif served.pinned != spec.pinned:
            served.pinned = spec.pinned
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
        self.repository.unload(key)

    def loaded_keys(self) -> list[str]:
        return self.repository.keys()

    def _cold_load(self, spec: DeploymentSpec, timeout_s: float) -> ServedModel:
        """Load a deployment a request needs: inline when its last load time fits the
        request's deadline (or it never loaded here), else start the reload in the
        background and refuse with 503 + Retry-After (ColdStart)."""
        expected_ms = self.repository.expected_load_ms(spec.key)
        if expected_ms is None or expected_ms / 1000.0 < timeout_s:
            return self.load(spec)
        with self._reloading_lock:
            start = spec.key not in self._reloading
            self._reloading.add(spec.key)
            self.repository.stats.cold_refusals += 1
        if start:
            threading.Thread(target=self._reload, args=(spec,), name=f"reload-{spec.key}", daemon=True).start()
        raise ColdStart(
            f'endpoint "{spec.endpoint}" ({spec.label}) was unloaded to make room for other models; reloading '
            f"it takes about {expected_ms:.0f} ms, more than the request's deadline of {timeout_s * 1000:.0f} ms",
            retry_after_s=cold_start_seconds(expected_ms),
        )

    def _reload(self, spec: DeploymentSpec) -> None:
        try:
            self.load(spec)
        except Exception as exc:  # noqa: BLE001 - the next request sees the failure itself
            log.warning("background reload of %s failed: %s", spec.key, exc)
        finally:
            with self._reloading_lock:
                self._reloading.discard(spec.key)

    def load(self, spec: DeploymentSpec) -> ServedModel:
        """Load and warm (once per process and deployment; the repository locks per key)."""
        return self.repository.load(
            spec.key,
            spec.artifact_path,
            device="gpu" if spec.device == "gpu" else "cpu",
            max_batch_size=spec.max_batch_size,
            max_queue_delay_ms=spec.max_queue_delay_ms,
            name=spec.model,
            version=str(spec.version),
            sha256=spec.artifact_sha256,
            intra_op_threads=_intra_op_threads(),
            pinned=spec.pinned,
            **_admission_options(),
        )


def _intra_op_threads() -> int | None:
    """ONNX Runtime threads per in-process session: settings.INTRA_OP_THREADS, derived in
    config/serving.py from the cores and the web processes (MODELHUB_INTRA_OP_THREADS
    overrides), so the processes do not fight over the cores."""
    from django.conf import settings

    return settings.INTRA_OP_THREADS or None


def _memory_budget() -> int:
    """Bytes of loaded models this web process may hold: settings.MODEL_MEMORY_BUDGET_BYTES
    (config/serving.py derives it from the machine's memory and the web processes)."""
    from django.conf import settings

    return int(settings.MODEL_MEMORY_BUDGET_BYTES)


def _admission_options() -> dict[str, Any]:
    """The batcher's queue bounds and admission policy, from settings (config/settings.py)."""
    from django.conf import settings

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
    """The transport serving `spec`, by its placement: the process's one in-process
    transport, the process's one worker-pool client (`inference.pool.worker_pool_transport`),
    or a transport another package registered for its placement (`placement_register`)."""
    other = _PLACEMENTS.get(spec.placement)
    if other is not None:
        return other
    if spec.placement == "worker_pool":
        return worker_pool_transport()
    return in_process_transport()
