"""The models a serving process holds, by key (KServe's ModelRepository, as a plain dict)."""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from inference.runtime.batcher import AdmissionPolicy, BatcherStats, DynamicBatcher, TimedFuture, Timing
from inference.runtime.errors import ModelNotFound, ModelNotReady
from inference.runtime.session import Device, LoadedModel
from inference.runtime.signature import Signature

Array = NDArray[Any]


@dataclass(frozen=True)
class LoadSpec:
    """Everything a load depends on; loading the same key with an equal spec is a no-op."""

    path: str
    device: Device = "cpu"
    max_batch_size: int = 0
    max_queue_delay_ms: float = 0.0
    max_queue_size: int = 1024
    admission: AdmissionPolicy | None = None  # None: the batcher's default policy
    intra_op_threads: int | None = None
    warm_runs: int = 3
    name: str = ""
    version: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class ModelStatus:
    """One row of `ModelRepository.list()`."""

    key: str
    name: str
    version: str
    path: str
    ready: bool
    provider: str
    device_requested: str
    load_ms: float
    warm_ms: float
    max_batch_size: int
    max_queue_delay_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "version": self.version,
            "path": self.path,
            "ready": self.ready,
            "provider": self.provider,
            "device_requested": self.device_requested,
            "load_ms": self.load_ms,
            "warm_ms": self.warm_ms,
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
        }


class ServedModel:
    """A warm model and, when batching is on, its batcher: what the prediction path calls.

    Batching is on when `max_batch_size > 1`; otherwise `predict` calls the session
    directly from the caller's thread, which is the lowest latency.
    """

    def __init__(self, key: str, spec: LoadSpec, model: LoadedModel) -> None:
        self.key = key
        self.spec = spec
        self.model = model
        self.batcher: DynamicBatcher | None = None
        if spec.max_batch_size > 1:
            self.batcher = DynamicBatcher(
                model,
                max_batch_size=spec.max_batch_size,
                max_queue_delay_ms=spec.max_queue_delay_ms,
                max_queue_size=spec.max_queue_size,
                admission=spec.admission,
            )

    @property
    def signature(self) -> Signature:
        return self.model.signature

    @property
    def ready(self) -> bool:
        return self.model.ready and (self.batcher is None or not self.batcher.closed)

    def predict(self, inputs: Mapping[str, Array], *, timeout_s: float | None = None) -> dict[str, Array]:
        """Run checked inputs, through the batcher when there is one."""
        if self.batcher is not None:
            return self.batcher.predict(inputs, timeout_s=timeout_s)
        if not self.model.ready:
            raise ModelNotReady(f"{self.model.label} is not ready")
        return self.model.predict(inputs, timeout_s=timeout_s)

    def predict_timed(
        self, inputs: Mapping[str, Array], *, timeout_s: float | None = None
    ) -> tuple[dict[str, Array], Timing]:
        """`predict`, and how it ran: (rows in the ONNX Runtime call, queue ms, model ms).

        Without a batcher the call runs alone in the caller's thread: no queue, and its
        own rows."""
        if self.batcher is not None:
            return self.batcher.predict_timed(inputs, timeout_s=timeout_s)
        if not self.model.ready:
            raise ModelNotReady(f"{self.model.label} is not ready")
        started = time.perf_counter()
        outputs = self.model.predict(inputs, timeout_s=timeout_s)
        return outputs, (_rows(inputs), 0.0, (time.perf_counter() - started) * 1000.0)

    def submit(self, inputs: Mapping[str, Array], *, timeout_s: float | None = None) -> TimedFuture:
        """Like `predict` but returns a Future (resolved at once when not batching)."""
        if self.batcher is not None:
            return self.batcher.submit(inputs, timeout_s=timeout_s)
        future = TimedFuture()
        try:
            outputs, future.timing = self.predict_timed(inputs, timeout_s=timeout_s)
            future.set_result(outputs)
        except Exception as exc:  # noqa: BLE001 - delivered through the future
            future.set_exception(exc)
        return future

    def stats(self) -> BatcherStats | None:
        return self.batcher.stats() if self.batcher is not None else None

    def status(self) -> ModelStatus:
        return ModelStatus(
            key=self.key,
            name=self.model.name,
            version=self.model.version,
            path=self.model.path,
            ready=self.ready,
            provider=self.model.provider,
            device_requested=self.model.device_requested,
            load_ms=self.model.load_ms,
            warm_ms=self.model.warm_ms,
            max_batch_size=self.spec.max_batch_size,
            max_queue_delay_ms=self.spec.max_queue_delay_ms,
        )

    def close(self, *, drain: bool = True) -> None:
        """Stop the batcher (running what is queued when `drain`) and drop the session."""
        if self.batcher is not None:
            self.batcher.close(drain=drain)
        self.model.unload()


