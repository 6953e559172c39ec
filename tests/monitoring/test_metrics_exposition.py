"""GET /metrics: Prometheus text format 0.0.4, totals across processes, serving keys when present."""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import pytest

from inference.telemetry.recorder import Recorder
from monitoring.flusher import Flusher
from tests.monitoring.conftest import rec

pytestmark = pytest.mark.django_db

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """A small parser for the text format: every line is a comment, TYPE/HELP or a sample."""
    types: dict[str, str] = {}
    samples = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            labels = dict(LABEL.findall(match.group(3) or ""))
            samples.append((match.group(1), labels, float(match.group(4))))
    for name, _, _ in samples:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"{name} has no TYPE line"
    return types, samples


def value(samples: list[Any], name: str, **labels: str) -> float:
    found = [v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items())]
    assert found, f"{name} {labels} missing"
    return sum(found)


def test_metrics_aggregate_every_process_and_parse(client: Any, redis_client: Any, settings: Any) -> None:
    for _ in range(2):  # two "processes"
        recorder = Recorder()
        for _ in range(9):
            recorder.record(rec(0.7, batch_rows=3, queue_ms=1.0, model_ms=2.0, outputs={"y": np.array([1.0])}))
        recorder.record(rec(20.0, ok=False, error_kind="deadline_exceeded"))
        Flusher(recorder, redis_url=settings.REDIS_URL).flush()
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    types, samples = parse(response.content.decode())
    assert types["modelhub_predictions_total"] == "counter"
    assert types["modelhub_prediction_latency_seconds"] == "histogram"
    labels = {"endpoint": "iris", "version": "iris:1", "role": "primary"}
    assert value(samples, "modelhub_predictions_total", **labels) == 20
    assert value(samples, "modelhub_prediction_errors_total", endpoint="iris", kind="deadline_exceeded") == 2
    assert value(samples, "modelhub_prediction_latency_seconds_bucket", **labels, le="0.001") == 18
    assert value(samples, "modelhub_prediction_latency_seconds_bucket", **labels, le="+Inf") == 20
    assert value(samples, "modelhub_prediction_latency_seconds_count", **labels) == 20
    assert value(samples, "modelhub_prediction_latency_seconds_sum", **labels) == pytest.approx(18 * 0.0007 + 0.04)
    assert value(samples, "modelhub_batch_rows_sum", **labels) == 54
    assert value(samples, "modelhub_queue_wait_seconds_total", **labels) == pytest.approx(0.018)
    assert value(samples, "modelhub_monitoring_dropped_records_total") == 0
    # Buckets are cumulative.
    buckets = [v for n, lab, v in samples if n == "modelhub_prediction_latency_seconds_bucket"]
    assert buckets == sorted(buckets)
    assert "modelhub_queue_depth" not in types  # the serving keys are absent: skipped


def test_inference_worker_heartbeats_are_exposed(client: Any, redis_client: Any) -> None:
    import orjson

    from inference import pool_protocol as wire

    def beat(worker: str, ts: float, ready: bool) -> None:
        deployment = {"endpoint": "iris", "model": "iris", "version": 1, "ready": ready, "device": "gpu"}
        deployment.update(provider="CUDAExecutionProvider", queue_depth=3)
        body = {"worker": worker, "device": "gpu", "ts": ts, "deployments": {"d1": deployment}}
        redis_client.set(wire.heartbeat_key(worker), orjson.dumps(body), ex=60)
        redis_client.zadd(wire.WORKERS_KEY, {worker: ts + 6})

    beat("gpu-0", time.time(), ready=True)
    beat("gpu-1", time.time(), ready=False)
    beat("dead", time.time() - 600, ready=True)  # its heartbeat expired: not listed
    _, samples = parse(client.get("/metrics").content.decode())
    assert value(samples, "modelhub_queue_depth", endpoint="iris", version="iris:1") == 3
    loaded = [lab for n, lab, _ in samples if n == "modelhub_worker_loaded_models"]
    assert [(lab["worker"], lab["provider"]) for lab in loaded] == [("gpu-0", "CUDAExecutionProvider")]
    ages = {lab["worker"] for n, lab, _ in samples if n == "modelhub_worker_heartbeat_age_seconds"}
    assert ages == {"gpu-0", "gpu-1"}


def test_label_values_are_escaped(client: Any, redis_client: Any, settings: Any) -> None:
    # An endpoint of its own: a background flusher of another test (or a server process of the
    # integration tests still winding down) may add error kinds of "iris" to the same Redis db.
    recorder = Recorder()
    recorder.record(rec(ok=False, endpoint="escapes", error_kind='bad "quote"\\ and\nnewline'))
    Flusher(recorder, redis_url=settings.REDIS_URL).flush()
    _, samples = parse(client.get("/metrics").content.decode())
    errors = [lab for n, lab, _ in samples if n == "modelhub_prediction_errors_total"]
    kinds = [lab["kind"] for lab in errors if lab.get("endpoint") == "escapes"]
    assert kinds == ['bad \\"quote\\"\\\\ and\\nnewline']


def test_a_metrics_token_is_required_when_configured(client: Any, settings: Any, redis_client: Any) -> None:
    settings.MONITORING_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_without_redis_metrics_come_from_the_rollup_table(client: Any, settings: Any) -> None:
    settings.REDIS_URL = ""
    recorder = Recorder()
    for _ in range(4):
        recorder.record(rec())
    Flusher(recorder, redis_url="").flush()
    _, samples = parse(client.get("/metrics").content.decode())
    assert value(samples, "modelhub_predictions_total", endpoint="iris") == 4


def test_model_memory_budgets_evictions_and_cold_starts_are_exposed_for_web_processes_and_workers(
    client: Any, redis_client: Any, tmp_path: Any
) -> None:
    import orjson

    from inference import density
    from inference import pool_protocol as wire
    from inference.runtime.repository import ModelRepository
    from inference.transport import in_process_transport
    from tests import density as models

    paths = models.model_files(tmp_path, 3)
    transport = in_process_transport()
    own, transport.repository = transport.repository, ModelRepository(budget_bytes=models.budget_for(2.5, paths[0]))
    try:
        for key in ("a", "b", "c", "a"):  # c unloads a, a comes back: one cold start
            transport.repository.load(key, paths["abc".index(key)], intra_op_threads=1)
        density.publish(redis_client)
    finally:
        transport.repository.close()
        transport.repository = own
    worker_memory = {**transport.repository.memory_report(), "budget_bytes": 1000, "cold_starts": 4}
    body = {"worker": "cpu-0", "device": "cpu", "ts": time.time(), "deployments": {}, "memory": worker_memory}
    redis_client.set(wire.heartbeat_key("cpu-0"), orjson.dumps(body), ex=60)
    redis_client.zadd(wire.WORKERS_KEY, {"cpu-0": time.time() + 6})

    types, samples = parse(client.get("/metrics").content.decode())

    web = density.process_name()
    assert types["modelhub_cold_start_seconds"] == "histogram"
    assert value(samples, "modelhub_cold_start_seconds_count", process=web) == 1
    assert value(samples, "modelhub_model_evictions_total", process=web) == 2
    assert value(samples, "modelhub_models_loaded", process=web) == 2
    assert value(samples, "modelhub_model_memory_budget_bytes", process="worker:cpu-0") == 1000
    assert value(samples, "modelhub_cold_start_seconds_count", process="worker:cpu-0") == 4
