"""The Batch pages: list, a job's live page, and starting a job from a version's page."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from accounts.models import Team
from inference.batch import services
from tests.batch.conftest import FEATURES, ready_version, rows, write_csv
from tests.conftest import make_user
from tests.onnx_models import mlp

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def batch_store(settings, tmp_path):
    settings.BATCH_STORE = tmp_path / "batch"


def test_a_job_started_from_the_version_page_shows_progress_errors_and_the_download(engineer, tmp_path):
    ready_version("mlp4", mlp(hidden=8, features=4, classes=3), metadata={"feature_names": FEATURES})
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(engineer)
    version_page = browser.get("/models/mlp4/versions/1/")
    html = version_page.content.decode()
    assert 'id="batch-start-form"' in html and "dashboard/js/batch.js" in html

    # The form posts to the API with the session cookie and the CSRF header (batch.js does this).
    records = rows(30)
    records[4]["f2"] = "four"
    data = write_csv(tmp_path / "scores.csv", records).read_bytes()

    def body():
        return {"model": "mlp4", "version": "1", "passthrough": "id", "input": SimpleUploadedFile("scores.csv", data)}

    assert browser.post("/api/v1/batch-jobs/", body()).status_code == 403  # no CSRF token
    token = version_page.cookies["csrftoken"].value
    created = browser.post("/api/v1/batch-jobs/", body(), HTTP_X_CSRFTOKEN=token)
    assert created.status_code == 201, created.content
    job_id = created.json()["id"]
    services._job_drive(job_id)

    listing = browser.get("/batch/").content.decode()
    assert f'href="/batch/{job_id}/"' in listing and "succeeded" in listing
    detail = browser.get(f"/batch/{job_id}/").content.decode()
    assert f'data-api="/api/v1/batch-jobs/{job_id}/"' in detail and 'id="job-progress"' in detail
    assert f'href="/api/v1/batch-jobs/{job_id}/result"' in detail
    assert "four" in detail  # the error sample names the bad value
    assert f'href="/batch/{job_id}/"' in browser.get("/models/mlp4/versions/1/").content.decode()


def test_another_teams_job_page_is_a_404(engineer, django_user_model, tmp_path):
    team = Team.objects.create(name="fraud")
    ready_version("secret", mlp(hidden=8, features=4, classes=3), team=team, metadata={"feature_names": FEATURES})
    member = make_user(django_user_model, "mia", "ml_engineer")
    team.members.add(member)
    theirs = Client()
    theirs.force_login(member)
    upload = SimpleUploadedFile("in.csv", write_csv(tmp_path / "in.csv", rows(5)).read_bytes())
    job_id = theirs.post(
        "/api/v1/batch-jobs/", {"model": "secret", "version": "1", "passthrough": "id", "input": upload}
    ).json()["id"]
    assert theirs.get(f"/batch/{job_id}/").status_code == 200
    outsider = Client()
    outsider.force_login(engineer)
    assert outsider.get(f"/batch/{job_id}/").status_code == 404
    assert f"/batch/{job_id}/" not in outsider.get("/batch/").content.decode()
