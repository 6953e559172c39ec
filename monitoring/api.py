"""Monitoring's HTTP interface: /metrics, alert rules and events, endpoint metrics, samples, references."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ParseError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadOrEngineerWrites, get_visible_or_404, is_admin, team_scope
from config.errors import DomainError, NotFound
from config.exceptions import json_error
from config.http import client_ip
from config.parsers import JsonParser, read_limited
from inference.models import Endpoint
from inference.selectors import endpoint_for_user_or_404, scope_by_endpoint_name
from monitoring import alerts, drift, endpoint_settings, prometheus, selectors
from monitoring.models import AlertRule, MonitoringSettings
from monitoring.serializers import (
    AlertEventSerializer,
    AlertRuleSerializer,
    AlertRuleWriteSerializer,
    MonitoringSettingsSerializer,
    PayloadSampleSerializer,
)
from monitoring.stats import output_summary, tensor_features
from registry.selectors import version_get

MAX_REFERENCE_ROWS = 200_000


def metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics: Prometheus text format; a bearer token when MODELHUB_METRICS_TOKEN is set."""
    if request.method != "GET":
        return json_error(405, "method_not_allowed", "use GET")
    token = settings.MONITORING_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given, token):
            return json_error(401, "unauthorized", "this /metrics needs 'Authorization: Bearer <metrics token>'")
    return HttpResponse(prometheus.render_metrics(), content_type=prometheus.CONTENT_TYPE)


def _time(value: str | None, name: str, default: datetime) -> datetime:
    if not value:
        return default
    parsed = parse_datetime(value)
    if parsed is None:
        try:
            parsed = datetime.fromtimestamp(float(value), tz=UTC)
        except (ValueError, OverflowError, OSError):
            raise DomainError(f"{name} must be an ISO 8601 time or unix seconds, got {value!r}") from None
    try:
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
        # In UTC: PostgreSQL refuses offsets past +-15:59 that Python parses.
        return parsed.astimezone(UTC)
    except (OverflowError, ValueError):
        raise DomainError(f"{name} is out of range: {value!r}") from None


