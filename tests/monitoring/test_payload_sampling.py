"""Payload samples: taken at the endpoint's rate, redacted, size-capped, persisted by beat."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitoring import rollups
from monitoring.flusher import prepare_payload
from monitoring.models import PayloadSample
from tests.monitoring.conftest import make_endpoint, rec

pytestmark = pytest.mark.django_db

BODY = json.dumps(
    {"inputs": {"ssn": [[987650123]], "x": [[1.0, 2.0]]}, "customer": {"email": "a@b.c", "age": 30}}
).encode()


def configure(api: Any, **changes: Any) -> Any:
    make_endpoint()
    return api.patch("/api/v1/endpoints/iris/monitoring", changes, format="json")


def test_sampled_payloads_are_redacted_and_persisted(api: Any, recorder: Any, redis_flusher: Any) -> None:
    response = configure(api, payload_sample_rate=1.0, redact_fields=["ssn", "email"])
    assert response.status_code == 200, response.content
    redis_flusher.refresh_config()
    for _ in range(3):
        recorder.record(rec(payload=BODY, response=b'{"outputs": {"label": [1]}}'))
    redis_flusher.flush()
    assert rollups.persist_samples() == 3
    assert rollups.persist_samples() == 0  # taken from Redis once
    sample = PayloadSample.objects.first()
    stored = json.loads(sample.request)
    assert stored["inputs"]["ssn"] == "[redacted]" and stored["customer"]["email"] == "[redacted]"
    assert stored["inputs"]["x"] == [[1.0, 2.0]] and stored["customer"]["age"] == 30
    listed = api.get("/api/v1/endpoints/iris/samples/").json()
    # the redacted value is nowhere, not even inside another field's text
    assert listed["count"] == 3 and "987650123" not in json.dumps(listed)


def test_nothing_is_sampled_at_rate_zero(api: Any, recorder: Any, redis_flusher: Any) -> None:
    configure(api, payload_sample_rate=0.0)
    redis_flusher.refresh_config()
    recorder.record(rec(payload=BODY))
    redis_flusher.flush()
    assert rollups.persist_samples() == 0


def test_v2_inputs_named_for_redaction_lose_their_data() -> None:
    body = json.dumps(
        {
            "inputs": [
                {"name": "ssn", "datatype": "INT64", "shape": [1], "data": [987650123]},
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.5]},
            ]
        }
    ).encode()
    text, cut = prepare_payload(body, redact_fields=["ssn"], max_bytes=10_000)
    stored = json.loads(text)
    assert stored["inputs"][0]["data"] == "[redacted]" and stored["inputs"][1]["data"] == [1.5] and not cut


def test_oversized_and_unparsable_bodies_are_replaced_by_markers() -> None:
    text, cut = prepare_payload(b'{"x": "' + b"a" * 500 + b'"}', redact_fields=[], max_bytes=100)
    assert cut and "over the 100-byte" in text
    text, _ = prepare_payload(b"\x00\x01binary", redact_fields=["ssn"], max_bytes=100)
    assert "withheld" in text
    text, _ = prepare_payload(b"\xff\xfe", redact_fields=[], max_bytes=100)
    assert text.startswith("[binary body")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"payload_sample_rate": 1.5}, "from 0 to 1"),
        ({"drift_sample_rate": -0.1}, "from 0 to 1"),
        ({"payload_sample_rate": "often"}, "from 0 to 1"),
        ({"redact_fields": "ssn"}, "list of field names"),
        ({"max_payload_bytes": 0}, "from 1 to"),
        ({"sample_everything": True}, "unknown settings"),
    ],
)
def test_bad_sampling_settings_are_refused(api: Any, changes: dict[str, Any], message: str) -> None:
    response = configure(api, **changes)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_viewers_cannot_change_sampling(viewer: Any) -> None:
    from tests.conftest import client_for

    make_endpoint()
    response = client_for(viewer).patch("/api/v1/endpoints/iris/monitoring", {"payload_sample_rate": 1}, format="json")
    assert response.status_code == 403
