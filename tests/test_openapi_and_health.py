from __future__ import annotations

import pytest
from django.core.management import call_command
from drf_spectacular.management.commands.spectacular import SchemaGenerationError

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


def test_the_openapi_schema_generates_without_a_warning_and_validates(tmp_path, capsys):
    # Any drf-spectacular warning or error fails: an authentication class with no OpenAPI
    # extension, an enum name collision, a response it cannot describe.
    try:
        call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    except SchemaGenerationError:
        pytest.fail(f"drf-spectacular warned:\n{capsys.readouterr().err}")


def test_the_schema_describes_token_authentication_as_http_bearer(client):
    schema = client.get("/api/schema/?format=json").json()
    bearer = schema["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert {"bearerAuth": []} in schema["paths"]["/api/v1/models/"]["get"]["security"]


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


def test_the_token_response_schema_matches_what_the_endpoint_returns(client, django_user_model):
    schema = client.get("/api/schema/?format=json").json()
    documented = schema["paths"]["/api/v1/auth/token/"]["post"]["responses"]
    assert set(documented) == {"201", "400", "401", "413", "415", "429"}
    django_user_model.objects.create_user("schema-check", password="long-enough-pass-1")
    answer = client.post(
        "/api/v1/auth/token/",
        {"username": "schema-check", "password": "long-enough-pass-1"},
        content_type="application/json",
    )
    assert answer.status_code == 201, answer.content
    ref = documented["201"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(answer.json()) == set(schema["components"]["schemas"][ref]["properties"])