def _int(value: str | None, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise DomainError(f"{name} must be a whole number, got {value!r}") from None


def _history_of(request: Request, name: str) -> str:
    """The endpoint name whose monitoring history the caller may read: one they may see
    (another team's is a 404); admins also read the history of a deleted endpoint."""
    if is_admin(request.user):
        return name
    return str(endpoint_for_user_or_404(request.user, name).name)


class EndpointMetrics(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="An endpoint's per-version time series (rps, p50/p95/p99, errors, batch size, outputs, drift)",
        parameters=[
            OpenApiParameter("since", str, description="ISO time or unix s; default 1 hour ago"),
            OpenApiParameter("until", str, description="default now"),
            OpenApiParameter("step", int, description="seconds, a multiple of 60; default 60"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, name: str) -> Response:
        endpoint = _history_of(request, name)
        now = timezone.now()
        until = _time(request.query_params.get("until"), "until", now)
        since = _time(request.query_params.get("since"), "since", until - timedelta(hours=1))
        step = _int(request.query_params.get("step"), "step", 60)
        return Response(selectors.endpoint_timeseries(endpoint, since, until, step))


class EndpointWindowStats(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="What an endpoint (or one version) did over the last window_s seconds, live minutes included",
        description=(
            "`monitoring.selectors.endpoint_window_stats`: rolled-up minutes plus the minutes not rolled up "
            "yet, at one-minute resolution (every minute overlapping the window). Requests, errors by kind, "
            "error rate, p50/p95/p99, mean latency, rps, batch size, queue and model ms, outputs, shadow "
            "agreement (shadow answers compared with the caller's answer, how many agreed), and the same "
            "per version. A window shorter than 60 s or longer than the minute retention is a 400."
        ),
        parameters=[
            OpenApiParameter("window_s", int, description="seconds, 60 up to the minute retention; default 300"),
            OpenApiParameter("version", str, description="a deployment, 'model:version'; default the whole endpoint"),
            OpenApiParameter("include_shadow", bool, description="count shadow traffic in the totals; default false"),
        ],
        responses=OpenApiTypes.OBJECT,
    )
    def get(self, request: Request, name: str) -> Response:
        if not Endpoint.objects.filter(name=name).exists():
            raise NotFound(f"no endpoint named {name!r}")
        window_s = _int(request.query_params.get("window_s"), "window_s", 300)
        return Response(
            selectors.endpoint_window_stats(
                name,
                request.query_params.get("version") or None,
                window_s=window_s,
                include_shadow=request.query_params.get("include_shadow", "").lower() in ("1", "true", "yes"),
            )
        )


class AlertRuleListCreate(generics.ListAPIView):
    serializer_class = AlertRuleSerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        params = self.request.query_params
        rules = selectors.alert_rule_list(
            endpoint=params.get("endpoint", ""), metric=params.get("metric", ""), state=params.get("state", "")
        )
        return team_scope(rules, self.request.user, team_field="endpoint__team")

    @extend_schema(
        summary="List alert rules",
        parameters=[
            OpenApiParameter("endpoint", str),
            OpenApiParameter("metric", str),
            OpenApiParameter("state", str, enum=["ok", "firing"]),
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create an alert rule", request=AlertRuleWriteSerializer, responses={201: AlertRuleSerializer}
    )
    def post(self, request: Request) -> Response:
        data = _object(request.data)
        endpoint = data.pop("endpoint", None)
        if not isinstance(endpoint, str) or not endpoint:
            raise DomainError("endpoint: the endpoint's name is required", details={"field": "endpoint"})
        endpoint_for_user_or_404(request.user, endpoint)
        rule = alerts.alert_rule_create(
            endpoint_name=endpoint, values=data, user=request.user, source_ip=client_ip(request)
        )
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)


def _object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ParseError("expected a JSON object")
    return dict(data)


def _rule(request: Request, pk: int) -> AlertRule:
    """The rule, if it watches an endpoint the caller may see; 404 otherwise."""
    try:
        rule: AlertRule = get_visible_or_404(
            AlertRule.objects.select_related("endpoint"), request.user, team_field="endpoint__team", pk=pk
        )
    except NotFound:
        raise NotFound(f"no alert rule {pk}") from None
    return rule


class AlertRuleDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="One alert rule", responses=AlertRuleSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(AlertRuleSerializer(_rule(request, pk)).data)

    @extend_schema(summary="Change an alert rule", request=AlertRuleWriteSerializer, responses=AlertRuleSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        data = _object(request.data)
        if "endpoint" in data:
            raise DomainError("endpoint cannot be changed: create a new rule", details={"field": "endpoint"})
        _rule(request, pk)
        rule = alerts.alert_rule_update(rule_id=pk, changes=data, user=request.user, source_ip=client_ip(request))
        return Response(AlertRuleSerializer(rule).data)

    @extend_schema(summary="Delete an alert rule", responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        _rule(request, pk)
        alerts.alert_rule_delete(rule_id=pk, user=request.user, source_ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class AlertEventList(generics.ListAPIView):
    serializer_class = AlertEventSerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        p = self.request.query_params
        far = timezone.now()
        return scope_by_endpoint_name(
            selectors.alert_event_list(
                endpoint=p.get("endpoint", ""),
                rule=_int(p.get("rule"), "rule", 0) or None,
                kind=p.get("kind", ""),
                severity=p.get("severity", ""),
                since=_time(p.get("since"), "since", far) if p.get("since") else None,
                until=_time(p.get("until"), "until", far) if p.get("until") else None,
            ),
            self.request.user,
        )

    @extend_schema(
        summary="Alert history (firing and resolved events)",
        parameters=[
            OpenApiParameter("endpoint", str),
            OpenApiParameter("rule", int),
            OpenApiParameter("kind", str, enum=["firing", "resolved"]),
            OpenApiParameter("severity", str),
            OpenApiParameter("since", str),
            OpenApiParameter("until", str),
        ],
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class EndpointMonitoringSettings(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="An endpoint's sampling and redaction settings", responses=MonitoringSettingsSerializer)
    def get(self, request: Request, name: str) -> Response:
        endpoint = endpoint_for_user_or_404(request.user, name)
        row = MonitoringSettings.objects.select_related("endpoint").filter(endpoint=endpoint).first()
        if row is None:
            row = MonitoringSettings(endpoint=endpoint, drift_sample_rate=settings.MONITORING_DEFAULT_DRIFT_SAMPLE_RATE)
        return Response(endpoint_settings.monitoring_settings_dict(row))

    @extend_schema(
        summary="Change sampling rates, payload size cap, redacted fields",
        request=MonitoringSettingsSerializer,
        responses=MonitoringSettingsSerializer,
    )
    def patch(self, request: Request, name: str) -> Response:
        endpoint_for_user_or_404(request.user, name)
        row = endpoint_settings.monitoring_settings_update(
            endpoint_name=name, changes=_object(request.data), user=request.user, source_ip=client_ip(request)
        )
        return Response(endpoint_settings.monitoring_settings_dict(row))


class EndpointSamples(generics.ListAPIView):
    serializer_class = PayloadSampleSerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        return selectors.payload_sample_list(
            endpoint=_history_of(self.request, self.kwargs["name"]),
            deployment=self.request.query_params.get("deployment", ""),
        )

    @extend_schema(
        summary="Sampled (redacted) request/response payloads", parameters=[OpenApiParameter("deployment", str)]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class CsvParser(JsonParser):
    media_type = "text/csv"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        data = read_limited(stream, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ParseError("CSV must be UTF-8 text") from None
        return {"csv": text}


class VersionReference(APIView):
    permission_classes = [ReadOrEngineerWrites]
    parser_classes = [JsonParser, CsvParser, MultiPartParser, FormParser]

    @extend_schema(summary="A version's reference statistics for drift", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, name: str, version: int) -> Response:
        reference = version_get(model_name=name, version=version, user=request.user).reference_stats or {}
        features = {
            k: {key: v for key, v in f.items() if key != "sample"} for k, f in (reference.get("features") or {}).items()
        }
        return Response({**reference, "features": features})

    @extend_schema(
        summary="Upload a reference data set: JSON {inputs: {name: rows}} or {rows: [...]} (+ optional outputs), "
        "or CSV with a header (text/csv, or multipart field 'file')",
        request=OpenApiTypes.OBJECT,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, name: str, version: int) -> Response:
        model_version = version_get(model_name=name, version=version, user=request.user)
        features, outputs = _reference_features(request, model_version.signature or {})
        reference = drift.reference_stats_set(
            model=name,
            version=version,
            features=features,
            outputs=outputs,
            source="upload",
            user=request.user,
            source_ip=client_ip(request),
        )
        brief = {k: {key: v for key, v in f.items() if key != "sample"} for k, f in reference["features"].items()}
        return Response({**reference, "features": brief}, status=status.HTTP_201_CREATED)


def _reference_features(request: Request, signature: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    data = request.data
    upload = request.FILES.get("file") if hasattr(request, "FILES") else None
    if upload is not None:
        if upload.size > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise DomainError("the reference file is too large")
        data = {"csv": upload.read().decode("utf-8-sig", errors="replace")}
    if isinstance(data, list):
        data = {"rows": data}
    if not isinstance(data, dict) or not data:
        raise ParseError('send JSON {"inputs": {...}} or {"rows": [...]}, or a CSV with a header row')
    outputs: dict[str, Any] = {}
    if isinstance(data.get("outputs"), dict):
        try:
            outputs = output_summary({k: np.asarray(v) for k, v in data["outputs"].items()})
        except (ValueError, TypeError) as exc:
            raise DomainError(f"outputs: {exc}") from None
    if "csv" in data:
        reader = csv.reader(io.StringIO(str(data["csv"])))
        rows = list(reader)
        if len(rows) < 2:
            raise DomainError("the CSV needs a header row and at least one data row")
        header, body = rows[0], rows[1:]
        return _columns_to_features(header, body, signature), outputs
    if isinstance(data.get("inputs"), dict):
        try:
            tensors = {k: np.asarray(v, dtype=float) for k, v in data["inputs"].items()}
        except (ValueError, TypeError) as exc:
            raise DomainError(f"inputs must be numeric nested lists: {exc}") from None
        features = tensor_features(tensors)
        if not features:
            raise DomainError("inputs: no 1-D or 2-D numeric tensors")
        return features, outputs
    rows = data.get("rows")
    if isinstance(rows, list) and rows:
        if len(rows) > MAX_REFERENCE_ROWS:
            raise DomainError(f"at most {MAX_REFERENCE_ROWS} reference rows")
        if all(isinstance(r, dict) for r in rows):
            header = list(rows[0].keys())
            return _columns_to_features(header, [[r.get(h) for h in header] for r in rows], signature), outputs
        if all(isinstance(r, list) for r in rows):
            width = len(rows[0])
            return _columns_to_features([f"c{j}" for j in range(width)], rows, signature, positional=True), outputs
    raise DomainError("rows must be a non-empty list of objects or of lists")


def _columns_to_features(
    header: list[str], body: list[list[Any]], signature: dict[str, Any], *, positional: bool = False
) -> dict[str, np.ndarray]:
    """Name reference columns the way traffic features are named (see docs/monitoring.md).

    Columns named like the model's inputs are features of those names; otherwise, for a
    model with one input, columns in order are `<input>[0]`, `<input>[1]`, ...
    """
    if len(body) > MAX_REFERENCE_ROWS:
        raise DomainError(f"at most {MAX_REFERENCE_ROWS} reference rows")
    width = len(header)
    for number, row in enumerate(body, start=1):
        if row and len(row) != width:
            raise DomainError(f"every row needs {width} values; row {number} has {len(row)}")
    try:
        matrix = np.array([[float(v) for v in row] for row in body if row], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DomainError(f"reference values must be numbers: {exc}") from None
    if matrix.ndim != 2 or matrix.shape[1] != width:
        raise DomainError(f"every row needs {width} values")
    inputs = [i.get("name") for i in signature.get("inputs", []) if isinstance(i, dict)]
    if not positional and inputs and set(header) <= set(inputs):
        return {h: matrix[:, j] for j, h in enumerate(header)}
    if len(inputs) == 1:
        return {f"{inputs[0]}[{j}]" if width > 1 else str(inputs[0]): matrix[:, j] for j in range(width)}
    return {h: matrix[:, j] for j, h in enumerate(header)}
