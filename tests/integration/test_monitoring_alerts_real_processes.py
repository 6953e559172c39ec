"""Alert evaluation with real Celery processes: notifications never hold up evaluation, and a
real `celery beat` drives a rule from firing to resolved."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from monitoring import alerts, selectors
from monitoring.models import AlertEvent, MetricRollup
from tests.integration.conftest import ROOT, WorkerProcess, wait_for

# Evaluation reads the live minutes in Redis too: an autouse fixture drops other tests' leftovers.
from tests.monitoring.conftest import no_live_minutes_from_other_tests  # noqa: F401

pytestmark = pytest.mark.integration


class Hook:
    """A local HTTP server: `hang=True` accepts the request and never answers until released."""

    def __init__(self, *, hang: bool) -> None:
        self.received: list[bytes] = []
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                hook.received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if hang:
                    hook.release.wait(60)
                    return
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[tuple[Hook, Hook]]:
    hanging, answering = Hook(hang=True), Hook(hang=False)
    yield hanging, answering
    hanging.close()
    answering.close()


@pytest.fixture
def short_notify_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker process reads this from its environment (it starts after this fixture)."""
    monkeypatch.setenv("MODELHUB_ALERT_NOTIFY_TIMEOUT_S", "2")


def failing_minutes(deployment: str = "iris:1", errors: int = 50) -> None:
    now = timezone.now()
    for ago in (1, 2):
        MetricRollup.objects.update_or_create(
            endpoint="iris",
            deployment=deployment,
            role="primary",
            granularity="minute",
            minute=(now - timedelta(minutes=ago)).replace(second=0, microsecond=0),
            defaults={
                "count": 100,
                "error_count": errors,
                "errors": {"internal": errors} if errors else {},
                "latency_buckets": [100] + [0] * 14,
            },
        )


def test_a_hanging_webhook_does_not_block_other_rules(
    short_notify_timeout: None, celery_worker: Any, hooks: tuple[Hook, Hook]
) -> None:
    from inference.models import Endpoint

    hanging, answering = hooks
    Endpoint.objects.create(name="iris")
    values = {"metric": "error_rate", "threshold": 0.1, "channel": "webhook"}
    first = alerts.alert_rule_create(endpoint_name="iris", values={**values, "target": hanging.url}, user=None)
    second = alerts.alert_rule_create(endpoint_name="iris", values={**values, "target": answering.url}, user=None)
    failing_minutes()
    events = alerts.alerts_evaluate()
    assert len(events) == 2  # both rules evaluated, whatever their webhooks do
    wait_for(lambda: answering.received, timeout=30, what="the answering webhook to be called")
    # ... while the hanging webhook still holds its request open.
    assert hanging.received and not hanging.release.is_set()
    assert b'"state": "firing"' in answering.received[0] or b'"state":"firing"' in answering.received[0]
    wait_for(lambda: AlertEvent.objects.get(rule=second).notification == "sent", timeout=30, what="sent")
    event = wait_for(
        lambda: AlertEvent.objects.filter(rule=first, notification="failed").first(),
        timeout=30,
        what="the hanging webhook to time out",
    )
    assert "timed out" in event.notification_detail.lower()


@pytest.fixture
def celery_beat(celery_worker: Any, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `celery beat` evaluating alert rules every second, onto the test worker's queue."""
    from workers.celery import app

    log = tmp_path / "beat.log"
    env = {
        **os.environ,
        "REDIS_URL": os.environ.get("REDIS_URL", ""),
        "MODELHUB_CELERY_EAGER": "0",
        "MODELHUB_ALERT_EVAL_INTERVAL_S": "1",
        "MODELHUB_MONITORING_BEAT_QUEUE": app.conf.task_default_queue,
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery",
        "beat",
        "-s",
        str(tmp_path / "beat-schedule"),
        "--pidfile",
        str(tmp_path / "beat.pid"),
        "-l",
        "info",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    beat = WorkerProcess(proc, "beat", log)
    try:
        yield beat
    finally:
        beat.stop()


def test_real_beat_and_worker_fire_then_resolve_a_rule(celery_beat: WorkerProcess) -> None:
    from inference.models import Endpoint

    Endpoint.objects.create(name="iris")
    rule = alerts.alert_rule_create(endpoint_name="iris", values={"metric": "error_rate", "threshold": 0.1}, user=None)
    failing_minutes()
    wait_for(
        lambda: AlertEvent.objects.filter(rule=rule, kind="firing").exists(),
        timeout=60,
        what=f"beat to fire the rule; beat log:\n{celery_beat.output()}",
    )
    # Clear every failing minute, not just the last two: a minute may have turned since.
    MetricRollup.objects.filter(endpoint="iris").update(error_count=0, errors={})
    failing_minutes(errors=0)
    wait_for(
        lambda: AlertEvent.objects.filter(rule=rule, kind="resolved").exists(),
        timeout=60,
        what="beat to resolve the rule",
    )
    kinds = list(AlertEvent.objects.filter(rule=rule).order_by("id").values_list("kind", flat=True))
    assert kinds == ["firing", "resolved"]  # de-duplicated: one firing however many evaluations
    assert "monitoring.evaluate_alerts" in celery_beat.output()


def test_a_one_minute_rule_fires_on_real_traffic_before_any_roll_up(celery_beat: WorkerProcess, engineer: Any) -> None:
    """200 errors in 300 requests within one minute: a `> 0.2 over 1 minute` rule fires from
    the live minute in Redis, long before beat could roll that minute up (90 s grace)."""
    from django.test import Client

    from inference.routing_cache import edge_cache
    from inference.telemetry.recorder import recorder
    from monitoring.flusher import flush_now
    from tests.inference.conftest import ROWS, iris_served_with_key
    from workers.celery import app

    edge_cache.clear()
    recorder.drain()  # counts earlier tests left in this process: not this test's traffic
    app.conf.task_always_eager = True  # validate the demo upload here; the worker is for alerts
    try:
        key = iris_served_with_key(engineer, "alerts")
    finally:
        app.conf.task_always_eager = False
    rule = alerts.alert_rule_create(
        endpoint_name="iris",
        values={"metric": "error_rate", "comparison": ">", "threshold": 0.2, "window_minutes": 1},
        user=None,
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}")
    statuses = []
    for i in range(300):
        body = {"instances": ROWS} if i % 3 == 0 else {"instances": [[1.0, 2.0]]}  # 2 of 3: wrong shape
        statuses.append(
            client.post("/api/v1/endpoints/iris/predict", body, content_type="application/json").status_code
        )
    assert statuses.count(200) == 100 and statuses.count(400) == 200
    flush_now()  # the flusher thread would do it within 2 s; this makes the test not wait for it
    event = wait_for(
        lambda: AlertEvent.objects.filter(rule=rule, kind="firing").first(),
        timeout=60,
        what=f"beat to fire the 1-minute rule; beat log:\n{celery_beat.output()}",
    )
    assert event.value == pytest.approx(200 / 300, abs=0.01)
    assert not MetricRollup.objects.filter(endpoint="iris").exists()  # fired from the live minute
    # The same beat (through the worker) says the periodic jobs run: the Alerts page shows no warning.
    wait_for(lambda: selectors.scheduler_status()["running"], timeout=30, what="the scheduler heartbeat")
    edge_cache.clear()
