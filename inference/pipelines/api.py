"""The pipelines' REST API (DRF): thin views over inference.pipelines.services."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadOrEngineerWrites, get_visible_or_404, team_for_user, team_scope
from config.errors import DomainError
from config.http import client_ip
from inference.pipelines import features, services
from inference.pipelines.models import FeatureSet, Pipeline, PipelineVersion


class PipelineVersionSerializer(serializers.ModelSerializer[PipelineVersion]):
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = PipelineVersion
        fields = ["version", "spec", "signature", "resolved_models", "comment", "created_by", "created_at"]


class PipelineSerializer(serializers.ModelSerializer[Pipeline]):
    team = serializers.CharField(source="team.name", default=None, read_only=True)
    latest = serializers.SerializerMethodField()

    class Meta:
        model = Pipeline
        fields = ["name", "description", "team", "created_at", "updated_at", "latest"]

    def get_latest(self, obj: Pipeline) -> int | None:
        return obj.versions.order_by("-version").values_list("version", flat=True).first()


class PipelineDetailSerializer(PipelineSerializer):
    versions = PipelineVersionSerializer(many=True, read_only=True)

    class Meta(PipelineSerializer.Meta):
        fields = [*PipelineSerializer.Meta.fields, "versions"]


class PipelineWriteSerializer(serializers.Serializer[Any]):
    name = serializers.SlugField(max_length=64)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    team = serializers.CharField(required=False, allow_null=True, default=None)
    spec = serializers.JSONField()
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class VersionWriteSerializer(serializers.Serializer[Any]):
    spec = serializers.JSONField()
    comment = serializers.CharField(required=False, allow_blank=True, default="")


class ValidateSerializer(serializers.Serializer[Any]):
    spec = serializers.JSONField()
    team = serializers.CharField(required=False, allow_null=True, default=None)


def _pipelines(request: Request) -> Any:
    return team_scope(Pipeline.objects.select_related("team"), request.user)


def _pipeline(request: Request, name: str) -> Pipeline:
    return get_visible_or_404(  # type: ignore[no-any-return]
        Pipeline.objects.select_related("team"), request.user, name=name
    )


class PipelineListCreate(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="List pipelines", responses=PipelineSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(PipelineSerializer(_pipelines(request), many=True).data)

    @extend_schema(
        summary="Create a pipeline (its version 1, checked)",
        request=PipelineWriteSerializer,
        responses={201: PipelineDetailSerializer},
    )
    def post(self, request: Request) -> Response:
        data = PipelineWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = team_for_user(request.user, data.validated_data["team"]) if data.validated_data.get("team") else None
        version = services.pipeline_create(
            name=data.validated_data["name"],
            spec=data.validated_data["spec"],
            user=request.user,
            team=team,
            description=data.validated_data["description"],
            comment=data.validated_data["comment"],
            source_ip=client_ip(request),
        )
        return Response(PipelineDetailSerializer(version.pipeline).data, status=status.HTTP_201_CREATED)


class PipelineDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="One pipeline with its versions", responses=PipelineDetailSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(PipelineDetailSerializer(_pipeline(request, name)).data)


class PipelineVersions(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Add a version (checked; attach it with the endpoint's traffic)",
        request=VersionWriteSerializer,
        responses={201: PipelineVersionSerializer},
    )
    def post(self, request: Request, name: str) -> Response:
        pipeline = _pipeline(request, name)
        data = VersionWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        version = services.pipeline_version_create(
            pipeline=pipeline,
            spec=data.validated_data["spec"],
            user=request.user,
            comment=data.validated_data["comment"],
            source_ip=client_ip(request),
        )
        return Response(PipelineVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class PipelineVersionDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="One version of a pipeline", responses=PipelineVersionSerializer)
    def get(self, request: Request, name: str, version: int) -> Response:
        pipeline = _pipeline(request, name)
        found = get_visible_or_404(
            PipelineVersion.objects.filter(pipeline=pipeline),
            request.user,
            team_field="pipeline__team",
            version=version,
        )
        return Response(PipelineVersionSerializer(found).data)


class PipelineValidate(APIView):
    """The editor's check: the same as saving, without saving."""

    permission_classes = [ReadOrEngineerWrites]
    serializer_class = ValidateSerializer

    @extend_schema(
        summary="Check a pipeline spec without saving it", request=ValidateSerializer, responses=OpenApiTypes.OBJECT
    )
    def post(self, request: Request) -> Response:
        data = ValidateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = team_for_user(request.user, data.validated_data["team"]) if data.validated_data.get("team") else None
        graph = services.spec_check(data.validated_data["spec"], team=team)
        return Response(
            {
                "ok": True,
                "signature": graph.signature_dict(),
                "order": list(graph.order),
                "steps": [
                    {
                        "name": s.name,
                        "kind": s.kind,
                        "reads": list(s.reads),
                        "owner": s.owner,
                        "writes": {n: t.describe() for n, t in s.writes.items()},
                    }
                    for s in graph.steps.values()
                ],
            }
        )


class FeatureSetSerializer(serializers.ModelSerializer[FeatureSet]):
    team = serializers.CharField(source="team.name", default=None, read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = FeatureSet
        fields = ["name", "team", "rows_loaded", "loaded_at", "created_by", "created_at"]


class FeatureSetList(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="List the feature sets the caller may see", responses=FeatureSetSerializer(many=True))
    def get(self, request: Request) -> Response:
        sets = team_scope(FeatureSet.objects.select_related("team", "created_by"), request.user)
        return Response(FeatureSetSerializer(sets, many=True).data)


class FeatureLoad(APIView):
    """Load entities into the online store from a CSV or Parquet upload (field `file`) or
    JSON {"key": "card_id", "rows": [{...}, ...]}. A new set belongs to `team` (else the
    caller's only team); another team's set is a 404."""

    permission_classes = [ReadOrEngineerWrites]
    parser_classes = [MultiPartParser, FormParser, JSONParser]
    serializer_class = None

    @extend_schema(
        summary="Load features into the online store (CSV, Parquet or JSON rows)",
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, feature_set: str) -> Response:
        key = request.data.get("key")
        if not isinstance(key, str) or not key:
            raise DomainError("key: name the column that holds the entity key")
        upload = request.FILES.get("file") if hasattr(request, "FILES") else None
        if upload is not None:
            rows = list(features.rows_from_file(upload.name or "upload.csv", upload.read()))
        else:
            rows = request.data.get("rows")
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise DomainError("rows: expected a list of objects (or upload a CSV/Parquet `file`)")
        team_name = request.data.get("team")
        if team_name is not None and not isinstance(team_name, str):
            raise DomainError("team: expected a team name")
        result = services.feature_set_load(
            name=feature_set,
            key=key,
            rows=rows,
            user=request.user,
            team=team_for_user(request.user, team_name) if team_name else None,
            source_ip=client_ip(request),
        )
        return Response(result, status=status.HTTP_201_CREATED)
