"""A Redis that cannot be reached never fails a prediction: the loss is counted and shown."""

from __future__ import annotations

from typing import Any

import pytest

from monitoring.flusher import Flusher
from tests.monitoring.conftest import rec


def test_a_closed_port_does_not_raise_and_counts_the_dropped_records(recorder: Any) -> None:
    flusher = Flusher(recorder, redis_url="redis://127.0.0.1:1/0", interval_s=0)
    for _ in range(7):
        recorder.record(rec())
    assert flusher.flush() == 0
    assert flusher.dropped == 7
    assert "Redis write failed, 7 records dropped" in (flusher.last_error or "")
    # Recording goes on afterwards.
    recorder.record(rec())
    flusher.flush()
    assert flusher.dropped == 8


@pytest.mark.django_db
def test_the_loss_shows_in_metrics_and_readiness(client: Any, redis_client: Any, settings: Any) -> None:
    from inference.telemetry.recorder import record
    from monitoring import flusher as flusher_module

    settings.MONITORING_FLUSH_INTERVAL_S = 0  # no background thread in this test
    default = flusher_module.flusher
    saved = (default._redis_url, default._client, default.dropped, default._dropped_unreported)
    default._redis_url, default._client = "redis://127.0.0.1:1/0", None
    try:
        for _ in range(5):
            record(rec(endpoint="lost"))
        flusher_module.flush_now()
        ready = client.get("/api/v1/health/ready").json()
        assert ready["checks"]["monitoring"]["dropped_records"] >= 5
        assert ready["checks"]["monitoring"]["last_error"]
        text = client.get("/metrics").content.decode()
        assert _value(text, "modelhub_monitoring_dropped_records_total") >= 5
        # Once Redis is back, the loss is reported there for every process to see.
        default._redis_url, default._client = settings.REDIS_URL, None
        flusher_module.flush_now()
        assert int(redis_client.get("mh:dropped")) >= 5
    finally:
        default._redis_url, default._client = saved[0], None
        default.dropped, default._dropped_unreported = saved[2], saved[3]


def _value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.django_db
def test_a_flusher_thread_that_died_makes_the_process_unready(client: Any) -> None:
    import threading

    from monitoring import flusher as flusher_module

    default = flusher_module.flusher
    saved = default._thread
    dead = threading.Thread(target=lambda: None)
    dead.start()
    dead.join()
    default._thread = dead
    try:
        response = client.get("/api/v1/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["monitoring"] == {
            **response.json()["checks"]["monitoring"],
            "ok": False,
            "running": False,
        }
    finally:
        default._thread = saved
