"""The hot path's one call into monitoring: `record(PredictionRecord(...))`.

It must cost microseconds and never fail a prediction, so it only updates counters in
this process under a lock; a background flusher (monitoring/flusher.py, started lazily
on the first record in each process, so after gunicorn's fork) moves them to Redis (or to
the database on the embedded default) every couple of seconds, and beat rolls them up.
Nothing here touches the ORM or the network, and nothing here imports monitoring: it
sits below inference, and MonitoringConfig.ready() hands the default recorder the
flusher's start-up hook (`Recorder.on_first_use`).

Outputs and inputs are kept by reference only: output summaries are computed by the
flusher (off the request), and input rows for drift and payload samples are kept only
when a cheap `random() < rate` says so, before anything is copied.
"""

from __future__ import annotations

import bisect
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Upper bounds in milliseconds; the last bucket is "+Inf". Prometheus-style cumulative
# counts are derived when exported.
LATENCY_BUCKETS_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


@dataclass(slots=True)
class PredictionRecord:
    """One answered (or refused) prediction request, as the serving edge saw it.

    Treat it as immutable. It is not declared frozen because a frozen dataclass's
    __init__ costs about twice as much (1.2 vs 2.3 µs here), on every prediction.
    """

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
    # The request and response bodies as received/sent, for payload sampling (kept only
    # when the endpoint's sample rate hits; redacted and size-capped by the flusher).
    payload: bytes | None = None
    response: bytes | None = None
    # The prefix of the application key that made the call: the flusher writes the keys'
    # "last used" time from these (never a database write per request).
    api_key: str | None = None
    # Endpoints with outlier_scoring (inference/runtime/outliers.py): the deployment's
    # scorer, for the flusher to score `inputs` with off the request path; or, when the
    # request was scored already (the caller asked for the scores), its counts.
    outlier_scorer: Any = None
    scored_rows: int = 0
    outlier_rows: int = 0
    # Shadow answers only: whether the shadow's outputs agreed with the answer the caller
    # got (inference.shadow.outputs_agree); None when nothing was compared.
    agreed: bool | None = None


# Per key and flush interval: at most this many output tensors are kept for the output
# summary (the rest are counted in `outputs_skipped`), and this many input rows sets for
# drift (a reservoir over the sampled ones).
OUTPUT_CAP = 2048
INPUT_RESERVOIR = 32
PAYLOAD_CAP = 256  # payload samples kept per flush interval per process
# Requests whose inputs are kept for outlier scoring per key and flush interval (2 s):
# beyond it they are not scored (the rate comes from those that were).
SCORE_CAP = 16384


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
    outputs: list[Mapping[str, Any]] = field(default_factory=list)
    outputs_skipped: int = 0
    inputs: list[Mapping[str, Any]] = field(default_factory=list)
    inputs_seen: int = 0
    scored_rows: int = 0
    outlier_rows: int = 0
    to_score: list[tuple[Any, Mapping[str, Any]]] = field(default_factory=list)  # (scorer, inputs)
    to_score_skipped: int = 0
    shadow_compared: int = 0  # shadow answers compared with the caller's answer
    shadow_agreed: int = 0  # ... and found to agree


@dataclass(frozen=True, slots=True)
class PayloadSample:
    at: float
    endpoint: str
    deployment: str
    role: str
    ok: bool
    latency_ms: float
    payload: bytes | None
    response: bytes | None


def _keep_inputs(stats: MinuteStats, inputs: Mapping[str, Any]) -> None:
    """A reservoir of INPUT_RESERVOIR sampled input sets (the caller holds the lock)."""
    stats.inputs_seen += 1
    if len(stats.inputs) < INPUT_RESERVOIR:
        stats.inputs.append(inputs)
    else:
        slot = random.randrange(stats.inputs_seen)
        if slot < INPUT_RESERVOIR:
            stats.inputs[slot] = inputs


_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


