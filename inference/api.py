"""The endpoints' management REST API (DRF): thin views that call services."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadOrEngineerWrites, team_for_user
from config.errors import NotFound
from config.http import client_ip
from inference import api_keys, selectors, traffic
from inference.endpoints import ENDPOINT_FIELDS, endpoint_create, endpoint_update, route_models
from inference.models import ApiKey
from inference.selectors import endpoint_for_user_or_404, visible_endpoints
from inference.serializers import (
    ApiKeyCreateSerializer,
    ApiKeySerializer,
    EndpointDetailSerializer,
    EndpointSerializer,
    EndpointWriteSerializer,
    RevisionSerializer,
    RollbackSerializer,
    TrafficWriteSerializer,
)
from registry.selectors import model_get


def _endpoint_fields(data: dict[str, Any], user: Any) -> dict[str, Any]:
    fields = {k: v for k, v in data.items() if k in ENDPOINT_FIELDS}
    if "follows_model" in fields:
        # Another team's model is not found, as in the registry.
        fields["follows_model"] = (
            model_get(name=fields["follows_model"], user=user) if fields["follows_model"] else None
        )
    return fields


def _endpoint(request: Request, name: str) -> Any:
    """The endpoint if the caller's teams may see it; another team's is a 404."""
    return endpoint_for_user_or_404(request.user, name, selectors.endpoint_list())


def _routes_payload(request: Request) -> list[Any]:
    # The service checks the routes itself (with messages that name the route); take
    # them as sent so that its rules, not a serializer's, speak.
    routes = request.data.get("routes") if isinstance(request.data, dict) else None
    if routes is None:
        raise ValidationError({"routes": ["this field is required"]})
    return routes


class EndpointListCreate(generics.ListAPIView):
    serializer_class = EndpointSerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        return visible_endpoints(self.request.user, selectors.endpoint_list())

    @extend_schema(summary="List endpoints")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create an endpoint (optionally with its first traffic split)",
        request=EndpointWriteSerializer,
        responses={201: EndpointDetailSerializer},
    )
    def post(self, request: Request) -> Response:
        data = EndpointWriteSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = _endpoint_fields(dict(data.validated_data), request.user)
        team = team_for_user(request.user, data.validated_data["team"]) if data.validated_data.get("team") else None
        serves = []
        if request.data.get("routes"):
            # Refuse a bad split, or one naming a model the caller may not see, before creating anything.
            serves = route_models(traffic.routes_check(request.data["routes"]), user=request.user)
        # One transaction: a split the environment refuses leaves no endpoint behind.
        with transaction.atomic():
            endpoint = endpoint_create(
                name=data.validated_data["name"],
                user=request.user,
                source_ip=client_ip(request),
                team=team,
                serves=serves,
                **fields,
            )
            if request.data.get("routes"):
                traffic.traffic_policy_revise(
                    endpoint=endpoint,
                    routes=request.data["routes"],
                    user=request.user,
                    comment="initial split",
                    source_ip=client_ip(request),
                )
        return Response(EndpointDetailSerializer(endpoint).data, status=status.HTTP_201_CREATED)


class EndpointDetail(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="One endpoint, with its split and deployments (state, provider)", responses=EndpointDetailSerializer
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(EndpointDetailSerializer(_endpoint(request, name)).data)

    @extend_schema(
        summary="Change an endpoint's settings", request=EndpointWriteSerializer, responses=EndpointDetailSerializer
    )
    def patch(self, request: Request, name: str) -> Response:
        data = EndpointWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        endpoint = _endpoint(request, name)
        fields = _endpoint_fields(dict(data.validated_data), request.user)
        if "team" in data.validated_data:
            team = data.validated_data["team"]
            fields["team"] = team_for_user(request.user, team) if team else None
        endpoint = endpoint_update(endpoint=endpoint, user=request.user, source_ip=client_ip(request), **fields)
        return Response(EndpointDetailSerializer(endpoint).data)


class TrafficView(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="The current traffic split", responses=RevisionSerializer)
    def get(self, request: Request, name: str) -> Response:
        endpoint = _endpoint(request, name)
        current = selectors.revision_current(endpoint=endpoint)
        if current is None:
            raise NotFound(f'endpoint "{name}" has no traffic split yet')
        return Response(RevisionSerializer(current).data)

    @extend_schema(
        summary="Set the split: a new revision", request=TrafficWriteSerializer, responses=RevisionSerializer
    )
    def put(self, request: Request, name: str) -> Response:
        endpoint = _endpoint(request, name)
        revision = traffic.traffic_policy_revise(
            endpoint=endpoint,
            routes=_routes_payload(request),
            user=request.user,
            comment=str(request.data.get("comment", ""))[:2000],
            source_ip=client_ip(request),
        )
        return Response(RevisionSerializer(revision).data)


class RevisionList(generics.ListAPIView):
    serializer_class = RevisionSerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        endpoint = endpoint_for_user_or_404(self.request.user, self.kwargs["name"])
        return endpoint.revisions.select_related("created_by").order_by("-revision")

    @extend_schema(summary="Every revision of the split, newest first")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RollbackView(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Roll back to a given (or the previous) revision, as a new revision",
        request=RollbackSerializer,
        responses=RevisionSerializer,
    )
    def post(self, request: Request, name: str) -> Response:
        data = RollbackSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        revision = traffic.traffic_policy_rollback(
            endpoint=_endpoint(request, name),
            revision=data.validated_data["revision"],
            user=request.user,
            source_ip=client_ip(request),
        )
        return Response(RevisionSerializer(revision).data)


class KeyListCreate(generics.ListAPIView):
    serializer_class = ApiKeySerializer
    permission_classes = [ReadOrEngineerWrites]

    def get_queryset(self) -> Any:
        return selectors.api_keys_of(endpoint=endpoint_for_user_or_404(self.request.user, self.kwargs["name"]))

    @extend_schema(summary="The endpoint's application keys (never the secrets)")
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Create an application key (the secret is in this answer only)",
        request=ApiKeyCreateSerializer,
        responses={201: OpenApiTypes.OBJECT},
    )
    def post(self, request: Request, name: str) -> Response:
        data = ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = _endpoint(request, name)
        endpoints = [endpoint]
        for other in data.validated_data.get("endpoints", []):
            if other != endpoint.name:
                endpoints.append(_endpoint(request, other))
        key, secret = api_keys.api_key_create(
            name=data.validated_data["name"], endpoints=endpoints, user=request.user, source_ip=client_ip(request)
        )
        return Response({**ApiKeySerializer(key).data, "key": secret}, status=status.HTTP_201_CREATED)


class KeyRevoke(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="Revoke a key (effective within about a second)", responses={204: None})
    def delete(self, request: Request, name: str, prefix: str) -> Response:
        endpoint = _endpoint(request, name)
        key = ApiKey.objects.filter(prefix=prefix, endpoints=endpoint).first()
        if key is None:
            raise NotFound(f'endpoint "{name}" has no key with prefix {prefix!r}')
        api_keys.api_key_revoke(key=key, user=request.user, source_ip=client_ip(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
