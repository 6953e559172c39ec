from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from inference.telemetry.recorder import PredictionRecord, Recorder
from monitoring.flusher import Flusher


@pytest.fixture(autouse=True)
def no_live_minutes_from_other_tests(settings: Any) -> None:
    """Alert evaluation and the window selector read the live minutes in Redis too: start
    every monitoring test without the ones other tests' predictions left there, nor the
    counts still waiting in this process's recorder (its background flusher would write
    them into Redis in the middle of the test)."""
    from inference.telemetry.recorder import recorder as process_recorder

    process_recorder.drain()
    process_recorder.drain_step_inputs()
    process_recorder.drain_samples()
    if not settings.REDIS_URL:
        return
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        names = list(client.scan_iter("mh:*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


@pytest.fixture
def redis_client(settings: Any) -> Iterator[Any]:
    """The test Redis db, with monitoring's keys removed before and after."""
    import redis

    if not settings.REDIS_URL:
        pytest.skip("needs Redis (set REDIS_URL)")
    client = redis.Redis.from_url(settings.REDIS_URL)

    def clean() -> None:
        names = list(client.scan_iter("mh:*", count=1000))
        if names:
            client.delete(*names)

    clean()
    yield client
    clean()


@pytest.fixture
def recorder() -> Recorder:
    """A private recorder: no background thread, flushed explicitly by the test."""
    return Recorder()


@pytest.fixture
def redis_flusher(recorder: Recorder, redis_client: Any, settings: Any) -> Flusher:
    return Flusher(recorder, redis_url=settings.REDIS_URL, interval_s=0)


@pytest.fixture
def db_flusher(recorder: Recorder) -> Flusher:
    """The embedded default: no Redis, flushes go straight to the roll-up table."""
    return Flusher(recorder, redis_url="", interval_s=0)


def later(minutes: int = 10) -> Any:
    """A time at which every minute recorded so far counts as closed."""
    return timezone.now() + timedelta(minutes=minutes)


def rec(
    latency_ms: float = 3.0,
    *,
    ok: bool = True,
    endpoint: str = "iris",
    deployment: str = "iris:1",
    role: str = "primary",
    **extra: Any,
) -> PredictionRecord:
    return PredictionRecord(endpoint=endpoint, deployment=deployment, role=role, latency_ms=latency_ms, ok=ok, **extra)


def make_endpoint(name: str = "iris") -> Any:
    from inference.models import Endpoint

    return Endpoint.objects.create(name=name)


def make_version(model: str = "iris", version: int = 1, **fields: Any) -> Any:
    from registry.models import ModelVersion, RegisteredModel

    registered, _ = RegisteredModel.objects.get_or_create(name=model)
    return ModelVersion.objects.create(
        model=registered, version=version, artifact_sha256="0" * 64, artifact_size=1, status="ready", **fields
    )
