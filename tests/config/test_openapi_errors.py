"""The schema says what the API really answers: nullable fields, the 4xx answers, one Error shape."""

from __future__ import annotations

import pytest

from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def schema(django_db_blocker):
    from django.test import Client

    with django_db_blocker.unblock():
        return Client().get("/api/schema/?format=json").json()


@pytest.mark.parametrize(
    "component, field",
    [("Endpoint", "team"), ("Endpoint", "follows_model"), ("EndpointDetail", "team"), ("RegisteredModel", "team")],
)
def test_fields_the_api_answers_null_are_nullable(schema, component, field):
    assert schema["components"]["schemas"][component]["properties"][field]["nullable"] is True


def test_operations_document_their_4xx_answers_with_the_error_schema(schema):
    paths = schema["paths"]
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    put = paths["/api/v1/endpoints/{name}/traffic"]["put"]["responses"]
    assert {"400", "401", "403", "404", "409", "413"} <= set(put)
    assert all(put[code]["content"] == error for code in ("400", "401", "403", "404", "409", "413"))
    assert {"400", "401", "403", "404"} <= set(paths["/api/v1/models/"]["get"]["responses"])  # ?page past the end
    assert "409" not in paths["/api/v1/models/{name}/"]["get"]["responses"]
    assert set(paths["/api/v1/health/live"]["get"]["responses"]) == {"200", "400"}  # no sign-in needed
    assert schema["components"]["schemas"]["Error"]["required"] == ["error"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path.startswith("/api/") and method in {"get", "post", "put", "patch", "delete"}:
                assert "400" in operation["responses"], (method, path)


def test_an_audit_time_postgresql_cannot_store_is_a_400(approver):
    answer = client_for(approver).get("/api/v1/audit/", {"since": "0049-05-17T15:10:14+17:22"})
    assert answer.status_code == 200, answer.content  # read in UTC
    answer = client_for(approver).get("/api/v1/audit/", {"since": "0001-01-01T00:00:00+05:00"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "since: '0001-01-01T00:00:00+05:00' is out of range"


def test_an_error_to_a_csv_request_is_json(approver):
    for path in ("/api/v1/audit/?format=csv&since=never", "/api/v1/audit/export.csv?since=never"):
        answer = client_for(approver).get(path)
        assert answer.status_code == 400
        assert answer["Content-Type"] == "application/json"
        assert answer.json()["error"]["message"].startswith("since: expected an ISO 8601 date")
