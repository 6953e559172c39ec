"""The registry's REST API: thin views that parse, call a service and shape the answer."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db.models import Prefetch
from django.http import FileResponse, HttpRequest
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import WorkerKeyAuthentication, WorkerPrincipal
from accounts.models import Team
from accounts.permissions import ReadOrEngineerWrites, team_check
from config.errors import NotFound, PayloadTooLarge
from config.http import client_ip
from config.parsers import parse_json
from registry import selectors, services, storage
from registry.models import ModelVersion
from registry.serializers import (
    ModelCreateSerializer,
    ModelUpdateSerializer,
    ModelVersionSerializer,
    RegisteredModelSerializer,
    VersionUpdateSerializer,
    VersionUploadSerializer,
)

_FILTERS = [
    OpenApiParameter("search", str, description="substring of name or description"),
    OpenApiParameter("tag", str),
    OpenApiParameter("stage", str, enum=ModelVersion.Stage.values),
    OpenApiParameter("status", str, enum=ModelVersion.Status.values),
]


class ModelListCreate(generics.ListAPIView):
    serializer_class = RegisteredModelSerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.model_list(
            search=params.get("search", ""),
            tag=params.get("tag", ""),
            stage=params.get("stage", ""),
            status=params.get("status", ""),
            team=params.get("team", ""),
            user=self.request.user,
        ).prefetch_related(
            Prefetch("versions", queryset=ModelVersion.objects.order_by("-version"), to_attr="prefetched_versions")
        )

    @extend_schema(summary="List models", parameters=[*_FILTERS, OpenApiParameter("team", str)])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Register a model", request=ModelCreateSerializer, responses={201: RegisteredModelSerializer}
    )
    def post(self, request: Request) -> Response:
        data = ModelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        team = None
        if data.validated_data["team"]:
            team = Team.objects.filter(name=data.validated_data["team"]).first()
            if team is None:
                raise NotFound(f"no team named {data.validated_data['team']!r}")
            team_check(request.user, team.pk, what=f"a model of team {team.name!r}")
        model = services.model_register(
            name=data.validated_data["name"],
            description=data.validated_data["description"],
            tags=data.validated_data["tags"],
            team=team,
            user=request.user,
            source_ip=client_ip(request),
        )
        return Response(RegisteredModelSerializer(model).data, status=status.HTTP_201_CREATED)


class ModelDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="One model", responses=RegisteredModelSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(RegisteredModelSerializer(selectors.model_get(name=name, user=request.user)).data)

    @extend_schema(
        summary="Change a model's description, tags or gates",
        request=ModelUpdateSerializer,
        responses=RegisteredModelSerializer,
    )
    def patch(self, request: Request, name: str) -> Response:
        data = ModelUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        model = services.model_update(
            model=selectors.model_get(name=name, user=request.user),
            user=request.user,
            source_ip=client_ip(request),
            **data.validated_data,
        )
        return Response(RegisteredModelSerializer(model).data)


def _json_field(value: Any, field: str, expected: type) -> Any:
    """Multipart fields arrive as text: parse JSON ones and check their type."""
    if value is None or value == "":
        return None
    if isinstance(value, (str, bytes)):
        try:
            value = parse_json(value.encode() if isinstance(value, str) else value)
        except ParseError as exc:
            raise ParseError(f"{field}: {exc.detail}") from None
    if not isinstance(value, expected):
        raise ParseError(f"{field}: expected a JSON {expected.__name__.replace('dict', 'object')}")
    return value


class VersionListCreate(generics.ListAPIView):
    serializer_class = ModelVersionSerializer
    permission_classes = [ReadOrEngineerWrites]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        if request.method == "POST":
            # Stream the artifact into the store while hashing it, before anything parses.
            request.upload_handlers = [storage.ArtifactUploadHandler(request), TemporaryFileUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    def get_parsers(self) -> list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return super().get_parsers()

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.version_list(
            model=selectors.model_get(name=self.kwargs["name"], user=self.request.user),
            stage=params.get("stage", ""),
            status=params.get("status", ""),
            tag=params.get("tag", ""),
        )

    @extend_schema(summary="List a model's versions", parameters=_FILTERS[1:])
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Upload a version (multipart: artifact file, optional metadata JSON)",
        request={"multipart/form-data": VersionUploadSerializer},
        responses={201: ModelVersionSerializer},
    )
    def post(self, request: Request, name: str) -> Response:
        model = selectors.model_get(name=name, user=request.user)
        files = request.FILES
        uploaded = files.get("artifact")
        staged_files = [f for f in files.values() if isinstance(f, storage.StagedUploadedFile)]
        try:
            if any(getattr(h, "too_large", False) for h in request._request.upload_handlers):
                from django.conf import settings

                raise PayloadTooLarge(f"artifact is larger than the limit of {settings.MAX_ARTIFACT_BYTES} bytes")
            if not isinstance(uploaded, storage.StagedUploadedFile):
                raise ParseError("artifact: a file is required (multipart field 'artifact')")
            if uploaded.size == 0:
                raise ParseError("artifact: the file is empty")
            metadata = _json_field(request.data.get("metadata"), "metadata", dict)
            tags = _json_field(request.data.get("tags"), "tags", list)
        except BaseException:
            for staged in staged_files:
                staged.staged.discard()
            raise
        version = services.model_version_create(
            model=model,
            staged=uploaded.staged,
            user=request.user,
            metadata=metadata,
            tags=tags,
            description=str(request.data.get("description", ""))[:10_000],
            source_ip=client_ip(request),
        )
        version.refresh_from_db()
        return Response(ModelVersionSerializer(version).data, status=status.HTTP_201_CREATED)


class VersionDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="One version: status, signature, sha256, metadata, validation report", responses=ModelVersionSerializer
    )
    def get(self, request: Request, name: str, version: int) -> Response:
        return Response(
            ModelVersionSerializer(selectors.version_get(model_name=name, version=version, user=request.user)).data
        )

    @extend_schema(
        summary="Attach metadata (merged), replace tags, change description",
        request=VersionUpdateSerializer,
        responses=ModelVersionSerializer,
    )
    def patch(self, request: Request, name: str, version: int) -> Response:
        data = VersionUpdateSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        updated = services.model_version_update(
            version=selectors.version_get(model_name=name, version=version, user=request.user),
            user=request.user,
            source_ip=client_ip(request),
            **data.validated_data,
        )
        return Response(ModelVersionSerializer(updated).data)


class VersionArchive(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="Archive a version", request=None, responses=ModelVersionSerializer)
    def post(self, request: Request, name: str, version: int) -> Response:
        archived = services.model_version_archive(
            version=selectors.version_get(model_name=name, version=version, user=request.user),
            user=request.user,
            source_ip=client_ip(request),
        )
        return Response(ModelVersionSerializer(archived).data)


def _artifact_response(path: Any, sha256: str, filename: str) -> FileResponse:
    response = FileResponse(open(path, "rb"), as_attachment=True, filename=filename)
    response["X-Content-SHA256"] = sha256
    return response


class VersionArtifact(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="Download the artifact", responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    def get(self, request: Request, name: str, version: int) -> FileResponse:
        found = selectors.version_get(model_name=name, version=version, user=request.user)
        path = storage.artifact_path(found.artifact_sha256)
        if not path.exists():
            raise NotFound(f"the artifact of {found} is missing from the store")
        return _artifact_response(path, found.artifact_sha256, f"{name}-v{found.version}.onnx")


class IsInferenceWorker(BasePermission):
    """Only an inference worker's key (accounts.authentication.WorkerKeyAuthentication)."""

    message = "this route is for inference workers: 'Authorization: Bearer mh_worker_...'"

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, WorkerPrincipal)


class ArtifactByDigest(APIView):
    """What an inference worker without the shared volume loads: an artifact, by its sha256.

    Team-independent (a worker serves every team's deployments) and read-only; a worker
    key opens nothing else, and a person's token does not open this.
    """

    authentication_classes = [WorkerKeyAuthentication]
    permission_classes = [IsInferenceWorker]

    @extend_schema(
        summary="Download an artifact by sha256 (inference workers' key only)",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, sha256: str) -> FileResponse:
        sha256 = sha256.lower()
        if not storage.is_digest(sha256):
            raise ParseError(f"not a sha256 digest: {sha256[:80]!r}")
        if not selectors.artifact_known(sha256=sha256):
            raise NotFound(f"no model version has an artifact with sha256 {sha256}")
        path = storage.artifact_path(sha256)
        if not path.exists():
            raise NotFound(f"the artifact {sha256} is missing from the store")
        return _artifact_response(path, sha256, f"{sha256}.onnx")
