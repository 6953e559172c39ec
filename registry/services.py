"""Registry rules: registering models, adding versions, recording validation, archiving."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Max, Q
from django.utils import timezone

from accounts.models import Team
from audit.services import audit_record
from config import queue
from config.errors import Conflict
from registry import hooks, storage
from registry.errors import DuplicateArtifact, InvalidMetadata, InvalidName, InvalidTransition
from registry.gates import gate_settings_check
from registry.models import ModelVersion, RegisteredModel

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$")
_METADATA_TEXT_FIELDS = ("training_data", "code_commit")


def name_check(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidName(
            f"name {name!r} is not allowed: use 1-64 lowercase letters, digits, '-' or '_', "
            "starting and ending with a letter or digit"
        )
    return name


def tags_check(tags: Any) -> list[str]:
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise InvalidMetadata("tags: expected a list of strings")
    for tag in tags:
        if not TAG_RE.match(tag):
            raise InvalidMetadata(f"tag {tag!r} is not allowed: up to 64 letters, digits and _.:=-")
    return sorted(set(tags))


def metadata_check(metadata: Any) -> dict[str, Any]:
    """Free-form JSON object, with typed well-known keys: metrics (numbers), params."""
    if not isinstance(metadata, dict):
        raise InvalidMetadata(f"metadata: expected a JSON object, got {type(metadata).__name__}")
    metrics = metadata.get("metrics", {})
    if not isinstance(metrics, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values()
    ):
        raise InvalidMetadata('metadata.metrics: expected an object of numbers, e.g. {"accuracy": 0.93}')
    if not isinstance(metadata.get("params", {}), dict):
        raise InvalidMetadata("metadata.params: expected an object")
    for key in _METADATA_TEXT_FIELDS:
        if key in metadata and not isinstance(metadata[key], str):
            raise InvalidMetadata(f"metadata.{key}: expected a string")
    return metadata


def model_register(
    *,
    name: str,
    user: AbstractBaseUser,
    description: str = "",
    tags: list[str] | None = None,
    team: Team | None = None,
    source_ip: str | None = None,
) -> RegisteredModel:
    name_check(name)
    try:
        with transaction.atomic():
            model = RegisteredModel.objects.create(
                name=name, description=description, tags=tags_check(tags or []), team=team, created_by=user
            )
            audit_record(actor=user, action="model.register", obj=model, after={"name": name}, source_ip=source_ip)
    except IntegrityError:
        raise Conflict(f"a model named {name!r} already exists") from None
    return model


@transaction.atomic
def model_update(
    *, model: RegisteredModel, user: AbstractBaseUser, source_ip: str | None = None, **changes: Any
) -> RegisteredModel:
    model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
    before = {key: getattr(model, key) for key in changes}
    if "tags" in changes:
        changes["tags"] = tags_check(changes["tags"])
    if "gate_settings" in changes:
        changes["gate_settings"] = gate_settings_check(changes["gate_settings"])
    for key, value in changes.items():
        setattr(model, key, value)
    model.save(update_fields=[*changes, "updated_at"])
    audit_record(actor=user, action="model.update", obj=model, before=before, after=changes, source_ip=source_ip)
    return model


def model_version_create(
    *,
    model: RegisteredModel,
    staged: storage.StagedArtifact,
    user: AbstractBaseUser | None,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    description: str = "",
    source_ip: str | None = None,
) -> ModelVersion:
    """Put a staged upload in the store and add it as the next version, pending validation.

    The same bytes twice for one model are refused (409). On any failure the staged file
    is removed, and so is the stored file if this call created it and no row uses it.
    """
    created_file = False
    try:
        metadata = metadata_check(metadata or {})
        tags = tags_check(tags or [])
        with transaction.atomic():
            locked = RegisteredModel.objects.select_for_update().get(pk=model.pk)
            existing = locked.versions.filter(artifact_sha256=staged.sha256).values_list("version", flat=True).first()
            if existing is not None:
                raise DuplicateArtifact(
                    f"this artifact (sha256 {staged.sha256[:12]}…) is already version {existing} of {locked.name}",
                    details={"version": existing, "sha256": staged.sha256},
                )
            _, created_file = storage.commit(staged)
            number = (locked.versions.aggregate(n=Max("version"))["n"] or 0) + 1
            version = ModelVersion.objects.create(
                model=locked,
                version=number,
                description=description,
                artifact_sha256=staged.sha256,
                artifact_size=staged.size,
                artifact_filename=staged.filename,
                metadata=metadata,
                tags=tags,
                created_by=user,
            )
            audit_record(
                actor=user,
                action="version.upload",
                obj=version,
                after={"sha256": staged.sha256, "size": staged.size, "filename": staged.filename},
                source_ip=source_ip,
            )
            transaction.on_commit(lambda: _validation_enqueue(version.pk))
    except BaseException:
        staged.discard()
        if created_file and not ModelVersion.objects.filter(artifact_sha256=staged.sha256).exists():
            storage.artifact_path(staged.sha256).unlink(missing_ok=True)
        raise
    return version


def _validation_enqueue(version_id: int) -> None:
    try:
        queue.enqueue("registry.model_version_validate", args=[version_id])
    except Exception:
        # The row stays pending; the periodic sweep (registry.tasks) picks it up again.
        log.exception("could not enqueue validation of version %s", version_id)


@transaction.atomic
def model_version_start_validation(
    *, version_id: int, owner: str, lease_s: float, max_attempts: int
) -> ModelVersion | None:
    """Take the version's validation lease; None if there is nothing to run here.

    None when it is already decided (tasks may run twice), when another task holds a
    live lease on it, or when it has been started `max_attempts` times already (then it
    is failed with that reason: a validation must never stay `validating` for good). A
    task redelivered after its worker died carries the same `owner` and takes its lease
    back at once.
    """
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.status in (ModelVersion.Status.READY, ModelVersion.Status.FAILED):
        return None
    now = timezone.now()
    held = (
        version.status == ModelVersion.Status.VALIDATING
        and version.validation_lease_until is not None
        and version.validation_lease_until > now
    )
    if held and version.validation_lease_owner != owner:
        return None
    if version.validation_attempts >= max_attempts:
        _validation_give_up(version)
        return None
    version.status = ModelVersion.Status.VALIDATING
    version.validation_attempts += 1
    version.validation_lease_until = now + timedelta(seconds=lease_s)
    version.validation_lease_owner = owner[:64]
    version.validation_progress = {}
    version.save(
        update_fields=[
            "status",
            "validation_attempts",
            "validation_lease_until",
            "validation_lease_owner",
            "validation_progress",
        ]
    )
    return version


def model_version_renew_validation_lease(
    *, version_id: int, owner: str, lease_s: float, progress: dict[str, Any] | None = None
) -> bool:
    """Extend a running validation's lease, recording its progress (the check running, how
    many are done) in the same UPDATE; False if this owner no longer holds it."""
    fields: dict[str, Any] = {"validation_lease_until": timezone.now() + timedelta(seconds=lease_s)}
    if progress is not None:
        fields["validation_progress"] = progress
    renewed = ModelVersion.objects.filter(
        pk=version_id, status=ModelVersion.Status.VALIDATING, validation_lease_owner=owner[:64]
    ).update(**fields)
    return bool(renewed)


@transaction.atomic
def model_version_validation_sweep(*, lease_s: float, pending_grace_s: float, max_attempts: int) -> list[int]:
    """The versions whose validation must be enqueued again; fails those out of attempts.

    Picks versions `validating` whose lease lapsed (their worker died) and versions
    `pending` that no task started: never enqueued (a broker outage at upload), or
    re-enqueued by an earlier sweep more than a lease ago. Each one picked is put back
    to `pending` with a lease of its own, so that the next sweep leaves it alone while
    its task waits in the queue.
    """
    now = timezone.now()
    lapsed = Q(validation_lease_until__lt=now) | Q(validation_lease_until__isnull=True)
    due = Q(status=ModelVersion.Status.VALIDATING) & lapsed
    due |= Q(status=ModelVersion.Status.PENDING, validation_lease_until__lt=now)
    due |= Q(
        status=ModelVersion.Status.PENDING,
        validation_lease_until__isnull=True,
        created_at__lt=now - timedelta(seconds=pending_grace_s),
    )
    versions = list(ModelVersion.objects.select_for_update(skip_locked=True).filter(due).order_by("pk")[:100])
    enqueue = []
    for version in versions:
        if version.validation_attempts >= max_attempts:
            _validation_give_up(version)
            continue
        version.status = ModelVersion.Status.PENDING
        version.validation_lease_until = now + timedelta(seconds=lease_s)
        version.validation_lease_owner = ""
        version.save(update_fields=["status", "validation_lease_until", "validation_lease_owner"])
        enqueue.append(version.pk)
    return enqueue


def _validation_give_up(version: ModelVersion) -> None:
    attempts = version.validation_attempts
    report = {
        "ok": False,
        "checks": [],
        "error": f"validation did not finish in {attempts} attempts (the worker running it stopped each time)",
    }
    model_version_record_validation(version_id=version.pk, report=report)


@transaction.atomic
def model_version_record_validation(*, version_id: int, report: dict[str, Any]) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    ok = bool(report.get("ok"))
    version.status = ModelVersion.Status.READY if ok else ModelVersion.Status.FAILED
    version.validation_report = report
    version.validated_at = timezone.now()
    version.signature = report.get("signature") or {}
    version.opset = report.get("opset") or {}
    version.producer = (report.get("producer") or "")[:200]
    version.ir_version = report.get("ir_version")
    version.validation_lease_until = None
    version.validation_lease_owner = ""
    version.validation_progress = {}
    version.save(
        update_fields=[
            "validation_progress",
            "status",
            "validation_report",
            "validated_at",
            "signature",
            "opset",
            "producer",
            "ir_version",
            "validation_lease_until",
            "validation_lease_owner",
        ]
    )
    audit_record(
        actor=None,
        action="version.validated" if ok else "version.validation_failed",
        obj=version,
        before={"status": ModelVersion.Status.VALIDATING},
        after={"status": version.status, "error": report.get("error", "")},
    )
    return version


@transaction.atomic
def model_version_update(
    *,
    version: ModelVersion,
    user: AbstractBaseUser,
    metadata: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    description: str | None = None,
    source_ip: str | None = None,
) -> ModelVersion:
    """Attach metadata (merged key by key), replace tags, or change the description."""
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    fields = []
    if metadata is not None:
        merged = metadata_check({**version.metadata, **metadata})
        before["metadata"], after["metadata"] = version.metadata, merged
        version.metadata = merged
        fields.append("metadata")
    if tags is not None:
        before["tags"], after["tags"] = version.tags, tags_check(tags)
        version.tags = after["tags"]
        fields.append("tags")
    if description is not None:
        before["description"], after["description"] = version.description, description
        version.description = description
        fields.append("description")
    if fields:
        version.save(update_fields=fields)
        audit_record(actor=user, action="version.update", obj=version, before=before, after=after, source_ip=source_ip)
    return version


@transaction.atomic
def model_version_archive(
    *, version: ModelVersion, user: AbstractBaseUser, source_ip: str | None = None
) -> ModelVersion:
    version = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if version.stage == ModelVersion.Stage.ARCHIVED:
        raise InvalidTransition(f"{version} is already archived")
    if version.stage == ModelVersion.Stage.PRODUCTION:
        raise InvalidTransition(
            f"{version} is in Production: promote another version or ask for a promotion to Archived"
        )
    hooks.serving_refuse(version=version)
    return model_version_set_stage(version=version, stage=ModelVersion.Stage.ARCHIVED, user=user, source_ip=source_ip)


def model_version_set_stage(
    *, version: ModelVersion, stage: str, user: AbstractBaseUser | None, source_ip: str | None = None
) -> ModelVersion:
    """Low-level stage change, called inside the caller's transaction with the row locked."""
    before = version.stage
    version.stage = stage
    version.stage_changed_at = timezone.now()
    version.stage_changed_by = user
    version.save(update_fields=["stage", "stage_changed_at", "stage_changed_by"])
    audit_record(
        actor=user,
        action="version.stage",
        obj=version,
        before={"stage": before},
        after={"stage": stage},
        source_ip=source_ip,
    )
    return version
