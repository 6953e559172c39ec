"""The models a serving process holds, by key (KServe's ModelRepository, as a plain dict).

Density: a repository may have a memory budget (bytes). Before a load it estimates the
model's memory, and when the load would exceed the budget it unloads the least recently
used models that are not pinned (ModelMesh's policy). How a model's memory is counted
(measured with bench/session_memory.py, docs/benchmarks.md "Density"): once the allocator
has handed back what the load parsed and dropped (`release_memory`), an ONNX Runtime CPU
session holds its initializers and little else, so the estimate is
`artifact size x MEMORY_PER_ARTIFACT_BYTE + MEMORY_PER_SESSION`. The process's resident set
size is also measured around each load (loads are serialised while a budget is set); a
model whose session is much larger than its file (constants folded out of a small graph)
is charged that measured delta instead. A delta is not charged otherwise: it reads near
zero when the allocator reuses what an unloaded model freed, and high when other threads
allocate during the load.
"""

from __future__ import annotations

import builtins
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from inference.runtime.batcher import AdmissionPolicy, BatcherStats, DynamicBatcher, TimedFuture, Timing
from inference.runtime.errors import MemoryBudgetExceeded, ModelNotFound, ModelNotReady
from inference.runtime.session import Device, LoadedModel
from inference.runtime.signature import Signature

Array = NDArray[Any]
log = logging.getLogger("modelhub.runtime.repository")

# Resident bytes a loaded, warmed, trimmed CPU session holds per artifact byte, and per
# session on top (measured 1.00-1.03 and 0.1-1.2 MiB for 0.4 kB-136 MB MLPs; rounded up).
MEMORY_PER_ARTIFACT_BYTE = 1.05
MEMORY_PER_SESSION = 1 << 20
# A measured delta above estimate x this + the slack is the model's own, not noise.
MEASURED_OVER_ESTIMATE = 1.5
MEASURED_SLACK = 8 << 20
# Cold-start histogram buckets (seconds), for the metrics page.
COLD_START_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


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
        self.memory_bytes = 0  # what the repository charges it against its budget
        self.last_used = time.monotonic()  # for least-recently-used eviction
        self.pinned = False  # never unloaded to make room
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
        self.last_used = time.monotonic()
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
        self.last_used = time.monotonic()
        if self.batcher is not None:
            return self.batcher.predict_timed(inputs, timeout_s=timeout_s)
        if not self.model.ready:
            raise ModelNotReady(f"{self.model.label} is not ready")
        started = time.perf_counter()
        outputs = self.model.predict(inputs, timeout_s=timeout_s)
        return outputs, (_rows(inputs), 0.0, (time.perf_counter() - started) * 1000.0)

    def submit(self, inputs: Mapping[str, Array], *, timeout_s: float | None = None) -> TimedFuture:
        """Like `predict` but returns a Future (resolved at once when not batching)."""
        self.last_used = time.monotonic()
        if self.batcher is not None:
            return self.batcher.submit(inputs, timeout_s=timeout_s)
        return self._run_now(inputs, timeout_s)

    def submit_many(self, requests: Sequence[tuple[Mapping[str, Array], float | None]]) -> builtins.list[TimedFuture]:
        """`submit` for several requests (inputs, timeout_s) at once: to the batcher together,
        so that they can run in one call (`DynamicBatcher.submit_many`)."""
        self.last_used = time.monotonic()
        if self.batcher is not None:
            return self.batcher.submit_many(requests)
        return [self._run_now(inputs, timeout_s) for inputs, timeout_s in requests]

    def _run_now(self, inputs: Mapping[str, Array], timeout_s: float | None) -> TimedFuture:
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


@dataclass
class DensityStats:
    """Counters of a repository with a budget (cumulative since the process started)."""

    loads: int = 0
    evictions: int = 0
    cold_starts: int = 0  # loads of a key this repository had unloaded to make room
    cold_start_ms_total: float = 0.0
    cold_refusals: int = 0  # requests refused because a reload would not fit their deadline
    cold_start_buckets: builtins.list[int] | None = None  # per COLD_START_BUCKETS_S, then +Inf

    def observe_cold_start(self, ms: float) -> None:
        if self.cold_start_buckets is None:
            self.cold_start_buckets = [0] * (len(COLD_START_BUCKETS_S) + 1)
        self.cold_starts += 1
        self.cold_start_ms_total += ms
        for i, edge in enumerate(COLD_START_BUCKETS_S):
            if ms <= edge * 1000:
                self.cold_start_buckets[i] += 1
                return
        self.cold_start_buckets[-1] += 1


