"""The batch jobs API: what it accepts, what it refuses (each bad input), and who sees what."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from accounts.models import Team
from inference.batch.models import BatchJob
from registry.models import ModelVersion
from tests import onnx_models
from tests.batch.conftest import ready_version, rows, write_csv
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def post(api: Any, *, name: str = "input.csv", data: bytes | None = None, **fields: Any) -> Any:
    body = {"model": "mlp4", "version": 1, "passthrough": "id", **fields}
    if data is not None:
        body["input"] = SimpleUploadedFile(name, data)
    return api.post("/api/v1/batch-jobs/", body, format="multipart")


def csv_bytes(tmp_path: Any, n: int = 20, **kw: Any) -> bytes:
    return write_csv(tmp_path / "in.csv", rows(n), **kw).read_bytes()


def error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    return response.json()["error"]


def test_a_job_is_accepted_with_lineage_and_listed(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    response = post(api, data=csv_bytes(tmp_path))
    assert response.status_code == 201, response.json()
    job = response.json()
    assert job["state"] == "planning"
    assert job["model_ref"] == "mlp4/1" and job["model_sha256"] == mlp4.artifact_sha256
    assert len(job["input"]["sha256"]) == 64
    assert job["column_mapping"] == {"x": ["f0", "f1", "f2", "f3"]}  # the version's feature order
    assert [j["id"] for j in api.get("/api/v1/batch-jobs/").json()["results"]] == [job["id"]]


def test_a_stage_alias_runs_the_version_in_that_stage(mlp4, engineer, tmp_path):
    ready_version("mlp4", onnx_models.mlp(hidden=8, features=4, classes=3), version=2, stage="Production")
    api = client_for(engineer)
    job = post(api, data=csv_bytes(tmp_path), model="mlp4@production", version="").json()
    assert (job["version"], job["model_ref"]) == (2, "mlp4@production")
    assert error(post(api, data=csv_bytes(tmp_path), model="mlp4@staging", version=""), 409)["code"] == (
        "version_not_ready"
    )
    assert error(post(api, data=csv_bytes(tmp_path), model="mlp4@canary", version=""), 400)


def test_a_version_that_is_not_ready_is_refused(engineer, tmp_path):
    ready_version("pending", onnx_models.mlp(hidden=8, features=4, classes=3), status=ModelVersion.Status.VALIDATING)
    found = error(post(client_for(engineer), model="pending", data=csv_bytes(tmp_path)), 409)
    assert found["code"] == "version_not_ready" and "validating" in found["message"]


def test_another_teams_job_and_model_are_not_found(engineer, django_user_model, tmp_path):
    team = Team.objects.create(name="fraud")
    ready_version("secret", onnx_models.mlp(hidden=8, features=4, classes=3), team=team)
    from tests.conftest import make_user

    member = make_user(django_user_model, "mia", "ml_engineer")
    team.members.add(member)
    theirs = post(client_for(member), model="secret", data=csv_bytes(tmp_path))
    assert theirs.status_code == 201
    assert BatchJob.objects.get().team == team
    outsider = client_for(engineer)
    assert error(outsider.get(f"/api/v1/batch-jobs/{theirs.json()['id']}/"), 404)["code"] == "not_found"
    assert outsider.get("/api/v1/batch-jobs/").json()["results"] == []
    assert error(outsider.post(f"/api/v1/batch-jobs/{theirs.json()['id']}/cancel"), 404)
    assert error(post(outsider, model="secret", data=csv_bytes(tmp_path)), 404)


def test_a_file_that_is_not_its_format_is_refused(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    assert "Parquet" in error(post(api, name="in.parquet", data=csv_bytes(tmp_path)), 400)["message"]
    assert "csv" in error(post(api, name="in.csv", data=os.urandom(4096)), 400)["message"].lower()
    assert "JSON" in error(post(api, name="in.jsonl", data=b"id,f0\n1,2\n"), 400)["message"]


def test_a_missing_column_is_refused_and_named(mlp4, engineer, tmp_path):
    found = error(post(client_for(engineer), data=csv_bytes(tmp_path, columns=["id", "f0", "f1", "f2"])), 400)
    assert '"f3"' in found["message"] and found["details"]["missing"] == ["f3"]
    mapped = post(client_for(engineer), data=csv_bytes(tmp_path), column_mapping='{"x": ["f0", "f1", "nope", "f3"]}')
    assert '"nope"' in error(mapped, 400)["message"]
    short = post(client_for(engineer), data=csv_bytes(tmp_path), column_mapping='{"x": ["f0", "f1"]}')
    assert "expected 4 columns, got 2" in error(short, 400)["message"]
    assert '"nokey"' in error(post(client_for(engineer), data=csv_bytes(tmp_path), passthrough="nokey"), 400)["message"]


def test_extra_columns_are_ignored_unless_passed_through(mlp4, engineer, tmp_path):
    from inference.batch import services

    records = [{**r, "note": "extra"} for r in rows(5)]
    data = write_csv(tmp_path / "extra.csv", records).read_bytes()
    job_id = post(client_for(engineer), data=data).json()["id"]
    services._job_drive(job_id)
    assert BatchJob.objects.get(pk=job_id).output_columns == ["id", "y_0", "y_1", "y_2"]


def test_an_empty_file_and_a_header_only_file_are_refused(mlp4, engineer):
    api = client_for(engineer)
    assert "empty" in error(post(api, data=b""), 400)["message"]
    assert "no rows" in error(post(api, data=b"id,f0,f1,f2,f3\n"), 400)["message"]


def test_a_file_over_the_size_limit_is_refused_with_413(mlp4, engineer, tmp_path, settings):
    settings.BATCH_MAX_INPUT_BYTES = 100
    assert error(post(client_for(engineer), data=csv_bytes(tmp_path)), 413)["code"] == "payload_too_large"
    assert not list((settings.BATCH_STORE / "tmp").iterdir())  # nothing left behind


def test_a_path_inside_the_data_folder_is_read_and_one_outside_is_refused(mlp4, engineer, tmp_path, data_dir):
    api = client_for(engineer)
    write_csv(data_dir / "in.csv", rows(5))
    body = {"model": "mlp4", "version": 1, "passthrough": ["id"]}
    assert api.post("/api/v1/batch-jobs/", {**body, "input_path": "in.csv"}, format="json").status_code == 201
    outside = write_csv(tmp_path / "outside.csv", rows(5))
    (data_dir / "link.csv").symlink_to(outside)
    for path in ["../outside.csv", str(outside), "link.csv"]:
        found = error(api.post("/api/v1/batch-jobs/", {**body, "input_path": path}, format="json"), 400)
        assert found["code"] == "input_path_refused", path
    assert error(api.post("/api/v1/batch-jobs/", {**body, "input_path": "nope.csv"}, format="json"), 404)


def test_input_must_be_a_file_or_a_path_not_both_nor_neither(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    assert "one of them" in error(post(api), 400)["message"]
    assert "one of them" in error(post(api, data=csv_bytes(tmp_path), input_path="in.csv"), 400)["message"]


def test_chunk_rows_over_the_cap_is_refused(mlp4, engineer, tmp_path, settings):
    settings.BATCH_MAX_CHUNK_ROWS = 1000
    assert (
        "visibility timeout"
        in error(post(client_for(engineer), data=csv_bytes(tmp_path), chunk_rows=5000), 400)["message"]
    )


def test_a_viewer_cannot_start_a_job(mlp4, viewer, tmp_path):
    assert post(client_for(viewer), data=csv_bytes(tmp_path)).status_code == 403


def test_a_dry_run_checks_the_first_rows_and_keeps_nothing(mlp4, engineer, tmp_path, settings):
    records = rows(50)
    records[2]["f0"] = "abc"
    data = write_csv(tmp_path / "in.csv", records).read_bytes()
    response = post(client_for(engineer), data=data, dry_run="true", dry_run_rows="10")
    assert response.status_code == 200, response.content
    answer = response.json()
    assert answer["rows_checked"] == 10 and answer["bad_rows"] == 1 and not answer["ok"]
    assert answer["errors"][0]["row"] == 2 and answer["errors"][0]["column"] == "f0"
    assert answer["output_columns"] == ["id", "y_0", "y_1", "y_2"] and answer["sample"][0]["id"] == "k0"
    assert not BatchJob.objects.exists()
    assert not [p for p in settings.BATCH_STORE.rglob("*") if p.is_file()]


def test_a_body_that_is_not_an_object_is_refused(mlp4, engineer):
    response = client_for(engineer).post("/api/v1/batch-jobs/", [1, 2], format="json")
    assert "JSON object" in error(response, 400)["message"]


def test_a_missing_part_fails_the_job_instead_of_leaving_it_finalizing(mlp4, engineer, tmp_path):
    from inference.batch import services, storage

    job_id = post(client_for(engineer), data=csv_bytes(tmp_path, 20), chunk_rows=10).json()["id"]
    services.job_plan(job_id=job_id)
    for index in (0, 1):
        services.chunk_run(job_id=job_id, index=index)
    storage.part_path(job_id, 1, "csv").unlink()
    assert services.job_finalize(job_id=job_id) == "failed"
    assert "joining the parts failed" in BatchJob.objects.get(pk=job_id).error


def test_the_job_list_does_not_grow_queries_with_its_length(mlp4, engineer, tmp_path, django_assert_max_num_queries):
    from accounts.models import Team

    mlp4.model.team = Team.objects.create(name="growth")
    mlp4.model.save(update_fields=["team"])
    mlp4.model.team.members.add(engineer)
    api = client_for(engineer)
    for _ in range(5):
        assert post(api, data=csv_bytes(tmp_path)).status_code == 201
    with django_assert_max_num_queries(8):
        assert len(api.get("/api/v1/batch-jobs/").json()["results"]) == 5
