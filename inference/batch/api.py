"""The batch jobs API: thin views that parse, call a service and shape the answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.http import FileResponse, HttpRequest
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadOrEngineerWrites
from config.errors import DomainError, NotFound, PayloadTooLarge
from config.http import client_ip
from config.parsers import JsonParser
from inference.batch import selectors, services, storage
from inference.batch.models import BatchJob
from inference.batch.serializers import (
    BatchJobCreateSerializer,
    BatchJobDetailSerializer,
    BatchJobSerializer,
    CompareAttachSerializer,
)
from registry.serializers import PromotionRequestSerializer


class Gone(DomainError):
    status = 410
    code = "gone"


def _json_value(value: Any, field: str) -> Any:
    """A multipart field that carries JSON arrives as text: parse it."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            raise services.BatchInputError(f"{field}: expected JSON, got {value[:60]!r}") from None
    return value


def _int(value: Any, field: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise services.BatchInputError(f"{field}: expected an integer, got {value!r}") from None


def _float(value: Any, field: str, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise services.BatchInputError(f"{field}: expected a number, got {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def job_request_parse(data: Any) -> services.JobRequest:
    if not hasattr(data, "get"):
        raise services.BatchInputError("expected a JSON object (or a multipart form) describing the job")
    model = data.get("model") or ""
    endpoint = data.get("endpoint") or ""
    if not isinstance(model, str) or not isinstance(endpoint, str):
        raise services.BatchInputError("model, endpoint: expected a name")
    if not model and not endpoint and not data.get("pipeline"):
        raise services.BatchInputError("model: required, a model name or name@production (or an endpoint)")
    compare_model = data.get("compare_model") or ""
    if not isinstance(compare_model, str):
        raise services.BatchInputError("compare_model: expected a model name or name@production")
    passthrough = data.get("passthrough")
    if isinstance(passthrough, str) and not passthrough.lstrip().startswith("["):
        passthrough = [p.strip() for p in passthrough.split(",") if p.strip()]
    passthrough = _json_value(passthrough, "passthrough") if passthrough is not None else []
    if not isinstance(passthrough, list) or not all(isinstance(p, str) for p in passthrough):
        raise services.BatchInputError("passthrough: expected a list of column names")
    mapping = data.get("column_mapping")
    mapping = _json_value(mapping, "column_mapping") if mapping not in (None, "") else None
    if mapping is not None and not isinstance(mapping, dict):
        raise services.BatchInputError('column_mapping: expected an object {"input": ["column", ...]}')
    return services.JobRequest(
        model=model,
        version=_int(data.get("version"), "version"),
        endpoint=endpoint,
        compare_model=compare_model,
        compare_version=_int(data.get("compare_version"), "compare_version"),
        tolerance=_float(data.get("tolerance"), "tolerance", 1e-6),
        input_format=data.get("input_format") or None,
        output_format=data.get("output_format") or None,
        column_mapping=mapping,
        passthrough=passthrough,
        chunk_rows=_int(data.get("chunk_rows"), "chunk_rows"),
        error_policy=data.get("error_policy") or BatchJob.ErrorPolicy.SKIP,
        max_error_pct=_float(data.get("max_error_pct"), "max_error_pct", 5.0),
        device=data.get("device") or "cpu",
        dry_run_rows=_int(data.get("dry_run_rows"), "dry_run_rows") or 100,
        extra={"pipeline": data.get("pipeline")} if data.get("pipeline") else {},
    )


class JobListCreate(generics.ListAPIView):
    serializer_class = BatchJobSerializer
    permission_classes = [ReadOrEngineerWrites]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        if request.method == "POST":
            # Stream an uploaded input into the batch store while hashing it.
            request.upload_handlers = [storage.BatchInputUploadHandler(request), TemporaryFileUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    def get_parsers(self) -> list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [JsonParser(), MultiPartParser()]
        return super().get_parsers()

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.job_list(user=self.request.user, state=params.get("state", ""), model=params.get("model", ""))

    @extend_schema(
        summary="List batch jobs",
        parameters=[OpenApiParameter("state", str, enum=BatchJob.State.values), OpenApiParameter("model", str)],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Start a batch job (JSON with input_path, or multipart with an input file); dry_run answers at once",
        request={"application/json": BatchJobCreateSerializer, "multipart/form-data": BatchJobCreateSerializer},
        responses={201: BatchJobSerializer, 200: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request) -> Response:
        # Staged uploads not moved into the store (refused, dry runs) are removed in
        # finalize_response, whatever the answer.
        data = request.data  # parsing streams the upload through BatchInputUploadHandler
        if any(getattr(h, "too_large", False) for h in request._request.upload_handlers):
            raise PayloadTooLarge(f"the input is larger than the limit of {settings.BATCH_MAX_INPUT_BYTES} bytes")
        job_request = job_request_parse(data)
        uploaded = request.FILES.get("input")
        input_path = str(data.get("input_path") or "")
        if uploaded is not None and not isinstance(uploaded, storage.StagedUploadedFile):
            raise services.BatchInputError("input: expected a file (multipart field 'input')")
        if (uploaded is None) == (not input_path):
            raise services.BatchInputError("give the input as an uploaded file (input) or as input_path, one of them")
        staged = uploaded.staged if uploaded is not None else None
        if _bool(data.get("dry_run", False)):
            if staged is not None:
                path, name, size = staged.tmp_path, staged.filename, staged.size
            else:
                path = storage.data_path_resolve(input_path)
                name, size = path.name, path.stat().st_size
            answer = services.job_dry_run(request=job_request, user=request.user, path=path, filename=name, size=size)
            return Response(answer, status=status.HTTP_200_OK)
        job = services.job_create(
            request=job_request, user=request.user, upload=staged, input_path=input_path, source_ip=client_ip(request)
        )
        job = selectors.job_get(job_id=job.pk, user=request.user)
        return Response(BatchJobSerializer(job).data, status=status.HTTP_201_CREATED)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        files = getattr(request, "_files", None)
        if hasattr(files, "values"):
            for file in files.values():
                if isinstance(file, storage.StagedUploadedFile):
                    file.staged.discard()
        return super().finalize_response(request, response, *args, **kwargs)


class JobDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="One batch job: state, rows, rows/s, ETA, chunks with attempts", responses=BatchJobDetailSerializer
    )
    def get(self, request: Request, job_id: int) -> Response:
        job = selectors.job_get(job_id=job_id, user=request.user)
        return Response(BatchJobDetailSerializer(job).data)


class JobCancel(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Cancel a batch job (running chunks stop at their next model call)",
        request=None,
        responses=BatchJobSerializer,
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = services.job_cancel(
            job=selectors.job_get(job_id=job_id, user=request.user), user=request.user, source_ip=client_ip(request)
        )
        return Response(BatchJobSerializer(job).data)


class JobResume(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Resume a cancelled or failed job; finished chunks are kept", request=None, responses=BatchJobSerializer
    )
    def post(self, request: Request, job_id: int) -> Response:
        job = services.job_resume(
            job=selectors.job_get(job_id=job_id, user=request.user), user=request.user, source_ip=client_ip(request)
        )
        return Response(BatchJobSerializer(job).data)


class JobAttach(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Attach a succeeded compare job's diff report to a pending promotion request, as evidence",
        request=CompareAttachSerializer,
        responses=PromotionRequestSerializer,
    )
    def post(self, request: Request, job_id: int) -> Response:
        body = CompareAttachSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        job = selectors.job_get(job_id=job_id, user=request.user)
        found = services.compare_attach(
            job=job,
            request_id=body.validated_data["promotion_request"],
            user=request.user,
            url=reverse("batch-job-detail", args=[job.pk]),
            source_ip=client_ip(request),
        )
        return Response(PromotionRequestSerializer(found).data)


def _download(job: BatchJob, path: Path, sha256: str, filename: str) -> FileResponse:
    if job.files_deleted_at is not None:
        raise Gone(f"the files of {job} were removed by the retention sweep")
    if not sha256 or not path.exists():
        raise NotFound(f"{job} has no such file yet (state: {job.state})")
    response = FileResponse(open(path, "rb"), as_attachment=True, filename=filename)  # noqa: SIM115
    response["X-Content-SHA256"] = sha256
    return response


class JobResult(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Download the result (sha256 in X-Content-SHA256)",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, job_id: int) -> FileResponse:
        job = selectors.job_get(job_id=job_id, user=request.user)
        return _download(
            job,
            storage.result_path(job.pk, job.output_format),
            job.result_sha256,
            f"batch-{job.pk}-result.{job.output_format}",
        )


class JobErrors(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Download the errors file (CSV: row, column, reason)",
        responses={(200, "text/csv"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, job_id: int) -> FileResponse:
        job = selectors.job_get(job_id=job_id, user=request.user)
        return _download(job, storage.errors_path(job.pk), job.errors_sha256, f"batch-{job.pk}-errors.csv")
