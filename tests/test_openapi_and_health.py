from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_openapi_schema_documents_the_registry(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in [
        "/api/v1/models/",
        "/api/v1/models/{name}/versions/",
        "/api/v1/models/{name}/versions/{version}/artifact",
        "/api/v1/auth/token/",
        "/api/v1/health/ready",
    ]:
        assert path in paths, path


def test_the_docs_page_loads_swagger_from_the_platform_not_a_cdn(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in html
    assert "cdn." not in html and "unpkg" not in html


def test_liveness_and_readiness_report_their_checks(client):
    assert client.get("/api/v1/health/live").json() == {"status": "live"}
    ready = client.get("/api/v1/health/ready").json()
    assert ready["status"] == "ready"
    assert ready["checks"]["database"]["ok"] and ready["checks"]["redis"]["ok"]


def test_readiness_fails_with_the_reason_when_redis_is_unreachable(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/api/v1/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False