class ModelRepository:
    """Loaded models by key (e.g. a deployment id), owned by one serving process.

    Thread-safe: concurrent `load` calls for one key load it once (the others wait and
    get the same model); loads of different keys run in parallel (one at a time while a
    memory budget is set, so each load's memory can be measured). Loading a key again
    with the same `LoadSpec` returns the loaded model, so load tasks may be retried;
    with a different spec the new model is loaded and warmed first, then swapped in,
    and the old one drained and closed.

    `budget_bytes` > 0: a load that would take the models' memory past it first unloads
    the least recently used unpinned models (`on_evict(key)` is called for each); when
    even that cannot make room, the load raises MemoryBudgetExceeded (503).
    """

    def __init__(self, *, budget_bytes: int = 0, on_evict: Callable[[str], None] | None = None) -> None:
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.budget_bytes = max(0, int(budget_bytes))
        self.on_evict = on_evict
        self._load_lock = threading.Lock()
        self._evicted: set[str] = set()
        self._load_ms: dict[str, float] = {}  # key -> its last load + warm-up time
        self.stats = DensityStats()

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    # ------------------------------------------------------------ memory

    def estimate_bytes(self, path: str) -> int:
        """What loading `path` is expected to hold once loaded and warm (module docstring)."""
        return memory_estimate(path)

    def used_bytes(self) -> int:
        with self._lock:
            return sum(m.memory_bytes for m in self._models.values())

    def free_bytes(self) -> int | None:
        """Room left under the budget (None: no budget)."""
        return None if not self.budget_bytes else max(0, self.budget_bytes - self.used_bytes())

    def expected_load_ms(self, key: str) -> float | None:
        """How long `key` took to load and warm last time in this process (None: never loaded)."""
        return self._load_ms.get(key)

    def was_evicted(self, key: str) -> bool:
        return key in self._evicted

    def pin(self, key: str, pinned: bool) -> None:
        served = self._models.get(key)
        if served is not None:
            served.pinned = pinned

    def memory_report(self) -> dict[str, Any]:
        """Budget, use and counters (for heartbeats and /metrics)."""
        with self._lock:
            models = list(self._models.values())
        stats = self.stats
        return {
            "budget_bytes": self.budget_bytes,
            "used_bytes": sum(m.memory_bytes for m in models),
            "rss_bytes": rss_bytes(),
            "models": len(models),
            "pinned": sum(1 for m in models if m.pinned),
            "loads": stats.loads,
            "evictions": stats.evictions,
            "cold_starts": stats.cold_starts,
            "cold_start_ms_total": round(stats.cold_start_ms_total, 3),
            "cold_refusals": stats.cold_refusals,
            "cold_start_buckets": list(stats.cold_start_buckets or [0] * (len(COLD_START_BUCKETS_S) + 1)),
        }

    def _make_room(self, key: str, needed: int) -> builtins.list[ServedModel]:
        """Take the least recently used unpinned models (never `key`) out of the map until
        `needed` bytes fit under the budget; returns them for the caller to close. Takes
        none when even all of them would not make room."""
        with self._lock:
            others = [m for k, m in self._models.items() if k != key]
            used = sum(m.memory_bytes for m in others)
            if used + needed <= self.budget_bytes:
                return []
            candidates = sorted((m for m in others if not m.pinned), key=lambda m: m.last_used)
            victims: builtins.list[ServedModel] = []
            for victim in candidates:
                if used + needed <= self.budget_bytes:
                    break
                victims.append(victim)
                used -= victim.memory_bytes
            if used + needed > self.budget_bytes:
                pinned_count = len(others) - len(candidates)
                raise MemoryBudgetExceeded(
                    f'cannot load "{key}": it needs about {needed >> 20} MiB, and the model-memory budget of '
                    f"{self.budget_bytes >> 20} MiB stays too full even with every unpinned model unloaded "
                    f"({len(others)} loaded, {pinned_count} pinned)"
                )
            for victim in victims:
                del self._models[victim.key]
                self._evicted.add(victim.key)
            self.stats.evictions += len(victims)
        return victims

    def _evict(self, victims: builtins.list[ServedModel]) -> None:
        if not victims:
            return
        for victim in victims:
            log.info(
                "unloading %s (%s MiB, least recently used) to stay within the model-memory budget",
                victim.key,
                victim.memory_bytes >> 20,
            )
            victim.close(drain=True)
            if self.on_evict is not None:
                try:
                    self.on_evict(victim.key)
                except Exception:  # noqa: BLE001 - a listener must not fail the load
                    log.exception("on_evict(%s) failed", victim.key)
        release_memory()

    # ------------------------------------------------------------ load / unload

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
        pinned: bool = False,
    ) -> ServedModel:
        """Load, warm and register `path` under `key`; ModelLoadError if it cannot,
        MemoryBudgetExceeded if it cannot fit under the budget."""
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
                current.pinned = pinned
                current.last_used = time.monotonic()
                return current
            if self.budget_bytes:
                with self._load_lock:  # one load at a time: its RSS delta is its own
                    self._evict(self._make_room(key, self.estimate_bytes(path)))
                    before = rss_bytes()
                    model, ms = self._load_model(spec)
                    release_memory()  # what the load parsed and dropped is not the model's
                    charged = memory_charge(path, rss_bytes() - before)
            else:
                model, ms = self._load_model(spec)
                charged = 0
            served = ServedModel(key, spec, model)
            served.memory_bytes, served.pinned = charged, pinned
            with self._lock:
                old = self._models.get(key)
                self._models[key] = served
                self.stats.loads += 1
                if key in self._evicted:
                    self._evicted.discard(key)
                    self.stats.observe_cold_start(ms)
                self._load_ms[key] = ms
        if old is not None:
            old.close(drain=True)
        if self.budget_bytes:  # measured above its estimate: trim others so the budget holds
            try:
                self._evict(self._make_room(key, charged))
            except MemoryBudgetExceeded:
                log.warning("%s loaded over the model-memory budget (the others are pinned)", key)
        return served

    def _load_model(self, spec: LoadSpec) -> tuple[LoadedModel, float]:
        started = time.perf_counter()
        model = LoadedModel.load(
            spec.path,
            device=spec.device,
            intra_op_threads=spec.intra_op_threads,
            name=spec.name,
            version=spec.version,
            sha256=spec.sha256,
        )
        try:
            model.warm(spec.warm_runs)
        except Exception:
            model.unload()
            raise
        return model, (time.perf_counter() - started) * 1000.0

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
        if self.budget_bytes:
            release_memory()
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


