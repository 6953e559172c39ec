from __future__ import annotations

from typing import Any

from rest_framework import serializers

from inference.models import ApiKey, Deployment, Endpoint, TrafficPolicyRevision
from inference.pool_services import deployment_warmup


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_version.model.name", read_only=True)
    version = serializers.IntegerField(source="model_version.version", read_only=True)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "model",
            "version",
            "role",
            "weight",
            "placement",
            "device",
            "provider",
            "max_batch_size",
            "max_queue_delay_ms",
            "pinned",
            "state",
            "state_detail",
            "updated_at",
        ]
        read_only_fields = fields


class RevisionSerializer(serializers.ModelSerializer):
    created_by = serializers.CharField(source="created_by.username", read_only=True, default=None, allow_null=True)

    class Meta:
        model = TrafficPolicyRevision
        fields = ["revision", "routes", "comment", "is_current", "created_by", "created_at"]
        read_only_fields = fields


class EndpointSerializer(serializers.ModelSerializer):
    team = serializers.CharField(source="team.name", read_only=True, default=None, allow_null=True)
    follows_model = serializers.CharField(source="follows_model.name", read_only=True, default=None, allow_null=True)
    owner = serializers.CharField(source="owner.username", read_only=True, default=None, allow_null=True)
    links = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [
            "name",
            "description",
            "team",
            "environment",
            "owner",
            "follows_model",
            "follow",
            "canary_weight",
            "preprocessing",
            "postprocessing",
            "max_rows_per_request",
            "timeout_ms",
            "sticky_header",
            "require_key",
            "outlier_scoring",
            "created_at",
            "updated_at",
            "links",
        ]
        read_only_fields = fields

    def get_links(self, obj: Endpoint) -> dict[str, str]:
        base = f"/api/v1/endpoints/{obj.name}/"
        return {"self": base, "traffic": base + "traffic", "predict": base + "predict", "v2": f"/v2/models/{obj.name}"}


class EndpointDetailSerializer(EndpointSerializer):
    traffic = serializers.SerializerMethodField()
    deployments = serializers.SerializerMethodField()

    class Meta(EndpointSerializer.Meta):
        fields = [*EndpointSerializer.Meta.fields, "traffic", "deployments"]
        read_only_fields = fields

    def get_traffic(self, obj: Endpoint) -> dict[str, Any] | None:
        current = obj.revisions.filter(is_current=True).first()
        return RevisionSerializer(current).data if current else None

    def get_deployments(self, obj: Endpoint) -> list[dict[str, Any]]:
        current = obj.revisions.filter(is_current=True).first()
        ids = {route["deployment"] for route in current.routes} if current else set()
        rows = list(obj.deployments.filter(pk__in=ids).select_related("model_version__model").order_by("pk"))
        warmup = deployment_warmup(d for d in rows if d.state == Deployment.State.LOADING)
        data: list[dict[str, Any]] = DeploymentSerializer(rows, many=True).data  # type: ignore[assignment]
        for row in data:
            # Only while loading on the worker pool: {"workers", "loading", "loaded", "failed"}.
            row["warmup"] = warmup.get(row["id"])
        return data


class EndpointWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True)
    team = serializers.CharField(
        required=False,
        allow_null=True,
        help_text="the owning team (you must be a member); default: the team of the model the first split "
        "serves or follows, else your only team, else none",
    )
    environment = serializers.ChoiceField(
        choices=Endpoint.Environment.choices,
        required=False,
        help_text="what the endpoint may serve (default development); changing it later is an admin's action",
    )
    follows_model = serializers.CharField(required=False, allow_null=True)
    follow = serializers.ChoiceField(choices=Endpoint.Follow.choices, required=False)
    canary_weight = serializers.IntegerField(required=False, min_value=1, max_value=99)
    preprocessing = serializers.JSONField(required=False)
    postprocessing = serializers.JSONField(required=False)
    max_rows_per_request = serializers.IntegerField(required=False, min_value=1, max_value=1_000_000)
    timeout_ms = serializers.IntegerField(required=False, min_value=1, max_value=600_000)
    sticky_header = serializers.CharField(required=False, allow_blank=True, max_length=64)
    require_key = serializers.BooleanField(required=False)
    outlier_scoring = serializers.BooleanField(
        required=False,
        help_text="score each request against the serving version's reference statistics and count outliers "
        "(docs/monitoring.md); ?outlier=1 returns the scores",
    )
    routes = serializers.JSONField(required=False, help_text="an initial traffic split, as for PUT .../traffic")


class RouteSerializer(serializers.Serializer):
    model = serializers.CharField()
    version = serializers.IntegerField()
    role = serializers.ChoiceField(choices=Deployment.Role.values, default="primary")
    weight = serializers.IntegerField(min_value=0, max_value=100, required=False)
    placement = serializers.ChoiceField(choices=Deployment.Placement.values, required=False)
    device = serializers.ChoiceField(choices=Deployment.Device.values, required=False)
    max_batch_size = serializers.IntegerField(required=False)
    max_queue_delay_ms = serializers.FloatField(required=False)
    pinned = serializers.BooleanField(
        required=False, help_text="stay loaded: never unloaded to make room under a memory budget (default false)"
    )


class TrafficWriteSerializer(serializers.Serializer):
    routes = RouteSerializer(many=True)
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class RollbackSerializer(serializers.Serializer):
    revision = serializers.IntegerField(required=False, allow_null=True, default=None)


class ApiKeySerializer(serializers.ModelSerializer):
    endpoints = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)

    class Meta:
        model = ApiKey
        fields = ["name", "prefix", "endpoints", "created_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    endpoints = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="more endpoints the key may call (this one always)"
    )