class Recorder:
    """Per-process counters keyed by (minute, endpoint, deployment, role)."""

    def __init__(self, *, on_first_use: Callable[[], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[int, str, str, str], MinuteStats] = {}
        self._samples: list[PayloadSample] = []
        self._keys_used: dict[str, float] = {}  # key prefix -> last use (unix time)
        # Inputs a model received inside a pipeline (record_inputs), per (minute, endpoint,
        # deployment, ""): only their `inputs` reservoir is used, nothing is counted.
        self._step_inputs: dict[tuple[int, str, str, str], MinuteStats] = {}
        self.dropped = 0  # records lost to errors inside the recorder itself
        self.samples_skipped = 0
        # Sampling rates per endpoint (0..1), refreshed by the flusher from the database.
        self.payload_rates: dict[str, float] = {}
        self.drift_rates: dict[str, float] = {}
        self.default_payload_rate = 0.0
        self.default_drift_rate = 0.0
        self._on_first_use = on_first_use
        self._started = False
        # MODELHUB_MONITORING_ENABLED=0 turns counting off (set in MonitoringConfig.ready);
        # it exists to measure what monitoring costs, not for everyday use.
        self.enabled = True
        self.pid = os.getpid()
        _recorders.add(self)

    def on_first_use(self, callback: Callable[[], None]) -> None:
        """Run `callback` on this recorder's first record in each process (after a fork
        too): monitoring starts its flusher thread so."""
        self._on_first_use = callback

    def _after_fork(self) -> None:
        # The parent's counts are the parent's to flush; the child starts empty, with a
        # fresh lock (another thread may have held the old one at fork time).
        self._lock = threading.Lock()
        self._stats = {}
        self._samples = []
        self._keys_used = {}
        self._step_inputs = {}
        self._started = False
        self.pid = os.getpid()

    def _first_use(self) -> None:
        self._started = True
        if self._on_first_use is not None:
            try:
                self._on_first_use()
            except Exception:
                pass

    def record(self, rec: PredictionRecord) -> None:
        if not self.enabled:
            return
        try:
            if not self._started:
                self._first_use()
            now = time.time()
            key = (int(now // 60), rec.endpoint, rec.deployment, rec.role)
            bucket = bisect.bisect_left(LATENCY_BUCKETS_MS, rec.latency_ms)
            sample_inputs = False
            if rec.inputs is not None:
                rate = self.drift_rates.get(rec.endpoint, self.default_drift_rate)
                sample_inputs = rate > 0 and random.random() < rate
            sample_payload = False
            if rec.payload is not None:
                rate = self.payload_rates.get(rec.endpoint, self.default_payload_rate)
                sample_payload = rate > 0 and random.random() < rate
            with self._lock:
                stats = self._stats.get(key)
                if stats is None:
                    stats = self._stats[key] = MinuteStats()
                stats.count += 1
                stats.rows += rec.rows
                if rec.api_key is not None:
                    self._keys_used[rec.api_key] = now
                stats.latency_buckets[bucket] += 1
                stats.latency_sum_ms += rec.latency_ms
                if not rec.ok:
                    kind = rec.error_kind or "error"
                    stats.errors[kind] = stats.errors.get(kind, 0) + 1
                if rec.scored_rows:
                    stats.scored_rows += rec.scored_rows
                    stats.outlier_rows += rec.outlier_rows
                elif rec.outlier_scorer is not None and rec.inputs is not None:
                    if len(stats.to_score) < SCORE_CAP:
                        stats.to_score.append((rec.outlier_scorer, rec.inputs))
                    else:
                        stats.to_score_skipped += 1
                if rec.batch_rows is not None:
                    stats.batch_rows_sum += rec.batch_rows
                    stats.batch_count += 1
                if rec.queue_ms is not None:
                    stats.queue_ms_sum += rec.queue_ms
                if rec.model_ms is not None:
                    stats.model_ms_sum += rec.model_ms
                if rec.agreed is not None:
                    stats.shadow_compared += 1
                    stats.shadow_agreed += rec.agreed
                if rec.outputs is not None:
                    if len(stats.outputs) < OUTPUT_CAP:
                        stats.outputs.append(rec.outputs)
                    else:
                        stats.outputs_skipped += 1
                if sample_inputs:
                    _keep_inputs(stats, rec.inputs)  # type: ignore[arg-type]
                if sample_payload:
                    if len(self._samples) < PAYLOAD_CAP:
                        self._samples.append(
                            PayloadSample(
                                now,
                                rec.endpoint,
                                rec.deployment,
                                rec.role,
                                rec.ok,
                                rec.latency_ms,
                                rec.payload,
                                rec.response,
                            )
                        )
                    else:
                        self.samples_skipped += 1
        except Exception:
            self.dropped += 1

    def record_inputs(self, endpoint: str, deployment: str, inputs: Mapping[str, Any]) -> None:
        """The inputs a model version received inside a pipeline (after feature lookup and
        transforms), for that version's drift and input samples on the endpoint.

        Sampled at the endpoint's drift rate like a request's inputs (one dict lookup and
        one random() when it misses); kept by reference in the same reservoir, under the
        version's own label, so drift compares them with the version's reference. Not a
        prediction: nothing is counted (the pipeline's request is).
        """
        if not self.enabled:
            return
        rate = self.drift_rates.get(endpoint, self.default_drift_rate)
        if rate <= 0 or random.random() >= rate:
            return
        try:
            if not self._started:
                self._first_use()
            key = (int(time.time() // 60), endpoint, deployment, "")
            with self._lock:
                stats = self._step_inputs.get(key)
                if stats is None:
                    stats = self._step_inputs[key] = MinuteStats()
                _keep_inputs(stats, inputs)
        except Exception:
            self.dropped += 1

    def drain_step_inputs(self) -> dict[tuple[int, str, str, str], MinuteStats]:
        """Take the inputs kept by record_inputs so far (the flusher calls this)."""
        with self._lock:
            taken, self._step_inputs = self._step_inputs, {}
        return taken

    def drain(self) -> dict[tuple[int, str, str, str], MinuteStats]:
        """Take everything counted so far (the flusher calls this)."""
        with self._lock:
            taken, self._stats = self._stats, {}
        return taken

    def drain_keys_used(self) -> dict[str, float]:
        """Take the application keys used since the last call: {key prefix: last use}."""
        with self._lock:
            taken, self._keys_used = self._keys_used, {}
        return taken

    def drain_samples(self) -> list[PayloadSample]:
        with self._lock:
            taken, self._samples = self._samples, []
        return taken


def _reset_after_fork() -> None:
    for rec in list(_recorders):
        rec._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


recorder = Recorder()


def record(rec: PredictionRecord) -> None:
    recorder.record(rec)


def record_inputs(endpoint: str, deployment: str, inputs: Mapping[str, Any]) -> None:
    recorder.record_inputs(endpoint, deployment, inputs)