def memory_estimate(path: str) -> int:
    """Resident bytes a CPU session of `path` holds once loaded and warm (0-byte file: one
    session's overhead)."""
    try:
        size = os.path.getsize(path)
    except OSError:
        size = 0
    return int(size * MEMORY_PER_ARTIFACT_BYTE) + MEMORY_PER_SESSION


def memory_charge(path: str, measured: int) -> int:
    """What a loaded model counts against the budget: the estimate, or the RSS delta measured
    around its load when that is well above it (a session larger than its file)."""
    estimate = memory_estimate(path)
    if measured > estimate * MEASURED_OVER_ESTIMATE + MEASURED_SLACK:
        log.info(
            "%s holds %s MiB, above its %s MiB estimate: charged as measured", path, measured >> 20, estimate >> 20
        )
        return measured
    return estimate


_libc: Any = None


def release_memory() -> None:
    """Give the memory of unloaded sessions back to the operating system (glibc's
    malloc_trim; a no-op elsewhere). Without it glibc keeps freed blocks in its per-thread
    arenas and a process that loads and unloads models grows well past its budget
    (bench/density.py measured about 2x)."""
    global _libc
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except (OSError, AttributeError):
        _libc = False


def rss_bytes() -> int:
    """This process's resident set size (Linux /proc/self/statm; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cold_start_seconds(ms: float) -> int:
    """A Retry-After for a reload that takes `ms` (whole seconds, at least 1)."""
    return max(1, math.ceil(ms / 1000.0))


def _rows(inputs: Mapping[str, Array]) -> int:
    for value in inputs.values():
        return int(value.shape[0]) if value.ndim else 1
    return 0
