"""Liveness and readiness. Readiness checks what a request needs: the database, Redis, warm workers.

`readiness()` is the one answer; /api/v1/health/ready (here) and /v2/health/ready
(inference/edge.py) both return it.
"""

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

from inference.pool_services import pool_readiness


def _check_database() -> dict[str, Any]:
    """SELECT 1; a connection that died with a database restart is dropped and tried once more."""
    started = time.perf_counter()
    error = ""
    for _ in range(2):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
        except Exception as exc:  # any driver error means "not ready", with the reason
            error = str(exc).strip()[:200] or type(exc).__name__
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
                connection.connection = None
    return {"ok": False, "error": error}


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

    return pool_readiness()


READINESS_CHECKS = {
    "database": _check_database,
    "redis": _check_redis,
    "workers": _check_workers,
    "monitoring": _check_monitoring,
}
READY_RETRY_AFTER_S = 2


def readiness() -> tuple[bool, dict[str, dict[str, Any]]]:
    """THE readiness answer, for /api/v1/health/ready and /v2/health/ready alike.

    Ready when: the database answers (a dead connection is replaced first), Redis answers
    when REDIS_URL is set, every worker-pool primary that takes traffic (state ready,
    weight > 0) is warm on a live inference worker, and the monitoring flusher runs.
    Computed afresh on every call, nothing cached (docs/operations.md, "Readiness").
    """
    checks: dict[str, dict[str, Any]] = {}
    for name, check in READINESS_CHECKS.items():
        try:
            checks[name] = check()
        except Exception as exc:  # noqa: BLE001 - a check that breaks means "not ready", with the reason
            checks[name] = {"ok": False, "error": str(exc).strip()[:200] or type(exc).__name__}
    return all(result["ok"] for result in checks.values()), checks


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
    ok, checks = readiness()
    headers = None if ok else {"Retry-After": str(READY_RETRY_AFTER_S)}
    return Response(
        {"status": "ready" if ok else "not_ready", "checks": checks}, status=200 if ok else 503, headers=headers
    )
