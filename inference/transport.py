"""How the edge reaches a deployment's model: one interface, two placements.

- `in_process`: the batcher and ONNX Runtime session live inside each web process
  (lowest latency; the embedded default).
- `worker_pool`: separate inference worker processes pull requests from a
  per-deployment Redis queue and reply directly (GPUs, isolation, scale-out).

The edge builds a `DeploymentSpec` (plain values, no ORM object) from its cached routing
table and calls `transport_for(spec).infer(...)`.
"""

from __future__ import annotations

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

    def unload(self, spec: DeploymentSpec) -> None: ...
