"""What a transport needs to serve one deployment, as plain values (no Django, no ORM).

Below both transports (`inference.transport` in-process, `inference.pool` worker pool)
and the frame format (`inference.pool_protocol`), so none of them imports another for
these values. The batching defaults live here once: the model's field defaults, the
traffic-policy validation and the spec all read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# One default per batching setting (Deployment's fields, a route without them, a spec).
# 0 ms: at concurrency 1 any queue delay is pure latency, and under load batches form
# anyway while ONNX Runtime runs (docs/architecture.md, "Batch what queued").
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_QUEUE_DELAY_MS = 0.0


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
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_ms: float = DEFAULT_MAX_QUEUE_DELAY_MS
    # Density: False = evictable (may be unloaded to make room under a memory budget and
    # reloaded on its next request); True = pinned, stays loaded.
    pinned: bool = False
    # A pipeline route (placement "pipeline"): where its model steps run unless a step
    # names its own placement, "in_process" or "worker_pool" (on inference workers of `device`).
    step_placement: str = "in_process"

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
