from __future__ import annotations

from django.conf import settings
from django.db import models


class RegisteredModel(models.Model):
    """A named model; its versions carry the artifacts."""

    name = models.SlugField(max_length=64, unique=True)
    description = models.TextField(blank=True)
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="models")
    tags = models.JSONField(default=list, blank=True)
    # Promotion gates (issue: approvals): e.g. {"metric": "accuracy", "max_drop": 0.01}
    gate_settings = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # People told of promotion decisions besides the requester.
    watchers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="watched_models")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        VALIDATING = "validating"
        READY = "ready"
        FAILED = "failed"

    class Stage(models.TextChoices):
        NONE = "None"
        STAGING = "Staging"
        PRODUCTION = "Production"
        ARCHIVED = "Archived"

    model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    description = models.TextField(blank=True)
    # The artifact is content-addressed: its path in the store follows from the digest.
    artifact_sha256 = models.CharField(max_length=64, db_index=True)
    artifact_size = models.BigIntegerField()
    artifact_filename = models.CharField(max_length=255, blank=True)
    format = models.CharField(max_length=16, default="onnx")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    validation_report = models.JSONField(default=dict, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    # The validation lease (docs/operations.md, "Jobs"): the task running the validation
    # renews it; once it lapses (the worker died) registry.validation_sweep re-enqueues
    # the version, and after VALIDATION_MAX_ATTEMPTS starts it is failed with the reason.
    validation_lease_until = models.DateTimeField(null=True, blank=True)
    validation_lease_owner = models.CharField(max_length=64, blank=True)
    validation_attempts = models.PositiveSmallIntegerField(default=0)
    # While validating: {"running": check name, "done": checks finished}, written with each
    # lease renewal (no write of its own), cleared when the validation is recorded.
    validation_progress = models.JSONField(default=dict, blank=True)
    signature = models.JSONField(default=dict, blank=True)
    opset = models.JSONField(default=dict, blank=True)
    producer = models.CharField(max_length=200, blank=True)
    ir_version = models.PositiveIntegerField(null=True, blank=True)
    # metrics, params, training_data, code_commit, and anything else the uploader adds
    metadata = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    reference_stats = models.JSONField(default=dict, blank=True)
    stage = models.CharField(max_length=16, choices=Stage.choices, default=Stage.NONE, db_index=True)
    stage_changed_at = models.DateTimeField(null=True, blank=True)
    stage_changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["model", "version"], name="unique_version_per_model"),
            # The last guard against a double promotion: one Production version per model.
            models.UniqueConstraint(
                fields=["model"], condition=models.Q(stage="Production"), name="one_production_version_per_model"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.version}"


class PromotionRequest(models.Model):
    """A request to move a version to another stage, decided by an approver."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        PROMOTION = "promotion"
        ROLLBACK = "rollback"

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="promotion_requests")
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.PROMOTION)
    from_stage = models.CharField(max_length=16, choices=ModelVersion.Stage.choices)
    to_stage = models.CharField(max_length=16, choices=ModelVersion.Stage.choices)
    requester = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    justification = models.TextField()
    # [{"name", "ok", "detail"}], computed at request time and again at the decision.
    gates = models.JSONField(default=list, blank=True)
    # Evidence attached for the approver: [{"kind", "id", "url", "summary", "attached_by",
    # "attached_at"}], e.g. a batch compare job's diff report (inference.batch.services).
    evidence = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    comment = models.TextField(blank=True)
    override_reason = models.TextField(blank=True)
    # The version that was in Production before this approval (what a rollback returns to).
    replaced_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["version", "to_stage"],
                condition=models.Q(status="pending"),
                name="one_pending_request_per_version_and_stage",
            )
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.version} {self.from_stage} -> {self.to_stage} ({self.status})"

    @property
    def gates_ok(self) -> bool:
        return all(gate.get("ok") for gate in self.gates)


class Webhook(models.Model):
    """An HTTP endpoint told of events; bodies are signed with its secret (HMAC-SHA256)."""

    url = models.URLField(max_length=500)
    secret = models.CharField(max_length=128)
    # Event names ("promotion.approved", ...); an empty list means every event.
    events = models.JSONField(default=list, blank=True)
    # Events of this team's models only; None: every model's events.
    team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.CASCADE, related_name="webhooks")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event: str, team_id: int | None) -> bool:
        return (
            self.active
            and (not self.events or event in self.events)
            and (self.team_id is None or self.team_id == team_id)
        )
