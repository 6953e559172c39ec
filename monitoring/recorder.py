"""The hot path's one call into monitoring: `record(PredictionRecord(...))`.

It must cost microseconds and never fail a prediction, so it only updates counters in
this process under a lock; a background flusher (see `flush`) moves them to Redis (or to
the database on the embedded default), and beat rolls them up. Nothing here touches the
ORM or the network.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Upper bounds in milliseconds; the last bucket is "+Inf". Prometheus-style cumulative
# counts are derived when exported.
LATENCY_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One answered (or refused) prediction request, as the serving edge saw it."""

    endpoint: str
    deployment: str  # "<model>:<version>", the version that answered
    role: str  # primary, canary or shadow
    latency_ms: float
    ok: bool
    error_kind: str | None = None  # e.g. invalid_input, deadline_exceeded, overloaded
    rows: int = 1
    batch_rows: int | None = None  # rows in the ONNX Runtime call it ran in
    queue_ms: float | None = None
    model_ms: float | None = None
    inputs: Mapping[str, Any] | None = None  # numpy arrays, for drift samples
    outputs: Mapping[str, Any] | None = None  # numpy arrays, for the output summary


@dataclass
class MinuteStats:
    count: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0
    rows: int = 0
    batch_rows_sum: int = 0
    batch_count: int = 0
    queue_ms_sum: float = 0.0
    model_ms_sum: float = 0.0


class Recorder:
    """Per-process counters keyed by (minute, endpoint, deployment, role)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[int, str, str, str], MinuteStats] = {}
        self.dropped = 0  # records lost to errors inside the recorder itself

    def record(self, rec: PredictionRecord) -> None:
        try:
            key = (int(time.time() // 60), rec.endpoint, rec.deployment, rec.role)
            bucket = bisect.bisect_left(LATENCY_BUCKETS_MS, rec.latency_ms)
            with self._lock:
                stats = self._stats.get(key)
                if stats is None:
                    stats = self._stats[key] = MinuteStats()
                stats.count += 1
                stats.rows += rec.rows
                stats.latency_buckets[bucket] += 1
                stats.latency_sum_ms += rec.latency_ms
                if not rec.ok:
                    kind = rec.error_kind or "error"
                    stats.errors[kind] = stats.errors.get(kind, 0) + 1
                if rec.batch_rows is not None:
                    stats.batch_rows_sum += rec.batch_rows
                    stats.batch_count += 1
                if rec.queue_ms is not None:
                    stats.queue_ms_sum += rec.queue_ms
                if rec.model_ms is not None:
                    stats.model_ms_sum += rec.model_ms
        except Exception:
            self.dropped += 1

    def drain(self) -> dict[tuple[int, str, str, str], MinuteStats]:
        """Take everything counted so far (the flusher calls this)."""
        with self._lock:
            taken, self._stats = self._stats, {}
        return taken


recorder = Recorder()


def record(rec: PredictionRecord) -> None:
    recorder.record(rec)
