"""Whatever goes wrong, an API caller gets JSON with the right status, never an HTML page."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_a_malformed_json_body_is_a_400(api):
    response = api.generic("POST", "/api/v1/models/", b'{"name": ', content_type="application/json")
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]["message"]


def test_a_deeply_nested_json_body_is_a_400_not_a_crash(api):
    body = b"[" * 50_000 + b"]" * 50_000
    response = api.generic("POST", "/api/v1/models/", body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"


def test_a_body_over_the_limit_is_a_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = api.generic(
        "POST", "/api/v1/models/", b'{"name": "' + b"x" * 500 + b'"}', content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_body_announced_larger_than_any_upload_is_refused_before_reading(api, settings):
    settings.MAX_ARTIFACT_BYTES = 10
    response = api.generic(
        "POST", "/api/v1/models/", b"{}", content_type="application/json", CONTENT_LENGTH=str(10 * 1024 * 1024)
    )
    assert response.status_code == 413


def test_an_unknown_api_path_is_a_json_404(client):
    response = client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_request_without_credentials_is_a_json_401(client):
    response = client.get("/api/v1/models/")
    assert response.status_code in (401, 403)
    assert response.json()["error"]["code"] in ("not_authenticated", "authentication_failed")


def test_a_malformed_bearer_token_is_a_json_401(client):
    response = client.get("/api/v1/models/", HTTP_AUTHORIZATION="Bearer nonsense")
    assert response.status_code == 401
    assert "malformed token" in response.json()["error"]["message"]


def test_an_unexpected_error_is_a_json_500_without_a_stack_trace(api, monkeypatch):
    from registry import selectors

    def explode(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "model_get", explode)
    api.raise_request_exception = False
    response = api.get("/api/v1/models/anything/")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "server_error"
    assert b"secret internals" not in response.content
