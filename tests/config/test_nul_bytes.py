"""A NUL byte (PostgreSQL text cannot hold one) in a filter, a path or a JSON string is a
clear 400 JSON answer, never a 500; the audit CSV export refuses it before streaming."""

from __future__ import annotations

import pytest

from config.exceptions import NUL_MESSAGE
from registry.models import ModelVersion
from tests.conftest import client_for
from tests.registry import governance as g

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path, params, where",
    [
        ("/api/v1/audit/", {"object_type": "a\x00b"}, "query parameter 'object_type'"),
        ("/api/v1/audit/", {"object_type": "a\x00b", "format": "csv"}, "query parameter 'object_type'"),
        ("/api/v1/audit/export.csv", {"actor": "\x00"}, "query parameter 'actor'"),
        ("/api/v1/models/", {"search": "x\x00"}, "query parameter 'search'"),
        ("/api/v1/models/a%00b/", {}, "the path"),
        ("/api/v1/promotions/", {"model": "\x00"}, "query parameter 'model'"),
        ("/api/v1/endpoints/a%00b/metrics", {}, "the path"),
    ],
)
def test_a_nul_byte_in_a_filter_or_path_is_a_400(approver, path, params, where):
    answer = client_for(approver).get(path, params)
    assert answer.status_code == 400, answer.content
    assert answer["Content-Type"].startswith("application/json")
    assert not answer.streaming
    error = answer.json()["error"]
    assert error["code"] == "invalid"
    assert error["message"] == f"{where} contains a NUL byte (\\x00), which is not allowed"


def test_a_nul_in_a_json_string_is_a_400(api):
    # A text field says so itself (DRF) ...
    answer = api.post("/api/v1/models/", {"name": "nul", "description": "a\x00b"}, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["message"] == "description: Null characters are not allowed."
    # ... a JSON document stored as jsonb is refused by PostgreSQL: still a 400, and nothing changed.
    g.version(g.model("nul"), 1)
    answer = api.patch("/api/v1/models/nul/versions/1/", {"metadata": {"note": "a\x00b"}}, format="json")
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["message"] == NUL_MESSAGE
    assert ModelVersion.objects.get(model__name="nul").metadata == {}


def test_the_audit_export_runs_its_query_before_streaming(approver):
    """A query that fails (here: a division by zero in PostgreSQL) fails before the 200 starts."""
    from django.db import DataError, transaction

    from audit.models import AuditEvent
    from registry.api_governance import audit_csv_response

    g.version(g.model("csv"), 1)
    AuditEvent.objects.create(action="x.y", object_type="t", object_id="1")
    failing = AuditEvent.objects.extra(where=["1 / (id - id) = 1"])
    with pytest.raises(DataError), transaction.atomic():
        audit_csv_response(failing)
    body = b"".join(audit_csv_response(AuditEvent.objects.all()).streaming_content).decode()
    assert body.splitlines()[0].startswith("id,") and ",x.y," in body
