"""Batch tasks on the `batch` queue: thin, take IDs, safe to run twice (docs/batch.md)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from inference.batch import services


@shared_task(name="batch.job_plan")
def job_plan(job_id: int) -> str:
    return services.job_plan(job_id=job_id)


@shared_task(name="batch.chunk_run", bind=True, max_retries=None)
def chunk_run(self: Any, job_id: int, index: int) -> str:
    outcome = services.chunk_run(job_id=job_id, index=index)
    if outcome.status == "leased":
        # Another holder (maybe a dead one) has the lease: look again once it would expire.
        raise self.retry(countdown=min(outcome.retry_in_s, 60.0))
    return f"{outcome.status}: {outcome.detail}"


@shared_task(name="batch.job_finalize")
def job_finalize(job_id: int) -> str:
    return services.job_finalize(job_id=job_id)


@shared_task(name="batch.sweep")
def sweep() -> dict[str, int]:
    return services.batch_sweep()
