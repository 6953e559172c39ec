"""Per-step latency and errors of pipelines, summed across processes.

Each process counts its own steps (`count`, on the request path: one dict update under a
lock). Its monitoring flusher (monitoring/flusher.py, every 2 s) calls `publish()`, which
adds what was counted since the last publish to Redis in one pipelined round trip, as the
prediction counters are (`mh:tot:*`), so /metrics, served by any one process, shows the sum
of every process (`totals()`, plus the answering process's not yet published counts). On
the embedded default (no Redis) there is one process and /metrics shows its own counts.

Keys: `mh:pstep:index` (set of series, each the JSON [pipeline, step, kind]) and
`mh:pstep:s:<series>` (hash: calls, errors, ms, b0..b11 the latency buckets).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import orjson

BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000)
_BUCKETS = len(BUCKETS_MS)
INDEX_KEY = "mh:pstep:index"
Series = tuple[str, str, str]  # (pipeline label, step, kind)


@dataclass
class StepStats:
    calls: int = 0
    errors: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_MS))

    def copy(self) -> StepStats:
        return StepStats(self.calls, self.errors, self.seconds, list(self.buckets))

    def minus(self, other: StepStats | None) -> StepStats:
        if other is None:
            return self.copy()
        return StepStats(
            self.calls - other.calls,
            self.errors - other.errors,
            self.seconds - other.seconds,
            [a - b for a, b in zip(self.buckets, other.buckets, strict=True)],
        )

    def add(self, other: StepStats) -> None:
        self.calls += other.calls
        self.errors += other.errors
        self.seconds += other.seconds
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]


_stats: dict[Series, StepStats] = {}
_stats_lock = threading.Lock()
_published: dict[Series, StepStats] = {}  # what Redis already has from this process
_publish_lock = threading.Lock()  # a publish and a /metrics read never interleave


def count(pipeline: str, step: str, kind: str, seconds: float, ok: bool) -> None:
    key = (pipeline, step, kind)
    with _stats_lock:
        stats = _stats.get(key)
        if stats is None:
            stats = _stats[key] = StepStats()
        stats.calls += 1
        stats.errors += 0 if ok else 1
        stats.seconds += seconds
        i = bisect_left(BUCKETS_MS, seconds * 1000.0)  # the first bound >= ms
        if i < _BUCKETS:
            stats.buckets[i] += 1


def step_stats() -> dict[Series, StepStats]:
    """A copy of this process's per-step counters since it started."""
    with _stats_lock:
        return {k: v.copy() for k, v in _stats.items()}


def _series_key(series: Series) -> str:
    return "mh:pstep:s:" + orjson.dumps(list(series)).decode()


def _unpublished(now: dict[Series, StepStats]) -> dict[Series, StepStats]:
    out = {}
    for key, stats in now.items():
        delta = stats.minus(_published.get(key))
        if delta.calls:
            out[key] = delta
    return out


def publish(client: Any) -> None:
    """Add this process's counts since the last publish to the shared totals (one round trip).
    Redis away: nothing is marked published, so the next flush sends it all."""
    with _publish_lock:
        now = step_stats()
        deltas = _unpublished(now)
        if not deltas:
            return
        pipe = client.pipeline(transaction=False)
        for series, d in deltas.items():
            key = _series_key(series)
            pipe.sadd(INDEX_KEY, orjson.dumps(list(series)))
            pipe.hincrby(key, "calls", d.calls)
            if d.errors:
                pipe.hincrby(key, "errors", d.errors)
            pipe.hincrbyfloat(key, "ms", d.seconds * 1000.0)
            for i, c in enumerate(d.buckets):
                if c:
                    pipe.hincrby(key, f"b{i}", c)
        pipe.execute()
        _published.update({k: now[k] for k in deltas})


def totals(client: Any | None) -> dict[Series, StepStats]:
    """Every process's counts: the shared totals plus this process's not yet published ones
    (with no Redis client: this process's own)."""
    with _publish_lock:
        now = step_stats()
        if client is None:
            return now
        out: dict[Series, StepStats] = {}
        members = sorted(client.smembers(INDEX_KEY))
        pipe = client.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(_series_key(tuple(orjson.loads(member))))  # type: ignore[arg-type]
        for member, raw in zip(members, pipe.execute(), strict=True):
            if not raw:
                continue
            fields = {k.decode(): v for k, v in raw.items()}
            series: Series = tuple(orjson.loads(member))  # type: ignore[assignment]
            out[series] = StepStats(
                calls=int(fields.get("calls", 0)),
                errors=int(fields.get("errors", 0)),
                seconds=float(fields.get("ms", 0.0)) / 1000.0,
                buckets=[int(fields.get(f"b{i}", 0)) for i in range(len(BUCKETS_MS))],
            )
        for series, delta in _unpublished(now).items():
            out.setdefault(series, StepStats()).add(delta)
        return out
