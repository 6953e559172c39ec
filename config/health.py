"""Liveness and readiness. Readiness checks what a request needs: the database and Redis."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.request import Request
from rest_framework.response import Response


def _check_database() -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:  # any driver error means "not ready", with the reason
        return {"ok": False, "error": str(exc).strip()[:200]}


def _check_redis() -> dict[str, Any]:
    if not settings.REDIS_URL:
        return {"ok": True, "detail": "not configured (embedded mode)"}
    import redis

    started = time.perf_counter()
    try:
        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
        client.ping()
        return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
    except Exception as exc:
        return {"ok": False, "error": str(exc).strip()[:200]}


def _check_monitoring() -> dict[str, Any]:
    # Lost metrics never make a process unready; a flusher thread that died does.
    from monitoring.flusher import flusher, flusher_state

    state = flusher_state()
    return {"ok": not flusher.started or state["running"], **state}


def _check_workers() -> dict[str, Any]:
    """Every worker-pool primary taking traffic is warm on at least one inference worker."""
    if not settings.REDIS_URL:
        return {"ok": True, "detail": "embedded mode: no worker pool"}
    from inference.pool_services import pool_readiness

    return pool_readiness()


READINESS_CHECKS = {
    "database": _check_database,
    "redis": _check_redis,
    "workers": _check_workers,
    "monitoring": _check_monitoring,
}


@extend_schema(
    summary="Liveness: the web process answers",
    responses=inline_serializer("Liveness", {"status": serializers.CharField()}),
)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def live(request: Request) -> Response:
    return Response({"status": "live"})


_READINESS = inline_serializer(
    "Readiness",
    {
        "status": serializers.ChoiceField(choices=["ready", "not_ready"]),
        "checks": serializers.DictField(
            child=serializers.DictField(), help_text='by name: {"ok": bool, ...what the check found}'
        ),
    },
)


@extend_schema(summary="Readiness: database, Redis and workers", responses={200: _READINESS, 503: _READINESS})
@api_view(["GET"])
@authentication_classes([])
@permission_classes([])
def ready(request: Request) -> Response:
    checks = {name: check() for name, check in READINESS_CHECKS.items()}
    ok = all(result["ok"] for result in checks.values())
    return Response({"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503)
