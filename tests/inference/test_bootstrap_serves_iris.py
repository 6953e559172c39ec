from __future__ import annotations

import io
import re
from typing import Any

import orjson
import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_bootstrap_serves_the_demo_model_and_prints_a_key_and_curl_line(
    client: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        call_command("modelhub_bootstrap", stdout=io.StringIO())  # validation runs on commit
    out = io.StringIO()
    call_command("modelhub_bootstrap", stdout=out)
    text = out.getvalue()
    key = re.search(r"API key \(shown once\): (mh_app_\S+)", text).group(1)  # type: ignore[union-attr]
    assert "curl -s -H 'Authorization: Bearer " in text and "/api/v1/endpoints/iris/predict" in text
    response = client.post(
        "/api/v1/endpoints/iris/predict",
        orjson.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200, response.content
    assert response.json()["outputs"]["species"] == ["setosa"]
    # The demo version was never promoted: iris is a development endpoint, so the rule holds.
    from inference.models import Endpoint

    assert Endpoint.objects.get(name="iris").environment == "development"
    again = io.StringIO()
    call_command("modelhub_bootstrap", stdout=again)
    assert "demo endpoint: iris (exists" in again.getvalue()
