from __future__ import annotations

import csv
import itertools
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from accounts.permissions import get_visible_or_404, team_scope
from inference.batch import storage
from inference.batch.models import BatchJob


def job_list(*, user: Any, state: str = "", model: str = "", version_id: int | None = None) -> QuerySet[BatchJob]:
    """Jobs the user may see (their teams' and those of no team), newest first."""
    jobs = team_scope(
        BatchJob.objects.select_related(
            "model_version__model",
            "compare_version__model",
            "pipeline_version__pipeline",
            "endpoint",
            "created_by",
            "team",
        ),
        user,
    )
    if state:
        jobs = jobs.filter(state=state)
    if model:
        jobs = jobs.filter(model_version__model__name=model)
    if version_id is not None:
        jobs = jobs.filter(model_version_id=version_id)
    return jobs


def job_get(*, job_id: int, user: Any) -> BatchJob:
    """One job; another team's job is answered exactly as a missing one (404)."""
    jobs = BatchJob.objects.select_related(
        "model_version__model", "compare_version__model", "pipeline_version__pipeline", "endpoint", "created_by", "team"
    )
    found: BatchJob = get_visible_or_404(jobs, user, pk=job_id)
    return found


def job_progress(job: BatchJob, *, now: Any = None) -> dict[str, Any]:
    """Rows per second over the time the job ran (pauses left out), and the ETA."""
    now = now or timezone.now()
    seconds = job.active_seconds_before
    if job.started_at is not None:
        seconds += ((job.finished_at or now) - job.started_at).total_seconds()
    processed = job.rows_done + job.rows_failed - job.plan_failed_rows
    rate = processed / seconds if seconds > 0 and processed > 0 else 0.0
    remaining = max(0, (job.rows_total or 0) - job.rows_done - job.rows_failed)
    eta = None
    if job.state == BatchJob.State.RUNNING and rate > 0:
        eta = remaining / rate
    fraction = (job.rows_done + job.rows_failed) / job.rows_total if job.rows_total else 0.0
    return {
        "rows_per_s": round(rate, 1),
        "eta_s": None if eta is None else round(eta, 1),
        "running_s": round(seconds, 3),
        "fraction": round(min(fraction, 1.0), 4),
    }


def job_error_sample(job: BatchJob, *, limit: int = 10) -> list[dict[str, str]]:
    """The first bad rows (row, column, reason): from the errors file, or from the parts so far."""
    if job.files_deleted_at is not None:
        return []
    final = storage.errors_path(job.pk)
    sources = [final] if final.exists() else sorted(storage.job_dir(job.pk).glob("parts/errors-*.csv"))
    sample: list[dict[str, str]] = []
    for source in sources:
        with open(source, newline="") as handle:
            reader = csv.reader(handle)
            for record in itertools.islice(reader, limit + 1):
                if record == ["row", "column", "reason"] or len(record) != 3:
                    continue
                sample.append({"row": record[0], "column": record[1], "reason": record[2]})
                if len(sample) >= limit:
                    return sample
    return sample
