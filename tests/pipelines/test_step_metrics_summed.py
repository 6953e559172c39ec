"""Per-step metrics are summed across processes (issue #14, "Observability"): each process's
flusher publishes its step counts to Redis, and /metrics, answered by any one process, shows
every process's (plus its own not yet published ones), counted once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from inference import endpoints, traffic
from inference.pipelines import services as pipeline_services
from inference.telemetry.recorder import Recorder
from monitoring.flusher import Flusher
from tests.inference.conftest import fresh_edge_cache, version_add  # noqa: F401 - the autouse fixture
from tests.onnx_models import tiny_classifier_model

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]

# Another web process: its own counters, published by its flusher (3 calls, 1 of them an error).
OTHER_PROCESS = """
import sys, redis
from inference.pipelines import step_metrics
for ok in (True, True, False):
    step_metrics.count(sys.argv[1], "score", "model", 0.002, ok)
step_metrics.publish(redis.Redis.from_url(sys.argv[2]))
"""


def _metric(text: str, family: str, pipeline: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.startswith(family + "{") and f'pipeline="{pipeline}"' in ln]
    assert len(lines) == 1, lines  # one series for every process (no pid label)
    return float(lines[0].rsplit(" ", 1)[1])


def test_metrics_sum_the_step_counts_of_every_process(client: Any, engineer: Any, settings: Any) -> None:
    if not settings.REDIS_URL:
        pytest.skip("the shared totals live in Redis")
    name = f"steps{uuid.uuid4().hex[:8]}"
    version_add(name, tiny_classifier_model(features=4, seed=3).SerializeToString(), engineer)
    spec = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": ["label"],
        "steps": [{"name": "score", "kind": "model", "model": name, "version": 1}],
    }
    pipeline_services.pipeline_create(name=name, spec=spec, user=engineer)
    endpoint = endpoints.endpoint_create(name=name, user=engineer, require_key=False)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"pipeline": name, "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    label = f"{name}:1"
    subprocess.run([sys.executable, "-c", OTHER_PROCESS, label, settings.REDIS_URL], cwd=ROOT, check=True)
    body = orjson.dumps({"inputs": {"x": np.ones((2, 4), np.float32).tolist()}})
    for _ in range(2):  # this process: 2 calls, not yet published
        response = client.post(f"/api/v1/endpoints/{name}/predict", body, content_type="application/json")
        assert response.status_code == 200, response.content

    text = client.get("/metrics").content.decode()
    assert _metric(text, "modelhub_pipeline_step_calls_total", label) == 5
    assert _metric(text, "modelhub_pipeline_step_errors_total", label) == 1

    Flusher(Recorder(), redis_url=settings.REDIS_URL, interval_s=0).flush()  # this process's flusher publishes
    text = client.get("/metrics").content.decode()
    assert _metric(text, "modelhub_pipeline_step_calls_total", label) == 5  # counted once
    assert _metric(text, "modelhub_pipeline_step_latency_ms_count", label) == 5
