"""Prometheus text exposition (format 0.0.4), written by hand.

Counters are totals across every process: read from Redis (`mh:tot:*`, incremented by each
process's flusher), or on the embedded default summed from the roll-up table. Serving keys
(queue depth, worker heartbeats) are read when the serving side writes them, skipped when absent.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from django.conf import settings

from inference import density
from inference.bandits.ledger import dropped_totals
from inference.pipelines.step_metrics import BUCKETS_MS, totals
from inference.pool import worker_status
from inference.runtime.repository import COLD_START_BUCKETS_S
from inference.telemetry.recorder import LATENCY_BUCKETS_MS
from monitoring import keys
from monitoring.flusher import flusher
from monitoring.models import MetricRollup
from monitoring.rollups import ROLLUP_SUMS, add_rollup

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: str) -> None:
        self.lines.append(f"{name}{_labels(**labels)} {_num(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _totals_from_redis(client: Any) -> dict[tuple[str, str, str], dict[str, Any]]:
    names = sorted(n.decode() for n in client.smembers(keys.TOTALS_INDEX))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall("mh:tot:" + name)
    return {keys.split_series(name): keys.decode_hash(raw) for name, raw in zip(names, pipe.execute(), strict=True)}


def _totals_from_database() -> dict[tuple[str, str, str], dict[str, Any]]:
    totals: dict[tuple[str, str, str], dict[str, Any]] = defaultdict(dict)
    for row in MetricRollup.objects.values("endpoint", "deployment", "role", *ROLLUP_SUMS, "errors", "latency_buckets"):
        add_rollup(totals[(row["endpoint"], row["deployment"], row["role"])], row)
    return dict(totals)


def render_metrics() -> str:
    """The whole /metrics page."""
    out = _Writer()
    client = None
    redis_error = None
    totals: dict[tuple[str, str, str], dict[str, Any]] = {}
    dropped_shared = 0
    if settings.REDIS_URL:
        try:
            import redis

            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
            totals = _totals_from_redis(client)
            dropped_shared = int(client.get(keys.DROPPED) or 0)
        except Exception as exc:
            redis_error, client = str(exc), None
    else:
        totals = _totals_from_database()
    _write_predictions(out, totals)
    _write_pipeline_steps(out, client)
    _write_bandit_ledger(out)
    if client is not None:
        _write_serving(out, client)
        _write_density(out, client)
    out.family(
        "modelhub_monitoring_dropped_records_total",
        "counter",
        "Prediction records lost because the metrics store could not be written.",
    )
    out.sample("modelhub_monitoring_dropped_records_total", dropped_shared + flusher._dropped_unreported)
    out.family("modelhub_monitoring_store_up", "gauge", "1 when /metrics could read the shared metrics store.")
    out.sample("modelhub_monitoring_store_up", 0 if redis_error else 1)
    return out.text()


def _write_pipeline_steps(out: _Writer, client: Any) -> None:
    """Per-step latency and errors of the pipelines, summed over every process (each
    flusher publishes its process's counts to Redis, inference/pipelines/step_metrics.py;
    without Redis, this process's)."""
    try:
        stats = totals(client)
    except Exception:  # noqa: BLE001 - Redis away: modelhub_monitoring_store_up says so
        stats = totals(None)
    if not stats:
        return
    out.family("modelhub_pipeline_step_calls_total", "counter", "Pipeline steps run, by pipeline version and step.")
    for (pipeline, step, kind), s in sorted(stats.items()):
        out.sample("modelhub_pipeline_step_calls_total", s.calls, pipeline=pipeline, step=step, kind=kind)
    out.family(
        "modelhub_pipeline_step_errors_total", "counter", "Pipeline steps that raised (the request was refused)."
    )
    for (pipeline, step, kind), s in sorted(stats.items()):
        out.sample("modelhub_pipeline_step_errors_total", s.errors, pipeline=pipeline, step=step, kind=kind)
    name = "modelhub_pipeline_step_latency_ms"
    out.family(name, "histogram", "Time per pipeline step, milliseconds.")
    for (pipeline, step, kind), s in sorted(stats.items()):
        labels = {"pipeline": pipeline, "step": step, "kind": kind}
        running = 0
        for bound, count in zip(BUCKETS_MS, s.buckets, strict=True):
            running += count
            out.sample(f"{name}_bucket", running, le=_num(float(bound)), **labels)
        out.sample(f"{name}_bucket", s.calls, le="+Inf", **labels)
        out.sample(f"{name}_sum", s.seconds * 1000.0, **labels)
        out.sample(f"{name}_count", s.calls, **labels)


def _write_bandit_ledger(out: _Writer) -> None:
    """Bandit decisions the feedback ledger never recorded, every process's (inference/bandits/ledger.py)."""
    out.family(
        "modelhub_bandit_ledger_dropped_total",
        "counter",
        "Bandit decisions served but not recorded in the feedback ledger (their feedback is a 404), by reason.",
    )
    for reason, count in sorted(dropped_totals().items()):
        out.sample("modelhub_bandit_ledger_dropped_total", count, reason=reason)


def _write_predictions(out: _Writer, totals: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    series = sorted(totals.items())
    out.family("modelhub_predictions_total", "counter", "Prediction requests answered or refused.")
    for (endpoint, version, role), t in series:
        out.sample("modelhub_predictions_total", t["count"], endpoint=endpoint, version=version, role=role)
    out.family("modelhub_prediction_rows_total", "counter", "Rows (instances) in prediction requests.")
    for (endpoint, version, role), t in series:
        out.sample("modelhub_prediction_rows_total", t["rows"], endpoint=endpoint, version=version, role=role)
    out.family("modelhub_prediction_errors_total", "counter", "Prediction requests that failed, by kind.")
    for (endpoint, version, role), t in series:
        for kind, count in sorted(t["errors"].items()):
            out.sample(
                "modelhub_prediction_errors_total", count, endpoint=endpoint, version=version, role=role, kind=kind
            )
    out.family("modelhub_prediction_latency_seconds", "histogram", "Request latency seen by the serving edge.")
    for (endpoint, version, role), t in series:
        cumulative = 0
        labels = {"endpoint": endpoint, "version": version, "role": role}
        for edge, count in zip((*LATENCY_BUCKETS_MS, math.inf), t["latency_buckets"], strict=True):
            cumulative += count
            le = "+Inf" if math.isinf(edge) else _num(edge / 1000)
            out.sample("modelhub_prediction_latency_seconds_bucket", cumulative, **labels, le=le)
        out.sample("modelhub_prediction_latency_seconds_sum", t["latency_sum_ms"] / 1000, **labels)
        out.sample("modelhub_prediction_latency_seconds_count", t["count"], **labels)
    out.family("modelhub_batch_rows", "summary", "Rows in the ONNX Runtime call each request ran in.")
    for (endpoint, version, role), t in series:
        if t["batch_count"]:
            labels = {"endpoint": endpoint, "version": version, "role": role}
            out.sample("modelhub_batch_rows_sum", t["batch_rows_sum"], **labels)
            out.sample("modelhub_batch_rows_count", t["batch_count"], **labels)
    out.family(
        "modelhub_outlier_scored_rows_total", "counter", "Rows scored against the version's reference statistics."
    )
    for (endpoint, version, role), t in series:
        if t.get("scored_rows"):
            out.sample(
                "modelhub_outlier_scored_rows_total", t["scored_rows"], endpoint=endpoint, version=version, role=role
            )
    out.family("modelhub_outlier_rows_total", "counter", "Scored rows found outliers (robust z or Mahalanobis).")
    for (endpoint, version, role), t in series:
        if t.get("scored_rows"):
            out.sample("modelhub_outlier_rows_total", t["outlier_rows"], endpoint=endpoint, version=version, role=role)
    out.family("modelhub_queue_wait_seconds_total", "counter", "Time requests waited for a batch, summed.")
    for (endpoint, version, role), t in series:
        out.sample(
            "modelhub_queue_wait_seconds_total", t["queue_ms_sum"] / 1000, endpoint=endpoint, version=version, role=role
        )
    out.family("modelhub_model_seconds_total", "counter", "Time spent in ONNX Runtime for requests, summed.")
    for (endpoint, version, role), t in series:
        out.sample(
            "modelhub_model_seconds_total", t["model_ms_sum"] / 1000, endpoint=endpoint, version=version, role=role
        )


def _write_serving(out: _Writer, client: Any) -> None:
    """Queue depth, heartbeats and loaded models, from the inference workers' heartbeats."""
    try:
        beats = worker_status(client)
    except Exception:
        return
    if not beats:
        return
    now = time.time()
    depth: dict[tuple[str, str], int] = {}
    out.family("modelhub_worker_heartbeat_age_seconds", "gauge", "Seconds since each inference worker's heartbeat.")
    for beat in beats:
        out.sample(
            "modelhub_worker_heartbeat_age_seconds",
            round(now - float(beat.get("ts", now)), 3),
            worker=str(beat.get("worker", "")),
            device=str(beat.get("device", "")),
        )
        for deployment in beat.get("deployments", {}).values():
            label = (str(deployment.get("endpoint", "")), f"{deployment.get('model')}:{deployment.get('version')}")
            # Workers share one queue per deployment, so each reports the same depth.
            depth[label] = max(depth.get(label, 0), int(deployment.get("queue_depth", 0)))
    out.family("modelhub_queue_depth", "gauge", "Requests waiting in a worker-pool deployment's queue.")
    for (endpoint, version), value in sorted(depth.items()):
        out.sample("modelhub_queue_depth", value, endpoint=endpoint, version=version)
    out.family("modelhub_worker_loaded_models", "gauge", "1 for each deployment a worker holds warm, by provider.")
    for beat in beats:
        for deployment in beat.get("deployments", {}).values():
            if deployment.get("ready"):
                out.sample(
                    "modelhub_worker_loaded_models",
                    1,
                    worker=str(beat.get("worker", "")),
                    endpoint=str(deployment.get("endpoint", "")),
                    version=f"{deployment.get('model')}:{deployment.get('version')}",
                    device=str(deployment.get("device", "")),
                    provider=str(deployment.get("provider", "")),
                )


def _write_density(out: _Writer, client: Any) -> None:
    """Model-memory budgets, evictions and cold starts of every serving process: web
    processes' reports (inference/density.py) and inference workers' heartbeats."""
    try:
        reports = density.web_reports(client)
        reports += [
            {"process": f"worker:{b.get('worker', '')}", **b["memory"]}
            for b in worker_status(client)
            if b.get("memory")
        ]
    except Exception:
        return
    if not reports:
        return
    gauges = (
        (
            "modelhub_model_memory_budget_bytes",
            "budget_bytes",
            "gauge",
            "Model-memory budget of a serving process (0: none).",
        ),
        (
            "modelhub_model_memory_used_bytes",
            "used_bytes",
            "gauge",
            "Memory charged to the models a serving process holds.",
        ),
        ("modelhub_process_resident_bytes", "rss_bytes", "gauge", "Resident set size of a serving process."),
        ("modelhub_models_loaded", "models", "gauge", "Models a serving process holds loaded."),
        ("modelhub_model_loads_total", "loads", "counter", "Model loads in a serving process."),
        ("modelhub_model_evictions_total", "evictions", "counter", "Models unloaded to make room under the budget."),
        (
            "modelhub_cold_start_refusals_total",
            "cold_refusals",
            "counter",
            "Requests refused (503) because a reload would not fit their deadline.",
        ),
    )
    for name, field, kind, help_text in gauges:
        out.family(name, kind, help_text)
        for report in reports:
            out.sample(name, int(report.get(field, 0)), process=str(report.get("process", "")))
    out.family("modelhub_cold_start_seconds", "histogram", "Reloads of models unloaded to make room (load + warm-up).")
    for report in reports:
        cumulative = 0
        process = str(report.get("process", ""))
        buckets = report.get("cold_start_buckets") or [0] * (len(COLD_START_BUCKETS_S) + 1)
        for edge, count in zip((*COLD_START_BUCKETS_S, math.inf), buckets, strict=True):
            cumulative += int(count)
            le = "+Inf" if math.isinf(edge) else _num(float(edge))
            out.sample("modelhub_cold_start_seconds_bucket", cumulative, process=process, le=le)
        out.sample(
            "modelhub_cold_start_seconds_sum", float(report.get("cold_start_ms_total", 0)) / 1000, process=process
        )
        out.sample("modelhub_cold_start_seconds_count", int(report.get("cold_starts", 0)), process=process)
