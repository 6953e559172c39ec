"""Promotion requests, decisions, rollback and the audit log: thin views over the services."""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from django.http import StreamingHttpResponse
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timezone import is_naive, make_aware
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import ParseError
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ApproverOnly
from config.http import client_ip
from config.renderers import JsonRenderer
from registry import gates, promotions, selectors
from registry.models import PromotionRequest
from registry.serializers import (
    AuditEventSerializer,
    CommentSerializer,
    PromotionCreateSerializer,
    PromotionDecisionSerializer,
    PromotionRequestSerializer,
)


class PromotionDetailSerializer(PromotionRequestSerializer):
    comparison = serializers.SerializerMethodField()

    class Meta(PromotionRequestSerializer.Meta):
        fields = [*PromotionRequestSerializer.Meta.fields, "comparison"]
        read_only_fields = fields

    @extend_schema_field(
        inline_serializer(
            "PromotionComparison",
            {
                "candidate": serializers.DictField(),
                "production": serializers.DictField(allow_null=True),
                "metrics": serializers.DictField(help_text="{name: {candidate, production, delta}}"),
                "signature": serializers.DictField(help_text="{compatible, problems, detail}"),
            },
        )
    )
    def get_comparison(self, obj: PromotionRequest) -> dict[str, Any]:
        return gates.promotion_comparison(request=obj)


class PromotionCreate(APIView):
    @extend_schema(
        summary="Ask for a promotion of this version (to_stage, justification); gates are computed now",
        request=PromotionCreateSerializer,
        responses={201: PromotionRequestSerializer},
    )
    def post(self, request: Request, name: str, version: int) -> Response:
        found = selectors.version_get(model_name=name, version=version, user=request.user)
        data = PromotionCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        created = promotions.promotion_request_create(
            version=found,
            to_stage=data.validated_data["to_stage"],
            justification=data.validated_data["justification"],
            user=request.user,
            source_ip=client_ip(request),
        )
        return Response(PromotionRequestSerializer(created).data, status=status.HTTP_201_CREATED)


