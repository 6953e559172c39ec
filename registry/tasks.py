"""Registry tasks: thin, take IDs, safe to run twice."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from registry import services, storage
from registry.models import ModelVersion

log = logging.getLogger(__name__)


@shared_task(name="registry.model_version_validate")
def model_version_validate(version_id: int) -> str:
    """Validate an uploaded artifact in a child process with memory and time limits."""
    from inference.runtime.validation import validate_model_file

    version = services.model_version_start_validation(version_id=version_id)
    if version is None:
        return "already validated"
    path = storage.artifact_path(version.artifact_sha256)
    report = validate_model_file(
        str(path),
        memory_limit_bytes=settings.VALIDATION_MEMORY_LIMIT_BYTES,
        timeout_s=settings.VALIDATION_TIMEOUT_S,
    )
    version = services.model_version_record_validation(version_id=version_id, report=report.to_dict())
    log.info("validated %s: %s", version, version.status)
    return version.status


@shared_task(name="registry.validation_sweep")
def validation_sweep() -> int:
    """Re-enqueue versions stuck pending (a lost message, Redis restarted) past a deadline."""
    deadline = timezone.now() - timedelta(seconds=settings.VALIDATION_TIMEOUT_S * 2 + 60)
    stuck = list(
        ModelVersion.objects.filter(
            status__in=[ModelVersion.Status.PENDING, ModelVersion.Status.VALIDATING], created_at__lt=deadline
        ).values_list("pk", flat=True)[:100]
    )
    for version_id in stuck:
        model_version_validate.delay(version_id)
    return len(stuck)
