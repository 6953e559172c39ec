"""Validation leases: a validation whose worker died is re-enqueued by the sweep, a live one
is left alone, and none stays `validating` for good."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from registry import services, tasks
from registry.models import ModelVersion
from tests.conftest import iris_bytes, upload
from workers.celery import app as celery_app

pytestmark = pytest.mark.django_db


@pytest.fixture
def version(api: Any) -> ModelVersion:
    """A validated upload; each test puts it back in the state it needs."""
    assert api.post("/api/v1/models/", {"name": "churn"}, format="json").status_code == 201
    assert upload(api, "churn", iris_bytes()).json()["status"] == "ready"
    return ModelVersion.objects.get()


def put(version: ModelVersion, **fields: Any) -> None:
    ModelVersion.objects.filter(pk=version.pk).update(**fields)
    version.refresh_from_db()


def validating(version: ModelVersion, *, lease_s: float, attempts: int = 1, owner: str = "dead-worker") -> None:
    put(
        version,
        status="validating",
        validation_attempts=attempts,
        validation_lease_owner=owner,
        validation_lease_until=timezone.now() + timedelta(seconds=lease_s),
    )


def test_a_validation_whose_lease_lapsed_is_enqueued_again_and_decided(version: ModelVersion) -> None:
    validating(version, lease_s=-1)

    assert tasks.validation_sweep() == 1

    version.refresh_from_db()
    assert version.status == "ready"
    assert version.validation_attempts == 2
    assert version.validation_lease_until is None and version.validation_lease_owner == ""


def test_a_validation_holding_a_live_lease_is_left_alone(version: ModelVersion) -> None:
    validating(version, lease_s=60)

    assert tasks.validation_sweep() == 0
    # A second delivery of some other task id does not run it twice either.
    assert tasks.model_version_validate.delay(version.pk).get() == "nothing to do"
    version.refresh_from_db()
    assert (version.status, version.validation_attempts) == ("validating", 1)


def test_the_same_task_redelivered_after_its_worker_died_takes_its_lease_back(version: ModelVersion) -> None:
    validating(version, lease_s=60, owner="task-1")

    assert tasks.model_version_validate.apply(args=[version.pk], task_id="task-1").get() == "ready"


def test_a_validation_out_of_attempts_is_failed_with_the_reason(version: ModelVersion, settings: Any) -> None:
    settings.VALIDATION_MAX_ATTEMPTS = 3
    validating(version, lease_s=-1, attempts=3)

    assert tasks.validation_sweep() == 0

    version.refresh_from_db()
    assert version.status == "failed"
    assert version.validation_report["error"] == (
        "validation did not finish in 3 attempts (the worker running it stopped each time)"
    )


def test_a_pending_version_no_task_started_is_enqueued_after_the_grace(version: ModelVersion, settings: Any) -> None:
    settings.VALIDATION_PENDING_GRACE_S = 60
    put(version, status="pending", validation_attempts=0, validation_lease_until=None)
    assert tasks.validation_sweep() == 0  # uploaded just now: its own task may be queued

    put(version, created_at=timezone.now() - timedelta(seconds=61))
    assert tasks.validation_sweep() == 1

    version.refresh_from_db()
    assert version.status == "ready"


def test_a_re_enqueued_version_is_not_picked_again_while_its_task_waits(version: ModelVersion) -> None:
    validating(version, lease_s=-1)
    options = {"lease_s": 30, "pending_grace_s": 60, "max_attempts": 3}

    assert services.model_version_validation_sweep(**options) == [version.pk]
    assert services.model_version_validation_sweep(**options) == []

    version.refresh_from_db()
    assert version.status == "pending" and version.validation_lease_until > timezone.now()


def test_the_sweep_is_in_the_beat_schedule_every_half_minute() -> None:
    entries = [e for e in celery_app.conf.beat_schedule.values() if e["task"] == "registry.validation_sweep"]
    assert len(entries) == 1
    assert entries[0]["schedule"] == 30.0
