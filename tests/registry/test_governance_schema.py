from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_the_openapi_schema_documents_promotions_rollback_and_audit(client):
    paths = client.get("/api/schema/?format=json").json()["paths"]
    expected = {
        "/api/v1/models/{name}/versions/{version}/promotions/": "post",
        "/api/v1/models/{name}/rollback": "post",
        "/api/v1/promotions/": "get",
        "/api/v1/promotions/{request_id}/": "get",
        "/api/v1/promotions/{request_id}/approve": "post",
        "/api/v1/promotions/{request_id}/reject": "post",
        "/api/v1/promotions/{request_id}/cancel": "post",
        "/api/v1/audit/": "get",
        "/api/v1/audit/export.csv": "get",
    }
    for path, method in expected.items():
        assert method in paths.get(path, {}), path
    assert set(paths["/api/v1/audit/"]) == {"get"}
    approve = paths["/api/v1/promotions/{request_id}/approve"]["post"]
    schema = approve["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schema.endswith("PromotionDecision")
