from __future__ import annotations

from typing import Any

from rest_framework import serializers

from audit.models import AuditEvent
from registry.models import ModelVersion, PromotionRequest, RegisteredModel


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model.name", read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None)
    links = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "description",
            "status",
            "stage",
            "artifact_sha256",
            "artifact_size",
            "artifact_filename",
            "format",
            "signature",
            "opset",
            "producer",
            "ir_version",
            "metadata",
            "tags",
            "validation_report",
            "validation_progress",
            "validated_at",
            "stage_changed_at",
            "created_by",
            "created_at",
            "links",
        ]
        read_only_fields = fields

    def get_links(self, obj: ModelVersion) -> dict[str, str]:
        base = f"/api/v1/models/{obj.model.name}/versions/{obj.version}/"
        return {"self": base, "artifact": base + "artifact"}


class ModelVersionSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["version", "status", "stage", "artifact_sha256", "created_at"]
        read_only_fields = fields


class RegisteredModelSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.name", read_only=True, default=None, allow_null=True)
    latest_versions = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = ["name", "description", "team", "tags", "gate_settings", "created_at", "updated_at", "latest_versions"]
        read_only_fields = fields

    def get_latest_versions(self, obj: RegisteredModel) -> list[dict[str, Any]]:
        """The newest version, plus the newest one in each stage (MLflow's latest_versions)."""
        versions = getattr(obj, "prefetched_versions", None)
        if versions is None:
            versions = list(obj.versions.order_by("-version"))
        picked: dict[str, ModelVersion] = {}
        for version in versions:
            picked.setdefault("latest", version)
            picked.setdefault(version.stage, version)
        unique = {v.pk: v for v in picked.values()}
        return ModelVersionSummarySerializer(list(unique.values()), many=True).data  # type: ignore[return-value]


class ModelCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)
    team = serializers.CharField(required=False, allow_null=True, default=None)


class ModelUpdateSerializer(serializers.Serializer):
    description = serializers.CharField(required=False, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    gate_settings = serializers.DictField(required=False)


class VersionUploadSerializer(serializers.Serializer):
    artifact = serializers.FileField(help_text="the ONNX file")
    metadata = serializers.JSONField(
        required=False, help_text="JSON object: metrics, params, training_data, code_commit"
    )
    tags = serializers.JSONField(required=False, help_text="JSON list of tags")
    description = serializers.CharField(required=False, allow_blank=True, default="")


class VersionUpdateSerializer(serializers.Serializer):
    metadata = serializers.DictField(required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=64), required=False)
    description = serializers.CharField(required=False, allow_blank=True)


class PromotionRequestSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="version.model.name", read_only=True)
    version = serializers.IntegerField(source="version.version", read_only=True)
    requester = serializers.CharField(source="requester.username", read_only=True, default=None)
    reviewer = serializers.CharField(source="reviewer.username", read_only=True, default=None)
    replaced_version = serializers.IntegerField(source="replaced_version.version", read_only=True, default=None)
    gates_ok = serializers.BooleanField(read_only=True)
    links = serializers.SerializerMethodField()

    class Meta:
        model = PromotionRequest
        fields = [
            "id",
            "kind",
            "model",
            "version",
            "from_stage",
            "to_stage",
            "status",
            "requester",
            "justification",
            "gates",
            "gates_ok",
            "evidence",
            "reviewer",
            "comment",
            "override_reason",
            "replaced_version",
            "created_at",
            "decided_at",
            "links",
        ]
        read_only_fields = fields

    def get_links(self, obj: PromotionRequest) -> dict[str, str]:
        base = f"/api/v1/promotions/{obj.pk}/"
        return {"self": base, "approve": base + "approve", "reject": base + "reject", "cancel": base + "cancel"}


class PromotionCreateSerializer(serializers.Serializer):
    to_stage = serializers.ChoiceField(choices=["Staging", "Production", "Archived"])
    justification = serializers.CharField(max_length=10_000)


class PromotionDecisionSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    override_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=10_000,
        help_text="admins only: approve despite failed gates, with this written reason (recorded)",
    )


class CommentSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)


class AuditEventSerializer(serializers.ModelSerializer):
    actor = serializers.CharField(source="actor_name", read_only=True)

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "before",
            "after",
            "source_ip",
        ]
        read_only_fields = fields
