"""GET /api/v1/artifacts/{sha256}: an inference worker's key downloads any team's artifact by
digest, and opens nothing else; a person's token does not open this route."""

from __future__ import annotations

import hashlib

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import Team
from accounts.services import worker_key_create
from tests.batch.conftest import ready_version
from tests.conftest import client_for
from tests.onnx_models import mlp

pytestmark = pytest.mark.django_db


def _worker(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_a_worker_key_downloads_an_artifact_of_any_team_by_digest():
    version = ready_version("mlp4", mlp(hidden=8, features=4, classes=3), team=Team.objects.create(name="fraud"))
    _, key = worker_key_create(name="gpu-host-1")
    response = _worker(key).get(f"/api/v1/artifacts/{version.artifact_sha256}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == version.artifact_sha256 == response["X-Content-SHA256"]


def test_a_worker_key_opens_nothing_else():
    ready_version("mlp4", mlp(hidden=8, features=4, classes=3))
    _, key = worker_key_create(name="gpu-host-1")
    worker = _worker(key)
    for path in ("/api/v1/models/", "/api/v1/models/mlp4/versions/1/artifact", "/api/v1/endpoints/"):
        response = worker.get(path)
        assert response.status_code == 401, path
        assert "only downloads artifacts" in response.json()["error"]["message"]


def test_a_person_a_forged_key_a_revoked_key_and_an_unknown_digest_are_refused(engineer):
    version = ready_version("mlp4", mlp(hidden=8, features=4, classes=3))
    url = f"/api/v1/artifacts/{version.artifact_sha256}"
    assert client_for(engineer).get(url).status_code == 401  # a person's token is not a worker key
    assert _worker("mh_worker_000000000000_" + "x" * 43).get(url).status_code == 401
    found, key = worker_key_create(name="old-host")
    assert _worker(key).get("/api/v1/artifacts/" + "0" * 64).status_code == 404
    assert _worker(key).get("/api/v1/artifacts/not-a-digest").status_code == 400
    call_command("modelhub_worker_key", "revoke", found.prefix)
    response = _worker(key).get(url)
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]