class ModelRepository:
    """Loaded models by key (e.g. a deployment id), owned by one serving process.

    Thread-safe: concurrent `load` calls for one key load it once (the others wait and
    get the same model); loads of different keys run in parallel. Loading a key again
    with the same `LoadSpec` returns the loaded model, so load tasks may be retried;
    with a different spec the new model is loaded and warmed first, then swapped in,
    and the old one drained and closed.
    """

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def load(
        self,
        key: str,
        path: str,
        *,
        device: Device = "cpu",
        max_batch_size: int = 0,
        max_queue_delay_ms: float = 0.0,
        max_queue_size: int = 1024,
        admission: AdmissionPolicy | None = None,
        intra_op_threads: int | None = None,
        warm_runs: int = 3,
        name: str = "",
        version: str = "",
        sha256: str = "",
    ) -> ServedModel:
        """Load, warm and register `path` under `key`; ModelLoadError if it cannot."""
        spec = LoadSpec(
            path=path,
            device=device,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            max_queue_size=max_queue_size,
            admission=admission,
            intra_op_threads=intra_op_threads,
            warm_runs=warm_runs,
            name=name,
            version=version,
            sha256=sha256,
        )
        with self._key_lock(key):
            current = self._models.get(key)
            if current is not None and current.spec == spec and current.ready:
                return current
            model = LoadedModel.load(
                path,
                device=device,
                intra_op_threads=intra_op_threads,
                name=name,
                version=version,
                sha256=sha256,
            )
            try:
                model.warm(warm_runs)
            except Exception:
                model.unload()
                raise
            served = ServedModel(key, spec, model)
            with self._lock:
                old = self._models.get(key)
                self._models[key] = served
        if old is not None:
            old.close(drain=True)
        return served

    def get(self, key: str) -> ServedModel:
        """The model under `key`; ModelNotFound if there is none."""
        served = self._models.get(key)
        if served is None:
            raise ModelNotFound(f'no model loaded under "{key}"')
        return served

    def find(self, key: str) -> ServedModel | None:
        return self._models.get(key)

    def ready(self, key: str) -> bool:
        served = self._models.get(key)
        return served is not None and served.ready

    def unload(self, key: str, *, expected: ServedModel | None = None) -> bool:
        """Remove and close the model under `key`; False if there was none (or, with
        `expected`, if the key now holds another model: a reload swapped it in)."""
        with self._key_lock(key):
            with self._lock:
                served = self._models.get(key)
                if served is None or (expected is not None and served is not expected):
                    return False
                del self._models[key]
            served.close(drain=True)
            return True

    def list(self) -> builtins.list[ModelStatus]:
        """Status of every loaded model: ready flag, provider, batching."""
        with self._lock:
            models = list(self._models.values())
        return [m.status() for m in models]

    def keys(self) -> builtins.list[str]:
        with self._lock:
            return list(self._models)

    def served(self) -> builtins.list[ServedModel]:
        """Every loaded model (for stats writers and reports)."""
        with self._lock:
            return list(self._models.values())

    def close(self) -> None:
        """Unload everything (process shutdown)."""
        for key in self.keys():
            self.unload(key)

    def __contains__(self, key: object) -> bool:
        return key in self._models

    def __len__(self) -> int:
        return len(self._models)


def _rows(inputs: Mapping[str, Array]) -> int:
    for value in inputs.values():
        return int(value.shape[0]) if value.ndim else 1
    return 0
