"""Bandit state over the management API, scoped by the endpoint the routers decided for:
another team's endpoint (or a router that never served this endpoint) is a 404."""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import ReadOrEngineerWrites
from config.errors import DomainError, NotFound
from inference.bandits import selectors
from inference.selectors import endpoint_for_user_or_404


def router_for_user_or_404(user: Any, name: str, router: str) -> Any:
    """The endpoint `name` (team-scoped) when `router` decided for it; NotFound otherwise."""
    endpoint = endpoint_for_user_or_404(user, name)
    if name not in selectors.router_endpoints(router):
        raise NotFound(f"no bandit router {router!r} on endpoint {name!r}")
    return endpoint


class BanditList(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(summary="List the bandit routers that decided for an endpoint", responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request, name: str) -> Response:
        endpoint_for_user_or_404(request.user, name)
        return Response({"endpoint": name, "routers": selectors.routers_for_endpoint(name)})


class BanditStats(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="A bandit router's per-arm statistics",
        description=(
            "Per arm: pulls (decisions), rewards (count), mean reward, current traffic share and "
            "posterior parameters; `series`: cumulative estimated regret and pulls per arm over time "
            "(docs/pipelines.md, Routers and feedback)."
        ),
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, name: str, router: str) -> Response:
        router_for_user_or_404(request.user, name, router)
        return Response(selectors.router_stats(router))


class BanditDecisions(APIView):
    permission_classes = [ReadOrEngineerWrites]

    @extend_schema(
        summary="Export a bandit router's decisions (propensities and rewards) for off-policy evaluation",
        parameters=[OpenApiParameter("output", str, enum=["jsonl", "csv"], description="JSON Lines (default) or CSV")],
        responses={200: OpenApiTypes.STR},
    )
    def get(self, request: Request, name: str, router: str) -> StreamingHttpResponse:
        router_for_user_or_404(request.user, name, router)
        fmt = request.query_params.get("output", "jsonl")
        if fmt not in ("jsonl", "csv"):
            raise DomainError(f"output must be jsonl or csv, got {fmt!r}")
        content_type = "text/csv" if fmt == "csv" else "application/x-ndjson"
        response = StreamingHttpResponse(selectors.export_lines(router, fmt), content_type=content_type)
        filename = router.replace(":", "_") + (".csv" if fmt == "csv" else ".jsonl")
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
