"""The embedded default (two web processes on one SQLite file, no Redis, the embedded
scheduler): a rollout's shadow phase is decided from shadow comparisons made in whichever
web process answered, counted in the database by their flushers, and read by the process
that runs the scheduler. A disagreeing candidate is rolled back; an agreeing one goes on."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from tests.integration.conftest import wait_for
from tests.integration.test_embedded_sqlite_under_load import embedded, embedded_data  # noqa: F401 - the server fixtures
from tests.onnx_models import lookup

pytestmark = [pytest.mark.integration]

ROW = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


@pytest.fixture
def rollouts_every_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read by the `embedded` fixture when it copies the environment for the server."""
    monkeypatch.setenv("MODELHUB_ROLLOUT_EVAL_INTERVAL_S", "1")


@pytest.mark.usefixtures("rollouts_every_second")
def test_the_shadow_phase_is_decided_across_processes_on_sqlite(embedded: Any) -> None:  # noqa: F811
    url, credentials, _db, server = embedded
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {credentials['token']}"
    assert api.post(f"{url}/api/v1/models/", json={"name": "lookup"}, timeout=30).status_code == 201
    for data in (lookup(16), lookup(16, offset=1.0), lookup(17)):  # stable, disagrees, agrees
        files = {"artifact": ("m.onnx", data, "application/octet-stream")}
        assert api.post(f"{url}/api/v1/models/lookup/versions/", files=files, timeout=120).status_code == 201
    for number in (1, 2, 3):
        wait_for(
            lambda n=number: (
                api.get(f"{url}/api/v1/models/lookup/versions/{n}/", timeout=30).json()["status"] == "ready"
            ),
            timeout=120,
            what=f"lookup v{number} to be validated",
        )
    body = {"name": "lookup", "require_key": False, "routes": [{"model": "lookup", "version": 1, "weight": 100}]}
    assert api.post(f"{url}/api/v1/endpoints/", json=body, timeout=60).status_code == 201
    answers: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def send() -> None:
        session = requests.Session()  # new connections: both web processes answer
        while not stop.is_set():
            response = session.post(f"{url}/api/v1/endpoints/lookup/predict", json=ROW, timeout=60)
            answers.append((response.status_code, response.json().get("version")))
            time.sleep(0.01)

    senders = [threading.Thread(target=send, daemon=True) for _ in range(2)]
    for thread in senders:
        thread.start()
    plan = {
        "shadow": {"bake_s": 4},
        "steps": [{"weight": 100, "bake_s": 1}],
        "checks": {"shadow_agreement": {"min_agreement": 0.95, "min_comparisons": 10}},
    }
    outcomes = {}
    try:
        for version in (2, 3):
            started = api.post(f"{url}/api/v1/endpoints/lookup/rollouts", json={"version": version, "plan": plan})
            assert started.status_code == 201, started.text
            rollout = f"{url}/api/v1/endpoints/lookup/rollouts/{started.json()['id']}"
            wait_for(
                lambda r=rollout: api.get(r, timeout=30).json()["state"] in ("succeeded", "rolled_back", "paused"),
                timeout=90,
                what=f"the embedded scheduler to decide; server log:\n{server.output()[-3000:]}",
            )
            outcomes[version] = api.get(rollout, timeout=30).json()
            expected = "rolled_back" if version == 2 else "succeeded"
            assert outcomes[version]["state"] == expected, outcomes[version]["reason"]
    finally:
        stop.set()
        for thread in senders:
            thread.join(60)
    disagreed, agreed = outcomes[2], outcomes[3]
    assert "shadow_agreement" in disagreed["reason"]
    check = disagreed["events"][-1]["analysis"]["checks"][0]
    assert (check["check"], check["result"], check["agreement"]) == ("shadow_agreement", "fail", 0.0)
    assert check["compared"] >= 10
    passed = next(e for e in agreed["events"] if e["kind"] == "analysis")["analysis"]["checks"][0]
    assert (passed["result"], passed["agreement"]) == ("pass", 1.0)
    split = api.get(f"{url}/api/v1/endpoints/lookup/traffic", timeout=30).json()["routes"]
    assert [(r["version"], r["role"], r["weight"]) for r in split] == [(3, "primary", 100)]
    # The shadows answered nobody: every answer came from v1 until v3 took the traffic.
    assert answers and all(status == 200 for status, _ in answers)
    assert {version for _, version in answers} <= {1, 3}
