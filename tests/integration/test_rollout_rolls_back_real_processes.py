"""A real `celery beat` and worker advance a rollout on PostgreSQL; a candidate that answers
errors on real requests is rolled back by itself, and no request hangs meanwhile; in a
shadow phase, the agreement of the candidate's shadow answers (compared in this process,
read by the worker through Redis) decides whether it goes on or is rolled back."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from audit.models import AuditEvent
from inference.models import Rollout, TrafficPolicyRevision
from registry.models import ModelVersion
from tests.conftest import client_for
from tests.integration.conftest import ROOT, WorkerProcess, wait_for
from tests.onnx_models import lookup

pytestmark = pytest.mark.integration

ROW = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


@pytest.fixture
def rollout_beat(celery_worker: WorkerProcess, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real `celery beat` evaluating rollouts every second, onto the test worker's queue."""
    from workers.celery import app

    log = tmp_path / "beat.log"
    env = {
        **os.environ,
        "MODELHUB_CELERY_EAGER": "0",
        "MODELHUB_ROLLOUT_EVAL_INTERVAL_S": "1",
        "MODELHUB_MONITORING_BEAT_QUEUE": app.conf.task_default_queue,
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [sys.executable, "-m", "celery", "-A", "workers.celery", "beat", "-s", str(tmp_path / "schedule")]
    cmd += ["--pidfile", str(tmp_path / "beat.pid"), "-l", "info"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    beat = WorkerProcess(proc, "beat", log)
    try:
        yield beat
    finally:
        beat.stop()


def _upload(api: APIClient, data: bytes) -> int:
    response = api.post(
        "/api/v1/models/lookup/versions/",
        {"artifact": SimpleUploadedFile("m.onnx", data)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    number = response.json()["version"]
    wait_for(
        lambda: ModelVersion.objects.get(model__name="lookup", version=number).status == "ready",
        timeout=60,
        what=f"the worker to validate lookup v{number}",
    )
    return number


class Traffic:
    """Requests from a thread, each timed: (started, status, version that answered, seconds)."""

    def __init__(self, endpoint: str = "lookup") -> None:
        self.endpoint = endpoint
        self.results: list[tuple[float, int, int | None, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connection

        client = Client()
        try:
            while not self.stop.is_set():
                started = time.monotonic()
                response = client.post(
                    f"/api/v1/endpoints/{self.endpoint}/predict", ROW, content_type="application/json"
                )
                version = response.json().get("version") if response.status_code == 200 else None
                self.results.append((time.time(), response.status_code, version, time.monotonic() - started))
                time.sleep(0.01)
        finally:
            connection.close()


def test_a_candidate_that_answers_errors_is_rolled_back_by_beat(
    rollout_beat: WorkerProcess, celery_worker: WorkerProcess, engineer: Any
) -> None:
    api = client_for(engineer)
    assert api.post("/api/v1/models/", {"name": "lookup"}, format="json").status_code == 201
    stable, candidate = _upload(api, lookup(16)), _upload(api, lookup(3))
    response = api.post(
        "/api/v1/endpoints/",
        {
            "name": "lookup",
            "require_key": False,
            "routes": [{"model": "lookup", "version": stable, "role": "primary", "weight": 100}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    plan = {
        "steps": [{"weight": 50, "bake_s": 30}, {"weight": 100, "bake_s": 30}],
        "checks": {"error_rate": {"max_increase": 0.05, "min_requests": 5}},
    }
    traffic = Traffic()
    traffic.thread.start()
    try:
        response = api.post("/api/v1/endpoints/lookup/rollouts", {"version": candidate, "plan": plan}, format="json")
        assert response.status_code == 201, response.content
        rollout = Rollout.objects.get(pk=response.json()["id"])
        wait_for(
            lambda: Rollout.objects.get(pk=rollout.pk).state == "rolled_back",
            timeout=90,
            what=f"beat to roll the rollout back; beat log:\n{rollout_beat.output()[-3000:]}\n"
            f"worker log:\n{celery_worker.output()[-5000:]}",
        )
        rolled_back_at = time.time()
        # The stable version answers everything again once the router has the new split.
        wait_for(
            lambda: len(traffic.results) > 20 and all(r[1] == 200 for r in traffic.results[-20:]),
            timeout=60,
            what="twenty answers in a row from the stable version",
        )
    finally:
        traffic.stop.set()
        traffic.thread.join(60)
    current = TrafficPolicyRevision.objects.get(endpoint__name="lookup", is_current=True)
    assert [(r["version"], r["role"], r["weight"]) for r in current.routes] == [(stable, "primary", 100)]
    assert current.comment.startswith(f"rollout #{rollout.pk}: failed: error_rate")
    decision = AuditEvent.objects.get(action="rollout.rollback", object_id=str(rollout.pk))
    check = decision.after["analysis"]["checks"][0]
    assert check["check"] == "error_rate" and check["result"] == "fail"
    assert check["candidate"] == 1.0 and check["stable"] == 0.0 and check["candidate_requests"] >= 5
    assert decision.actor_name == "system"
    kinds = list(rollout.events.values_list("kind", flat=True))
    assert kinds[:2] == ["start", "step"] and kinds[-1] == "rollback"
    # Errors came only from the candidate (ONNX Runtime refuses its Gather indices: a 4xx
    # naming the input), answers only from the stable version, and no request hung
    # (generous: a hang is minutes).
    errors = [r for r in traffic.results if r[1] != 200]
    assert errors and all(r[1] >= 400 for r in errors)
    assert {r[2] for r in traffic.results if r[1] == 200} == {stable}
    assert max(r[3] for r in traffic.results) < 30
    first_error = min(r[0] for r in errors)
    print(
        f"first candidate error -> rollback revision {current.created_at.timestamp() - first_error:.2f} s, "
        f"-> seen by the test {rolled_back_at - first_error:.2f} s; last error "
        f"{max(r[0] for r in errors) - current.created_at.timestamp():+.2f} s after the revision"
    )


@pytest.mark.parametrize(
    ("offset", "outcome"),
    [(1.0, "rolled_back"), (0.0, "succeeded")],
    ids=["a candidate that disagrees is rolled back", "one that agrees goes on"],
)
def test_shadow_agreement_decides_the_shadow_phase_on_real_processes(
    rollout_beat: WorkerProcess, celery_worker: WorkerProcess, engineer: Any, offset: float, outcome: str
) -> None:
    api = client_for(engineer)
    assert api.post("/api/v1/models/", {"name": "lookup"}, format="json").status_code == 201
    # Same answers for real rows (a bigger table), or every answer one more (another offset).
    stable, candidate = _upload(api, lookup(16)), _upload(api, lookup(17, offset=offset))
    name = f"shadowed-{outcome.replace('_', '-')}"  # its own minute keys in Redis
    response = api.post(
        "/api/v1/endpoints/",
        {
            "name": name,
            "require_key": False,
            "routes": [{"model": "lookup", "version": stable, "role": "primary", "weight": 100}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    plan = {
        "shadow": {"bake_s": 6},
        "steps": [{"weight": 100, "bake_s": 1}],
        "checks": {"shadow_agreement": {"min_agreement": 0.95, "min_comparisons": 10}},
    }
    traffic = Traffic(name)
    traffic.thread.start()
    try:
        response = api.post(f"/api/v1/endpoints/{name}/rollouts", {"version": candidate, "plan": plan}, format="json")
        assert response.status_code == 201, response.content
        assert response.json()["phase"] == "shadow"
        rollout = Rollout.objects.get(pk=response.json()["id"])
        wait_for(
            lambda: Rollout.objects.get(pk=rollout.pk).state not in Rollout.ACTIVE,
            timeout=90,
            what=f"beat to finish the rollout; beat log:\n{rollout_beat.output()[-3000:]}\n"
            f"worker log:\n{celery_worker.output()[-5000:]}",
        )
    finally:
        traffic.stop.set()
        traffic.thread.join(60)
    rollout.refresh_from_db()
    assert rollout.state == outcome, rollout.reason
    decided = AuditEvent.objects.filter(
        action="rollout.rollback" if outcome == "rolled_back" else "rollout.analysis", object_id=str(rollout.pk)
    ).get()
    check = decided.after["analysis"]["checks"][0]
    assert check["check"] == "shadow_agreement" and check["compared"] >= 10
    assert (check["agreement"], check["result"]) == ((0.0, "fail") if offset else (1.0, "pass"))
    current = TrafficPolicyRevision.objects.get(endpoint__name=name, is_current=True)
    routes = [(r["version"], r["role"], r["weight"]) for r in current.routes]
    assert routes == ([(stable, "primary", 100)] if offset else [(candidate, "primary", 100)])
    # The shadow never answered a caller: every answer came from the stable version until
    # the candidate took the traffic, and none failed or hung.
    assert traffic.results and all(r[1] == 200 for r in traffic.results)
    assert max(r[3] for r in traffic.results) < 30
    if offset:
        assert {r[2] for r in traffic.results} == {stable}
