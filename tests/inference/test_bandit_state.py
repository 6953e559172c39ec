"""Bandit state is shared by processes through Redis, survives a fresh client and a Redis
flush (the database snapshot), and lives in the database on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from inference.bandits import decide, router
from inference.bandits.ledger import flush_pending
from inference.bandits.models import BanditArm, BanditDecision
from inference.bandits.selectors import router_stats
from inference.bandits.store import PREFIX, RedisStore, store
from inference.bandits.tasks import sweep
from tests.inference.bandit_helpers import (  # noqa: F401 - fixtures
    bandit_state,
    ledger_in_test_thread,
    redis_client,
    simulate,
)
from tests.inference.conftest import auth
from workers.embedded_scheduler import embedded_jobs

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("bandit_state")]

CONFIG = {"policy": "epsilon_greedy", "epsilon": 0.5, "arms": ["a", "b"]}
ROOT = Path(__file__).resolve().parents[2]

# Another process: its own interpreter, Redis client and caches; the same Redis db.
OTHER_PROCESS = """
import json, sys, django
django.setup()
from inference.bandits import decide
from inference.bandits.feedback import feedback
from inference.bandits.store import store
key = sys.argv[1]
print(json.dumps({arm: [s.pulls, s.n, s.s] for arm, s in store().load(key).items()}))
for i in range(20):
    decide(key, ["a", "b"], json.loads(sys.argv[2]), f"other-{i}", endpoint="e")
    feedback("e", f"other-{i}", [1.0])
"""


def other_process(key: str, settings: Any) -> dict[str, list[float]]:
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": settings.REDIS_URL,
    }
    done = subprocess.run(
        [sys.executable, "-c", OTHER_PROCESS, key, json.dumps(CONFIG)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_state_is_shared_between_two_processes(settings: Any) -> None:
    key = "pipeline:1:shared"
    simulate(key, CONFIG, lambda arm, env: 0.0, 30, endpoint="e")
    seen_there = other_process(key, settings)
    assert sum(pulls for pulls, _, _ in seen_there.values()) == 30  # it saw this process's decisions
    here = store().load(key)
    assert sum(arm.pulls for arm in here.values()) == 50  # and this one sees its 20
    assert sum(arm.s for arm in here.values()) == 20.0


def test_state_survives_a_fresh_client_and_process_cache() -> None:
    key = "pipeline:1:fresh"
    simulate(key, CONFIG, lambda arm, env: 1.0 if arm == "b" else 0.0, 40, endpoint="e")
    router._routers.clear()
    fresh = RedisStore(str(router.settings.REDIS_URL)).load(key)
    assert sum(arm.pulls for arm in fresh.values()) == 40
    assert fresh["b"].s == fresh["b"].n > 0


def test_a_redis_flush_is_recovered_from_the_database_snapshot() -> None:
    key = "pipeline:1:flush"
    simulate(key, CONFIG, lambda arm, env: 1.0, 25, endpoint="e")
    before = store().load(key)
    assert sweep.apply().get()["snapshotted"] >= 1
    assert BanditArm.objects.filter(router__key=key).count() == 2
    redis_client().delete(PREFIX + "arms:" + key)  # what FLUSHDB or a restart without persistence does
    after = store().load(key)
    assert after == before
    assert redis_client().exists(PREFIX + "arms:" + key)  # written back to Redis


def test_a_decision_right_after_a_flush_restores_the_snapshot_first(settings: Any) -> None:
    key = "pipeline:1:flush-decide"
    simulate(key, CONFIG, lambda arm, env: 1.0, 25, endpoint="e")
    sweep.apply().get()
    settings.BANDIT_REFRESH_S = 3600.0  # this process decides from its cached shares, no read
    decide(key, ["a", "b"], CONFIG, "warm", endpoint="e")
    flush_pending()  # written (the ledger buffers entries: inference/bandits/ledger.py)
    redis_client().delete(PREFIX + "arms:" + key)
    decide(key, ["a", "b"], CONFIG, "after-flush", endpoint="e")
    flush_pending()
    after = store().load(key)
    assert sum(arm.pulls for arm in after.values()) == 25 + 1  # the snapshot (before "warm") + this decision
    assert sum(arm.n for arm in after.values()) == 25


def test_the_sweep_is_in_the_beat_schedule_and_the_embedded_scheduler() -> None:
    assert "bandits.sweep" in {job.task for job in embedded_jobs()}


@pytest.mark.usefixtures("ledger_in_test_thread")
def test_the_embedded_default_keeps_state_and_ledger_in_the_database(client: Any, app_key: str, settings: Any) -> None:
    redis_there = redis_client()
    settings.REDIS_URL = ""
    key = "pipeline:2:embedded"
    chosen = simulate(key, {**CONFIG, "epsilon": 0.2}, lambda arm, env: 1.0 if arm == "b" else 0.0, 150, endpoint="e")
    assert chosen[-50:].count("b") > 35
    assert BanditDecision.objects.filter(router_key=key).count() == 150
    assert sum(BanditArm.objects.filter(router__key=key).values_list("pulls", flat=True)) == 150
    assert redis_there.keys(PREFIX + "*") == []

    decision = decide(key, ["a", "b"], CONFIG, "db-req", endpoint="iris")
    body = orjson.dumps({"request_id": "db-req", "reward": 2.5})
    path = "/api/v1/endpoints/iris/feedback"
    first = client.post(path, body, content_type="application/json", **auth(app_key))
    assert first.status_code == 200 and first.json()["attributed"][0]["arm"] == decision.arm
    again = client.post(path, body, content_type="application/json", **auth(app_key))
    assert again.json()["status"] == "duplicate"

    # Past the retention: refused at once, and the sweep deletes it.
    decide(key, ["a", "b"], CONFIG, "old-req", endpoint="iris")
    flush_pending()  # out of this process's ledger buffer
    old = datetime.now(UTC) - timedelta(seconds=settings.BANDIT_LEDGER_RETENTION_S + 60)
    BanditDecision.objects.filter(request_id="old-req").update(decided_at=old)
    late = client.post(
        path, orjson.dumps({"request_id": "old-req", "reward": 1}), content_type="application/json", **auth(app_key)
    )
    assert late.status_code == 404 and late.json()["error"]["code"] == "unknown_request"
    assert sweep.apply().get()["trimmed"] == 1
    assert not BanditDecision.objects.filter(request_id="old-req").exists()

    # The statistics and the export read the same tables.
    stats = router_stats(key)
    assert sum(arm["pulls"] for arm in stats["arms"]) == 152 and stats["decisions_logged"] == 151
    assert stats["endpoints"] == ["e", "iris"] and stats["series"][-1]["decisions"] == 151


def test_an_unreachable_redis_never_fails_a_decision_and_feedback_is_a_503(
    client: Any, app_key: str, settings: Any
) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    settings.REDIS_SOCKET_TIMEOUT = 0.5
    config = {**CONFIG, "floor": {"a": 0.3}}
    decision = decide("pipeline:7:down", ["a", "b"], config, "down-req", endpoint="iris")
    assert decision.arm in ("a", "b") and decision.propensity == 0.5  # an even split, inside the floors
    response = client.post(
        "/api/v1/endpoints/iris/feedback",
        orjson.dumps({"request_id": "down-req", "reward": 1}),
        content_type="application/json",
        **auth(app_key),
    )
    assert response.status_code == 503 and response["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "unavailable"