class PromotionList(generics.ListAPIView):
    serializer_class = PromotionRequestSerializer

    def get_queryset(self) -> Any:
        params = self.request.query_params
        wanted = params.get("status", "")
        if wanted and wanted not in PromotionRequest.Status.values:
            raise ParseError(f"status: expected one of {PromotionRequest.Status.values}, got {wanted!r}")
        return selectors.promotion_list(
            user=self.request.user,
            status=wanted,
            mine=params.get("mine", "") in ("1", "true", "yes"),
            model=params.get("model", ""),
            to_stage=params.get("to_stage", ""),
        )

    @extend_schema(
        summary="The promotion queue (your teams' models)",
        parameters=[
            OpenApiParameter("status", str, enum=PromotionRequest.Status.values),
            OpenApiParameter("mine", bool, description="1: only the requests you made"),
            OpenApiParameter("model", str),
            OpenApiParameter("to_stage", str),
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class PromotionDetail(APIView):
    @extend_schema(
        summary="One request, side by side with the current production version",
        responses=PromotionDetailSerializer,
    )
    def get(self, request: Request, request_id: int) -> Response:
        found = selectors.promotion_get(request_id=request_id, user=request.user)
        return Response(PromotionDetailSerializer(found).data)


class PromotionApprove(APIView):
    @extend_schema(
        summary="Approve (approver or admin; never your own request). Failed gates need an admin's override_reason",
        request=PromotionDecisionSerializer,
        responses=PromotionRequestSerializer,
    )
    def post(self, request: Request, request_id: int) -> Response:
        data = PromotionDecisionSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decided = promotions.promotion_approve(
            request_id=request_id,
            reviewer=request.user,
            comment=data.validated_data["comment"],
            override_reason=data.validated_data["override_reason"] or None,
            source_ip=client_ip(request),
        )
        return Response(PromotionRequestSerializer(decided).data)


class PromotionReject(APIView):
    @extend_schema(
        summary="Reject (approver or admin)", request=CommentSerializer, responses=PromotionRequestSerializer
    )
    def post(self, request: Request, request_id: int) -> Response:
        data = CommentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        decided = promotions.promotion_reject(
            request_id=request_id,
            reviewer=request.user,
            comment=data.validated_data["comment"],
            source_ip=client_ip(request),
        )
        return Response(PromotionRequestSerializer(decided).data)


class PromotionCancel(APIView):
    @extend_schema(
        summary="Withdraw your own pending request", request=CommentSerializer, responses=PromotionRequestSerializer
    )
    def post(self, request: Request, request_id: int) -> Response:
        data = CommentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        cancelled = promotions.promotion_cancel(
            request_id=request_id,
            user=request.user,
            comment=data.validated_data["comment"],
            source_ip=client_ip(request),
        )
        return Response(PromotionRequestSerializer(cancelled).data)


class ModelRollback(APIView):
    @extend_schema(
        summary="Put the previous production version back in Production (approver or admin; audited)",
        request=CommentSerializer,
        responses=PromotionRequestSerializer,
    )
    def post(self, request: Request, name: str) -> Response:
        data = CommentSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        done = promotions.production_rollback(
            model=selectors.model_get(name=name, user=request.user),
            user=request.user,
            comment=data.validated_data["comment"],
            source_ip=client_ip(request),
        )
        return Response(PromotionRequestSerializer(done).data)


# --- audit -----------------------------------------------------------------------------

CSV_COLUMNS = [
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


class CsvRenderer(BaseRenderer):
    """Lets `?format=csv` through content negotiation; the view streams the body itself."""

    media_type = "text/csv"
    format = "csv"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        # Only errors reach here (the export streams past renderers): give them as text.
        return str(data).encode()


def _when(value: str, name: str) -> datetime | None:
    """An ISO 8601 date or time from a query string (where "+" may have become a space)."""
    if not value:
        return None
    value = value.strip().replace(" ", "+")
    try:
        parsed = parse_datetime(value)
        if parsed is None:
            day = parse_date(value)
            parsed = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise ParseError(f"{name}: expected an ISO 8601 date or time such as 2026-11-24T10:00:00Z, got {value!r}")
    try:
        # In UTC: PostgreSQL refuses offsets past +-15:59 that Python parses (a 500 before).
        return (make_aware(parsed) if is_naive(parsed) else parsed).astimezone(UTC)
    except (OverflowError, ValueError):
        raise ParseError(f"{name}: {value!r} is out of range") from None


def _csv_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    # A cell that starts like a formula would run in a spreadsheet (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


class _Echo:
    def write(self, value: str) -> str:
        return value


def _csv_rows(events: Iterator[Any]) -> Iterator[str]:
    import orjson

    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in events:
        yield writer.writerow(
            _csv_cell(cell)
            for cell in (
                event.pk,
                event.created_at.isoformat(),
                event.actor_name,
                event.action,
                event.object_type,
                event.object_id,
                event.object_repr,
                orjson.dumps(event.before).decode(),
                orjson.dumps(event.after).decode(),
                event.source_ip,
            )
        )


_AUDIT_FILTERS = [
    OpenApiParameter("actor", str, description="username"),
    OpenApiParameter("action", str, description="e.g. promotion.approve, or promotion for all promotion.*"),
    OpenApiParameter("object_type", str, description="e.g. registry.promotionrequest"),
    OpenApiParameter("object_id", str),
    OpenApiParameter("since", OpenApiTypes.DATETIME, description="inclusive"),
    OpenApiParameter("until", OpenApiTypes.DATETIME, description="exclusive"),
]


class AuditList(generics.ListAPIView):
    """Read-only: the API offers no way to add, change or delete an event."""

    serializer_class = AuditEventSerializer
    permission_classes = [ApproverOnly]

    def get_renderers(self) -> list[BaseRenderer]:
        return [*super().get_renderers(), CsvRenderer()]

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # An error is JSON even when CSV was asked for (not a CSV "file" holding a dict).
        if response.status_code >= 400 and getattr(request, "accepted_renderer", None) is not None:
            if request.accepted_renderer.format == "csv":
                request.accepted_renderer, request.accepted_media_type = JsonRenderer(), JsonRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)

    def get_queryset(self) -> Any:
        params = self.request.query_params
        return selectors.audit_list(
            user=self.request.user,
            actor=params.get("actor", ""),
            action=params.get("action", ""),
            object_type=params.get("object_type", ""),
            object_id=params.get("object_id", ""),
            since=_when(params.get("since", ""), "since"),
            until=_when(params.get("until", ""), "until"),
        )

    @extend_schema(
        summary="The audit log (approver or admin), paginated; ?format=csv streams every match as CSV",
        parameters=[*_AUDIT_FILTERS, OpenApiParameter("format", str, enum=["json", "csv"])],
        responses={200: AuditEventSerializer(many=True), (200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        if request.accepted_renderer.format == "csv":
            return audit_csv_response(self.get_queryset())
        return super().get(request, *args, **kwargs)


def audit_csv_response(events: Any) -> StreamingHttpResponse:
    # Run the query and read its first row before the answer starts: a query that fails
    # is a JSON error, never a 200 whose CSV body stops short.
    rows = events.iterator(chunk_size=2000)
    first = next(rows, None)
    body = _csv_rows(itertools.chain([first], rows) if first is not None else rows)
    response = StreamingHttpResponse(body, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="modelhub-audit.csv"'
    return response


class AuditExport(AuditList):
    @extend_schema(
        summary="The audit log as CSV (streamed; same filters)",
        parameters=_AUDIT_FILTERS,
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Any:
        return audit_csv_response(self.get_queryset())


class ModelWatch(APIView):
    """Watchers get an email for every promotion decision on the model."""

    @extend_schema(
        summary="Watch a model: be emailed its promotion decisions",
        request=None,
        responses=inline_serializer("WatchState", {"watching": serializers.BooleanField()}),
    )
    def post(self, request: Request, name: str) -> Response:
        model = selectors.model_get(name=name, user=request.user)
        return Response(
            {"watching": promotions.model_watch(model=model, user=request.user, source_ip=client_ip(request))}
        )

    @extend_schema(
        summary="Stop watching a model",
        request=None,
        responses={200: inline_serializer("WatchStateOff", {"watching": serializers.BooleanField()})},
    )
    def delete(self, request: Request, name: str) -> Response:
        model = selectors.model_get(name=name, user=request.user)
        watching = promotions.model_watch(model=model, user=request.user, watch=False, source_ip=client_ip(request))
        return Response({"watching": watching})
