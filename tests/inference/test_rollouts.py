"""Progressive rollouts: the state machine on a real database, the API's bad inputs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from accounts.roles import APPROVER
from audit.models import AuditEvent
from config.errors import Forbidden
from inference import endpoints
from inference.models import Endpoint, Rollout, RolloutEvent, TrafficPolicyRevision
from inference.traffic import traffic_policy_revise
from monitoring.models import MetricRollup
from monitoring.selectors import deployment_window_totals
from registry.models import ModelVersion
from rollouts import services as rollouts
from tests.conftest import client_for, make_user
from tests.inference.conftest import IRIS_META, iris_variant, version_add

pytestmark = pytest.mark.django_db

FAST = {"steps": [{"weight": 10, "bake_s": 30}, {"weight": 50, "bake_s": 30}, {"weight": 100, "bake_s": 30}]}
ONE_MS = [0, 100] + [0] * 13  # 100 requests in the 0.5-1 ms bucket


def split(endpoint: Endpoint) -> list[tuple[int, str, int]]:
    revision = TrafficPolicyRevision.objects.get(endpoint=endpoint, is_current=True)
    return [(r["version"], r["role"], r["weight"]) for r in revision.routes]


def traffic(endpoint: str, version: int, role: str, at: datetime, *, count: int = 100, errors: int = 0) -> None:
    """A minute of traffic as the flusher leaves it in the database (embedded default)."""
    MetricRollup.objects.create(
        endpoint=endpoint,
        deployment=f"iris:{version}",
        role=role,
        minute=at.replace(second=0, microsecond=0),
        count=count,
        error_count=errors,
        errors={"model_error": errors} if errors else {},
        latency_buckets=ONE_MS,
        outputs={"label": {"kind": "class", "counts": {"0": count // 2, "1": count - count // 2}}},
    )


@pytest.fixture
def approver(django_user_model: Any) -> Any:
    return make_user(django_user_model, "alice", APPROVER)


@pytest.fixture
def v2(engineer: Any) -> ModelVersion:
    version_add("iris", iris_variant(0), engineer, IRIS_META)
    return version_add("iris", iris_variant(1), engineer, IRIS_META)


@pytest.fixture
def endpoint(v2: ModelVersion, engineer: Any) -> Endpoint:
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer)
    traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    return endpoint


@pytest.fixture
def t0() -> datetime:
    return timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)


def start(endpoint: Endpoint, user: Any, t0: datetime, plan: dict[str, Any] | None = None) -> Rollout:
    return rollouts.rollout_start(endpoint=endpoint, version=2, plan=plan or FAST, user=user, now=t0)


def test_the_default_plan_is_5_25_50_100_percent_five_minutes_each() -> None:
    plan = rollouts.plan_check(None)
    assert [(s["weight"], s["bake_s"]) for s in plan["steps"]] == [(5, 300), (25, 300), (50, 300), (100, 300)]
    assert set(plan["checks"]) == {"error_rate", "p99_latency", "output_drift"}
    assert plan["on_inconclusive"] == "pause" and plan["failure_limit"] == 1


def test_starting_moves_the_first_step_of_traffic_at_once(endpoint: Endpoint, engineer: Any, t0: datetime) -> None:
    rollout = start(endpoint, engineer, t0)
    assert (rollout.state, rollout.step) == ("running", 0)
    assert split(endpoint) == [(1, "primary", 90), (2, "canary", 10)]
    assert AuditEvent.objects.filter(action="rollout.start").count() == 1


def test_a_healthy_candidate_goes_through_every_step_once_each(endpoint: Endpoint, engineer: Any, t0: datetime) -> None:
    rollout = start(endpoint, engineer, t0)
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=10)) == "baking"
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "step"
    assert split(endpoint) == [(1, "primary", 50), (2, "canary", 50)]
    # The same evaluation again (a retried task, a second scheduler): no second step.
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "baking"
    assert TrafficPolicyRevision.objects.filter(endpoint=endpoint).count() == 3
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=62)) == "succeeded"
    assert split(endpoint) == [(2, "primary", 100)]
    rollout.refresh_from_db()
    assert rollout.state == "succeeded" and rollout.finished_at is not None
    passed = AuditEvent.objects.filter(action="rollout.analysis").order_by("pk").first()
    error_rate = next(c for c in passed.after["analysis"]["checks"] if c["check"] == "error_rate")
    assert error_rate["candidate"] == 0.0 and error_rate["stable"] == 0.0 and error_rate["result"] == "pass"


def test_a_failing_candidate_is_rolled_back_at_the_next_evaluation_with_the_values_that_decided(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    rollout = start(endpoint, engineer, t0)
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0, errors=30)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "rolled_back"
    assert split(endpoint) == [(1, "primary", 100)]
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and "error_rate" in rollout.reason
    event = AuditEvent.objects.get(action="rollout.rollback")
    check = next(c for c in event.after["analysis"]["checks"] if c["check"] == "error_rate")
    assert (check["candidate"], check["stable"], check["result"]) == (0.3, 0.0, "fail")
    assert AuditEvent.objects.filter(action="rollout.rollback", after__analysis__verdict="fail").exists()
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=20)) == "idle"


def test_the_failure_limit_tolerates_that_many_failed_analyses(endpoint: Endpoint, engineer: Any, t0: datetime) -> None:
    rollout = start(endpoint, engineer, t0, {**FAST, "failure_limit": 2})
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0, errors=30)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "baking"
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=15)) == "rolled_back"


def test_too_little_traffic_after_the_bake_pauses_or_rolls_back_as_the_plan_says(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    rollout = start(endpoint, engineer, t0)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "paused"
    assert split(endpoint) == [(1, "primary", 90), (2, "canary", 10)]
    rollout.refresh_from_db()
    assert "inconclusive" in rollout.reason
    rollouts.rollout_abort(rollout=rollout, user=engineer)
    other = start(endpoint, engineer, t0, {**FAST, "on_inconclusive": "rollback"})
    assert rollouts.rollout_advance(rollout_id=other.pk, now=t0 + timedelta(seconds=31)) == "rolled_back"
    assert split(endpoint) == [(1, "primary", 100)]


def test_a_slow_candidate_fails_the_relative_p99_check(endpoint: Endpoint, engineer: Any, t0: datetime) -> None:
    rollout = start(endpoint, engineer, t0)
    traffic("flowers", 1, "primary", t0)
    slow = [0] * 9 + [100] + [0] * 5  # 200-500 ms
    MetricRollup.objects.create(
        endpoint="flowers", deployment="iris:2", role="canary", minute=t0, count=100, latency_buckets=slow
    )
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "rolled_back"
    event = AuditEvent.objects.get(action="rollout.rollback")
    check = next(c for c in event.after["analysis"]["checks"] if c["check"] == "p99_latency")
    assert check["result"] == "fail" and check["candidate_ms"] > 200 and check["stable_ms"] < 1


def test_reaching_100_percent_can_wait_for_an_approvers_confirmation(
    endpoint: Endpoint, engineer: Any, approver: Any, t0: datetime
) -> None:
    plan = {"steps": [{"weight": 20, "bake_s": 10}, {"weight": 100, "bake_s": 10}], "confirm_full": True}
    rollout = start(endpoint, engineer, t0, plan)
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=11)) == "waiting"
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=21)) == "waiting"
    assert split(endpoint) == [(1, "primary", 80), (2, "canary", 20)]
    response = client_for(engineer).post(f"/api/v1/endpoints/flowers/rollouts/{rollout.pk}/promote")
    assert response.status_code == 403
    response = client_for(approver).post(f"/api/v1/endpoints/flowers/rollouts/{rollout.pk}/promote")
    assert response.status_code == 200 and response.json()["state"] == "succeeded"
    assert split(endpoint) == [(2, "primary", 100)]


def test_on_production_a_staging_candidate_canaries_and_waits_for_its_promotion(
    v2: ModelVersion, engineer: Any, approver: Any, t0: datetime
) -> None:
    ModelVersion.objects.filter(model__name="iris", version=1).update(stage="Production")
    ModelVersion.objects.filter(pk=v2.pk).update(stage="Staging")
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, environment="production")
    traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=approver
    )
    with pytest.raises(Forbidden, match="approver"):
        start(endpoint, engineer, t0)
    plan = {"steps": [{"weight": 20, "bake_s": 10}, {"weight": 100, "bake_s": 10}]}
    rollout = start(endpoint, approver, t0, plan)
    assert split(endpoint) == [(1, "primary", 80), (2, "canary", 20)]
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=11)) == "waiting"
    rollout.refresh_from_db()
    assert "is in Staging" in rollout.reason
    ModelVersion.objects.filter(model__name="iris", version=1).update(stage="Archived")
    ModelVersion.objects.filter(pk=v2.pk).update(stage="Production")
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=21)) == "succeeded"
    assert split(endpoint) == [(2, "primary", 100)]


def test_pause_resume_and_abort_and_an_abort_of_a_finished_rollout_is_409(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    api = client_for(engineer)
    response = api.post("/api/v1/endpoints/flowers/rollouts", {"version": 2, "plan": FAST}, format="json")
    assert response.status_code == 201, response.content
    rid = response.json()["id"]
    assert api.post(f"/api/v1/endpoints/flowers/rollouts/{rid}/pause").json()["state"] == "paused"
    assert rollouts.rollout_advance(rollout_id=rid) == "idle"
    assert api.post(f"/api/v1/endpoints/flowers/rollouts/{rid}/resume").json()["state"] == "running"
    body = api.post(f"/api/v1/endpoints/flowers/rollouts/{rid}/abort").json()
    assert body["state"] == "aborted" and [e["kind"] for e in body["events"]][-1] == "abort"
    assert split(endpoint) == [(1, "primary", 100)]
    again = api.post(f"/api/v1/endpoints/flowers/rollouts/{rid}/abort")
    assert again.status_code == 409 and again.json()["error"]["details"] == {"state": "aborted"}
    listed = api.get("/api/v1/endpoints/flowers/rollouts").json()["results"]
    assert [r["id"] for r in listed] == [rid]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"version": 9}, 404, "no version 9"),
        ({"version": 2, "plan": {"steps": [{"weight": 100, "bake_s": 0}]}}, 400, "bake_s: expected more than 0"),
        ({"version": 2, "plan": {"steps": [{"weight": 100, "bake_s": -5}]}}, 400, "bake_s"),
        ({"version": 2, "plan": {"steps": [{"weight": 50, "bake_s": 5}]}}, 400, "last step must be 100"),
        ({"version": 2, "plan": {"steps": [{"weight": 50, "bake_s": 5}, {"weight": 20, "bake_s": 5}]}}, 400, "grow"),
        ({"version": 2, "plan": {"checks": {"error_rate": {"max_increase": "x"}}}}, 400, "expected a number"),
        ({"version": 2, "plan": {"on_inconclusive": "shrug"}}, 400, "on_inconclusive"),
        ({"version": 2, "plan": {"checks": {"shadow_agreement": {}}}}, 400, "needs a shadow phase"),
        ({"version": 2, "plan": {"shadow": {"bake_s": 0}}}, 400, "shadow.bake_s: expected more than 0"),
        (
            {"version": 2, "plan": {"shadow": {"bake_s": 5}, "checks": {"shadow_agreement": {"min_agreement": 2}}}},
            400,
            "min_agreement: expected at least 0 and at most 1",
        ),
        (
            {"version": 2, "plan": {"checks": {"p99_latency": {"min_requests": 0}}}},
            400,
            "min_requests: expected at least 1",
        ),
        ({"version": 1}, 409, "already takes traffic"),
    ],
)
def test_bad_rollouts_are_clear_4xx_and_change_nothing(
    endpoint: Endpoint, engineer: Any, body: dict[str, Any], status: int, needle: str
) -> None:
    response = client_for(engineer).post("/api/v1/endpoints/flowers/rollouts", body, format="json")
    assert response.status_code == status, response.content
    assert needle in response.json()["error"]["message"]
    assert not Rollout.objects.exists() and split(endpoint) == [(1, "primary", 100)]


def test_a_second_running_rollout_and_a_candidate_that_failed_validation_are_refused(
    endpoint: Endpoint, engineer: Any, v2: ModelVersion, t0: datetime
) -> None:
    api = client_for(engineer)
    ModelVersion.objects.filter(pk=v2.pk).update(status="failed")
    response = api.post("/api/v1/endpoints/flowers/rollouts", {"version": 2}, format="json")
    assert response.status_code == 409 and "passed validation" in response.json()["error"]["message"]
    ModelVersion.objects.filter(pk=v2.pk).update(status="ready")
    assert api.post("/api/v1/endpoints/flowers/rollouts", {"version": 2}, format="json").status_code == 201
    response = api.post("/api/v1/endpoints/flowers/rollouts", {"version": 2}, format="json")
    assert response.status_code == 409 and "already has a rollout in progress" in response.json()["error"]["message"]
    assert Rollout.objects.count() == 1 and RolloutEvent.objects.filter(kind="start").count() == 1


def test_the_window_selector_adds_live_redis_minutes_to_rolled_up_ones(settings: Any, t0: datetime) -> None:
    import redis

    from monitoring import keys

    traffic("sel-test", 1, "primary", t0 - timedelta(minutes=1), count=10)
    client = redis.Redis.from_url(settings.REDIS_URL)
    minute = int(t0.timestamp() // 60)
    name = keys.minute_key(minute, "sel-test", "iris:1", "primary")
    try:
        client.hset(name, mapping={"count": 7, "e|model_error": 2, "b1": 7})
        client.zadd(keys.MINUTES_INDEX, {name: minute})
        stats = deployment_window_totals(
            endpoint="sel-test", since=t0 - timedelta(minutes=1), until=t0 + timedelta(seconds=5)
        )
        assert stats["iris:1"]["count"] == 17 and stats["iris:1"]["error_count"] == 2
    finally:
        client.delete(name)
        client.zrem(keys.MINUTES_INDEX, name)


@pytest.mark.django_db(transaction=True)
def test_an_evaluation_waits_for_another_schedulers_step_and_does_not_repeat_it(engineer: Any, t0: datetime) -> None:
    """Another scheduler (a second connection) holds the rollout's row and takes the step; this
    evaluation waits on the row lock, then sees the step taken: one step, not two."""
    import threading
    import time

    import psycopg2
    from django.db import connection

    version_add("iris", iris_variant(0), engineer, IRIS_META)
    version_add("iris", iris_variant(1), engineer, IRIS_META)
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer)
    traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    rollout = start(endpoint, engineer, t0)
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0)
    later = t0 + timedelta(seconds=31)
    db = connection.settings_dict
    dsn = {"dbname": db["NAME"], "user": db["USER"], "host": db["HOST"] or "127.0.0.1", "port": db["PORT"] or 5432}
    other = psycopg2.connect(**dsn)  # the other scheduler, mid-step
    cursor = other.cursor()
    cursor.execute("SELECT id FROM inference_rollout WHERE id = %s FOR UPDATE", [rollout.pk])
    cursor.execute("UPDATE inference_rollout SET step = 1, step_started_at = %s WHERE id = %s", [later, rollout.pk])
    connection.ensure_connection()
    me = connection.connection.info.backend_pid  # this test's (Django's) connection
    waited: list[bool] = []

    def commit_once_this_one_waits() -> None:
        watcher = psycopg2.connect(**dsn)
        deadline = time.monotonic() + 30
        with watcher.cursor() as watch:
            while time.monotonic() < deadline:
                watch.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", [me])
                if watch.fetchone()[0]:
                    waited.append(True)
                    break
                time.sleep(0.05)
        watcher.close()
        other.commit()

    releaser = threading.Thread(target=commit_once_this_one_waits)
    releaser.start()
    try:
        decided = rollouts.rollout_advance(rollout_id=rollout.pk, now=later)
    finally:
        releaser.join(60)
        other.close()
    assert waited == [True]  # it waited on the row lock ...
    assert decided == "baking"  # ... and then saw the step already taken
    assert TrafficPolicyRevision.objects.filter(endpoint=endpoint).count() == 2  # initial and step 1 only


def test_approving_the_candidate_to_production_mid_rollout_finishes_it(
    v2: ModelVersion, engineer: Any, approver: Any, t0: datetime
) -> None:
    from registry import promotions

    ModelVersion.objects.filter(model__name="iris", version=1).update(stage="Production")
    ModelVersion.objects.filter(pk=v2.pk).update(stage="Staging")
    endpoint = endpoints.endpoint_create(name="flowers", user=engineer, environment="production")
    traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "iris", "version": 1, "role": "primary", "weight": 100}], user=approver
    )
    rollout = start(endpoint, approver, t0)
    request = promotions.promotion_request_create(
        version=v2, to_stage="Production", justification="rollout looks good", user=engineer
    )
    promotions.promotion_approve(request_id=request.pk, reviewer=approver)
    assert split(endpoint) == [(2, "primary", 100)]  # v1 was archived: its share moved to v2
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "succeeded"
    rollout.refresh_from_db()
    assert rollout.state == "succeeded" and "already serves all the traffic" in rollout.reason


# --- the shadow phase and its shadow_agreement check ------------------------------------------

SHADOWED = {"shadow": {"bake_s": 30}, **FAST}


def shadow_traffic(endpoint: str, version: int, at: datetime, *, compared: int, agreed: int) -> None:
    """A minute of a shadow's answers, `agreed` of `compared` the same as the caller's."""
    MetricRollup.objects.create(
        endpoint=endpoint,
        deployment=f"iris:{version}",
        role="shadow",
        minute=at.replace(second=0, microsecond=0),
        count=compared,
        latency_buckets=[0, compared] + [0] * 13,
        shadow_compared=compared,
        shadow_agreed=agreed,
    )


def analysis_check(action: str, check: str) -> dict[str, Any]:
    event = AuditEvent.objects.filter(action=action).order_by("-pk").first()
    assert event is not None, f"no {action} event"
    return next(c for c in event.after["analysis"]["checks"] if c["check"] == check)


def test_a_shadow_phase_comes_first_and_an_agreeing_candidate_moves_on_to_the_first_step(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    rollout = start(endpoint, engineer, t0, SHADOWED)
    assert (rollout.state, rollout.step) == ("running", -1)
    assert split(endpoint) == [(1, "primary", 100), (2, "shadow", 0)]
    assert set(rollout.plan["checks"]) == {"error_rate", "p99_latency", "output_drift", "shadow_agreement"}
    traffic("flowers", 1, "primary", t0)
    shadow_traffic("flowers", 2, t0, compared=100, agreed=100)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=10)) == "baking"
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "step"
    assert split(endpoint) == [(1, "primary", 90), (2, "canary", 10)]
    check = analysis_check("rollout.analysis", "shadow_agreement")
    assert (check["compared"], check["agreed"], check["agreement"], check["result"]) == (100, 100, 1.0, "pass")
    # Only shadow_agreement decides the shadow phase (the candidate answered nobody).
    event = AuditEvent.objects.get(action="rollout.analysis")
    assert event.after["analysis"]["phase"] == "shadow" and len(event.after["analysis"]["checks"]) == 1
    assert [e.kind for e in rollout.events.all()][:3] == ["start", "shadow", "analysis"]


def test_a_candidate_that_disagrees_with_stable_in_the_shadow_phase_is_rolled_back(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    rollout = start(endpoint, engineer, t0, SHADOWED)
    traffic("flowers", 1, "primary", t0)
    shadow_traffic("flowers", 2, t0, compared=100, agreed=80)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "rolled_back"
    assert split(endpoint) == [(1, "primary", 100)]
    rollout.refresh_from_db()
    assert rollout.state == "rolled_back" and "shadow_agreement" in rollout.reason
    check = analysis_check("rollout.rollback", "shadow_agreement")
    assert (check["agreement"], check["min_agreement"], check["result"]) == (0.8, 0.99, "fail")


def test_too_few_shadow_comparisons_are_inconclusive_and_pause_or_roll_back_as_the_plan_says(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    rollout = start(endpoint, engineer, t0, SHADOWED)
    traffic("flowers", 1, "primary", t0)
    shadow_traffic("flowers", 2, t0, compared=10, agreed=0)  # all disagree, but only 10 of 50 needed
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "baking"
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "paused"
    assert split(endpoint) == [(1, "primary", 100), (2, "shadow", 0)]
    rollout.refresh_from_db()
    assert "shadow_agreement (10 of 50 comparisons)" in rollout.reason
    assert analysis_check("rollout.paused", "shadow_agreement")["result"] == "inconclusive"
    rollouts.rollout_abort(rollout=rollout, user=engineer)
    other = start(endpoint, engineer, t0, {**SHADOWED, "on_inconclusive": "rollback"})
    assert rollouts.rollout_advance(rollout_id=other.pk, now=t0 + timedelta(seconds=31)) == "rolled_back"
    assert split(endpoint) == [(1, "primary", 100)]


@pytest.mark.parametrize(("candidate_n", "stable_n"), [(49, 100), (100, 49)])
def test_the_p99_check_is_inconclusive_below_its_minimum_requests_on_either_side(
    endpoint: Endpoint, engineer: Any, t0: datetime, candidate_n: int, stable_n: int
) -> None:
    plan = {**FAST, "checks": {"p99_latency": {"min_requests": 50}}}
    rollout = start(endpoint, engineer, t0, plan)
    fast, slow = [0, stable_n] + [0] * 13, [0] * 9 + [candidate_n] + [0] * 5  # 0.5-1 ms; 200-500 ms
    MetricRollup.objects.create(
        endpoint="flowers", deployment="iris:1", role="primary", minute=t0, count=stable_n, latency_buckets=fast
    )
    MetricRollup.objects.create(
        endpoint="flowers", deployment="iris:2", role="canary", minute=t0, count=candidate_n, latency_buckets=slow
    )
    # 200 times slower, but too few requests on one side: not a failure ...
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=5)) == "baking"
    # ... and inconclusive once the bake time is over.
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "paused"
    check = analysis_check("rollout.paused", "p99_latency")
    assert check["result"] == "inconclusive" and check["min_requests"] == 50
    assert (check["candidate_requests"], check["stable_requests"]) == (candidate_n, stable_n)
    assert check["candidate_ms"] > 200 and check["stable_ms"] < 1


def test_a_hand_traffic_change_while_a_rollout_is_unfinished_is_409_naming_it(
    endpoint: Endpoint, engineer: Any, t0: datetime
) -> None:
    rollout = start(endpoint, engineer, t0)
    api = client_for(engineer)
    body = {"routes": [{"model": "iris", "version": 1, "role": "primary", "weight": 100}]}
    for state in ("running", "paused"):
        if state == "paused":
            rollouts.rollout_pause(rollout=rollout, user=engineer)
        response = api.put("/api/v1/endpoints/flowers/traffic", body, format="json")
        assert response.status_code == 409, response.content
        error = response.json()["error"]
        assert error["code"] == "rollout_in_progress" and f"rollout #{rollout.pk} of iris:2 {state}" in error["message"]
        assert error["details"] == {"rollout": rollout.pk, "state": state, "candidate": "iris:2"}
        assert api.post("/api/v1/endpoints/flowers/traffic/rollback", {}, format="json").status_code == 409
        assert split(endpoint) == [(1, "primary", 90), (2, "canary", 10)]
    # The rollout's own steps are not hand changes.
    rollouts.rollout_resume(rollout=rollout, user=engineer, now=t0)
    traffic("flowers", 1, "primary", t0)
    traffic("flowers", 2, "canary", t0)
    assert rollouts.rollout_advance(rollout_id=rollout.pk, now=t0 + timedelta(seconds=31)) == "step"
    rollouts.rollout_abort(rollout=rollout, user=engineer)
    assert api.put("/api/v1/endpoints/flowers/traffic", body, format="json").status_code == 200
