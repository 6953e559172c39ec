"""Two approvers deciding at the same moment, on real PostgreSQL connections (one per thread)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections

from audit.models import AuditEvent
from config.errors import DomainError
from registry import promotions
from registry.models import ModelVersion, PromotionRequest
from tests.conftest import make_user
from tests.registry import governance as g

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def postgres_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")


def decide_in_thread(
    name: str, request_id: int, reviewer: Any, outcomes: dict[str, Any], start: threading.Barrier | None = None
) -> threading.Thread:
    def run() -> None:
        try:
            if start is not None:
                start.wait(30)
            outcomes[name] = promotions.promotion_approve(request_id=request_id, reviewer=reviewer, comment=name)
        except DomainError as exc:
            outcomes[name] = exc
        finally:
            connections.close_all()

    return threading.Thread(target=run, name=name)


def lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def test_the_second_approver_waits_for_the_first_and_is_refused(django_user_model, monkeypatch):
    engineer = make_user(django_user_model, "erin", "ml_engineer")
    first, second = make_user(django_user_model, "alice", "approver"), make_user(django_user_model, "bob", "approver")
    m = g.model()
    g.in_production(g.version(m, 1), engineer, first)
    request = g.ask(g.version(m, 2, stage="Staging"), "Production", engineer)

    # The first approver stops inside its transaction (rows locked) until told to go on.
    inside, go_on = threading.Event(), threading.Event()
    original = promotions.gates_evaluate

    def paused(**kwargs: Any) -> Any:
        if threading.current_thread().name == "first":
            inside.set()
            assert go_on.wait(30)
        return original(**kwargs)

    monkeypatch.setattr(promotions, "gates_evaluate", paused)
    outcomes: dict[str, Any] = {}
    a = decide_in_thread("first", request.pk, first, outcomes)
    a.start()
    assert inside.wait(30)
    b = decide_in_thread("second", request.pk, second, outcomes)
    b.start()
    # Proof that the lock works: the second connection is seen waiting on a row lock.
    deadline = time.monotonic() + 30
    while lock_waiters() == 0:
        assert time.monotonic() < deadline, "the second approver never waited on the row lock"
        time.sleep(0.05)
    go_on.set()
    a.join(30)
    b.join(30)

    assert isinstance(outcomes["first"], PromotionRequest), outcomes
    assert isinstance(outcomes["second"], promotions.RequestNotPending), outcomes
    assert "already approved by alice" in outcomes["second"].message
    assert dict(ModelVersion.objects.values_list("version", "stage")) == {1: "Archived", 2: "Production"}
    assert PromotionRequest.objects.get(pk=request.pk).reviewer == first
    assert AuditEvent.objects.filter(action="promotion.approve", object_id=str(request.pk)).count() == 1
    assert AuditEvent.objects.filter(action="promotion.approve.refused", actor=second).count() == 1


def test_approvers_racing_on_many_requests_never_make_two_production_versions(django_user_model):
    engineer = make_user(django_user_model, "erin", "ml_engineer")
    approvers = [make_user(django_user_model, f"approver{i}", "approver") for i in range(2)]
    m = g.model()
    versions = [g.version(m, n, stage="Staging") for n in range(1, 5)]
    requests = [g.ask(v, "Production", engineer) for v in versions]
    for rounds in range(5):
        outcomes: dict[str, Any] = {}
        start = threading.Barrier(4)
        threads = []
        # Each request decided by two approvers at once; two requests at once per model.
        for i, request in enumerate(requests[:2] if rounds % 2 == 0 else requests[2:]):
            for j, approver in enumerate(approvers):
                threads.append(decide_in_thread(f"r{i}a{j}", request.pk, approver, outcomes, start))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        wins = [o for o in outcomes.values() if isinstance(o, PromotionRequest)]
        assert len(wins) in (0, 2), outcomes  # first round: one win per request; later: all refused
        assert ModelVersion.objects.filter(model=m, stage="Production").count() == 1
    assert PromotionRequest.objects.filter(status="approved").count() == 4
    assert AuditEvent.objects.filter(action="promotion.approve").count() == 4
