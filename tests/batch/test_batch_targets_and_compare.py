"""What a job runs (an endpoint's current primary; tests/batch/test_batch_pipeline_target.py
has pipelines), compare jobs and their
report as a promotion request's evidence, GPU jobs' queue and status, non-UTF-8 CSV input."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from accounts.models import Team
from inference.batch import services
from inference.batch.models import BatchJob
from inference.models import Endpoint, TrafficPolicyRevision
from registry import promotions
from registry.models import ModelVersion
from tests import onnx_models
from tests.batch.conftest import FEATURES, ready_version, rows, write_csv
from tests.batch.test_batch_job_api import error, post
from tests.conftest import client_for, make_user

pytestmark = pytest.mark.django_db

Stage = ModelVersion.Stage


def endpoint_with(name: str, routes: list[tuple[ModelVersion, str, int]], **fields: Any) -> Endpoint:
    """An endpoint whose current split is `routes` (written as the traffic service leaves it)."""
    endpoint = Endpoint.objects.create(name=name, **fields)
    TrafficPolicyRevision.objects.create(
        endpoint=endpoint,
        revision=1,
        is_current=True,
        routes=[
            {"model": v.model.name, "version": v.version, "role": role, "weight": weight} for v, role, weight in routes
        ],
    )
    return endpoint


def csv_input(tmp_path: Any, n: int = 20) -> bytes:
    return write_csv(tmp_path / "in.csv", rows(n)).read_bytes()


def by_endpoint(api: Any, data: bytes, **fields: Any) -> Any:
    return post(api, data=data, model="", version="", **fields)


# --- an endpoint's current primary ----------------------------------------------------------------


def test_an_endpoint_runs_its_current_primary_and_the_job_records_it(mlp4, engineer, tmp_path):
    v2 = ready_version("mlp4", onnx_models.mlp(hidden=16, features=4, classes=3), version=2)
    endpoint_with("churn", [(v2, "primary", 90), (mlp4, "canary", 10)])
    api = client_for(engineer)
    response = by_endpoint(api, csv_input(tmp_path), endpoint="churn")
    assert response.status_code == 201, response.content
    job = response.json()
    assert (job["model"], job["version"], job["endpoint"]) == ("mlp4", 2, "churn")
    assert job["model_ref"] == "endpoint:churn" and job["model_sha256"] == v2.artifact_sha256
    # The split moving later does not change what the job runs: it recorded the version.
    TrafficPolicyRevision.objects.filter(endpoint__name="churn").update(
        routes=[{"model": "mlp4", "version": 1, "role": "primary", "weight": 100}]
    )
    services._job_drive(job["id"])
    finished = BatchJob.objects.get(pk=job["id"])
    assert finished.state == "succeeded" and finished.model_version_id == v2.pk


def test_an_endpoint_primary_the_environment_no_longer_allows_is_refused(mlp4, engineer, tmp_path):
    # A production endpoint takes Production versions only; this one was archived since.
    ModelVersion.objects.filter(pk=mlp4.pk).update(stage=Stage.ARCHIVED)
    endpoint_with("prod-ep", [(mlp4, "primary", 100)], environment="production")
    found = error(by_endpoint(client_for(engineer), csv_input(tmp_path), endpoint="prod-ep"), 409)
    assert found["code"] == "environment_rule" and found["details"]["stage"] == "Archived"
    assert "prod-ep" in found["message"] and "Production" in found["message"]
    assert not BatchJob.objects.exists()


def test_a_development_endpoint_may_run_any_ready_primary(mlp4, engineer, tmp_path):
    endpoint_with("dev-ep", [(mlp4, "primary", 100)], environment="development")
    assert by_endpoint(client_for(engineer), csv_input(tmp_path), endpoint="dev-ep").status_code == 201


def test_endpoint_targets_are_team_scoped_and_need_a_primary(mlp4, engineer, django_user_model, tmp_path):
    team = Team.objects.create(name="fraud")
    endpoint_with("theirs", [(mlp4, "primary", 100)], team=team)
    api = client_for(engineer)
    assert error(by_endpoint(api, csv_input(tmp_path), endpoint="theirs"), 404)["code"] == "not_found"
    member = make_user(django_user_model, "mia", "ml_engineer")
    team.members.add(member)
    assert by_endpoint(client_for(member), csv_input(tmp_path), endpoint="theirs").status_code == 201
    Endpoint.objects.create(name="empty")
    assert error(by_endpoint(api, csv_input(tmp_path), endpoint="empty"), 409)["code"] == "no_primary"
    both = post(api, data=csv_input(tmp_path), endpoint="theirs")  # model=mlp4 version=1 as well
    assert "not both" in error(both, 400)["message"]


def test_a_pipeline_is_named_through_its_endpoint(mlp4, engineer, tmp_path):
    found = error(by_endpoint(client_for(engineer), csv_input(tmp_path), pipeline="churn-pipeline"), 400)
    assert "name the endpoint that serves it" in found["message"]


def test_an_endpoint_whose_primary_pipeline_is_gone_is_a_404(mlp4, engineer, tmp_path):
    endpoint = Endpoint.objects.create(name="piped")
    TrafficPolicyRevision.objects.create(
        endpoint=endpoint,
        revision=1,
        is_current=True,
        routes=[{"pipeline": "fraud", "version": 3, "pipeline_version": 1, "role": "primary", "weight": 100}],
    )
    found = error(by_endpoint(client_for(engineer), csv_input(tmp_path), endpoint="piped"), 404)
    assert "no version 3 of a pipeline named 'fraud'" in found["message"]
    assert not BatchJob.objects.exists()


# --- compare jobs ----------------------------------------------------------------------------------


def predictions(version: ModelVersion, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    from registry.storage import artifact_path

    session = ort.InferenceSession(str(artifact_path(version.artifact_sha256)), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0], dtype=np.float64)


def features_of(n: int) -> np.ndarray[Any, Any]:
    return np.array([[r[f] for f in FEATURES] for r in rows(n)], dtype=np.float32)


@pytest.fixture
def v2(mlp4: ModelVersion) -> ModelVersion:
    return ready_version("mlp4", onnx_models.mlp(hidden=16, features=4, classes=3), version=2)


def compare_job(api: Any, tmp_path: Any, n: int = 50, **fields: Any) -> int:
    response = post(api, data=csv_input(tmp_path, n), chunk_rows=20, compare_version=2, **fields)
    assert response.status_code == 201, response.content
    assert response.json()["kind"] == "compare" and response.json()["compare"]["version"] == 2
    services._job_drive(response.json()["id"])
    return int(response.json()["id"])


def test_a_compare_job_reports_agreement_and_deltas_per_output(v2, mlp4, engineer, tmp_path):
    api = client_for(engineer)
    job_id = compare_job(api, tmp_path, n=50)
    job = api.get(f"/api/v1/batch-jobs/{job_id}/").json()
    assert job["state"] == "succeeded", job["error"]
    a, b = predictions(mlp4, features_of(50)), predictions(v2, features_of(50))
    delta = np.abs(a - b)
    report = job["report"]
    assert report["rows_compared"] == 50 and report["a"]["version"] == 1 and report["b"]["version"] == 2
    y = report["outputs"]["y"]
    assert y["max_abs_delta"] == pytest.approx(delta.max(), rel=1e-5)
    assert y["mean_abs_delta"] == pytest.approx(delta.mean(), rel=1e-5)
    assert y["label_agreement"] == pytest.approx(np.mean(a.argmax(1) == b.argmax(1)))
    assert report["agreement"] == pytest.approx(np.mean(np.all(delta <= 1e-6, axis=1)))
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job_id}/result").streaming_content).decode()
    table = list(csv.DictReader(io.StringIO(body)))
    assert list(table[0]) == ["id", "a.y_0", "a.y_1", "a.y_2", "b.y_0", "b.y_1", "b.y_2"]
    assert [r["id"] for r in table] == [f"k{i}" for i in range(50)]
    assert float(table[3]["b.y_1"]) == pytest.approx(b[3, 1], rel=1e-5)


def test_a_version_compared_with_an_identical_one_agrees_fully(mlp4, engineer, tmp_path):
    ready_version("mlp4", onnx_models.mlp(hidden=8, features=4, classes=3), version=2)  # the same bytes
    job_id = compare_job(client_for(engineer), tmp_path, n=30)
    report = BatchJob.objects.get(pk=job_id).report
    assert report["agreement"] == 1.0 and report["outputs"]["y"]["max_abs_delta"] == 0.0
    assert report["outputs"]["y"]["label_agreement"] == 1.0
    from django.test import Client

    browser = Client()
    browser.force_login(engineer)
    page = browser.get(f"/batch/{job_id}/").content.decode()
    assert 'id="compare-report"' in page and "<strong>100 %</strong>" in page and "<code>y</code>" in page


def test_versions_with_different_signatures_cannot_be_compared(mlp4, engineer, tmp_path):
    ready_version("mlp4", onnx_models.mlp(hidden=8, features=4, classes=5), version=2)
    found = error(post(client_for(engineer), data=csv_input(tmp_path), compare_version=2), 400)
    assert found["message"].startswith("compare:") and '"y"' in found["message"]
    same = error(post(client_for(engineer), data=csv_input(tmp_path), compare_version=1), 400)
    assert "another one" in same["message"]


def test_a_compare_report_is_attached_to_a_promotion_request_and_shown_to_the_approver(
    v2, mlp4, engineer, approver, tmp_path
):
    api = client_for(engineer)
    job_id = compare_job(api, tmp_path)
    request = promotions.promotion_request_create(
        version=v2, to_stage="Staging", justification="better recall", user=engineer
    )
    response = api.post(f"/api/v1/batch-jobs/{job_id}/attach", {"promotion_request": request.pk}, format="json")
    assert response.status_code == 200, response.content
    seen = client_for(approver).get(f"/api/v1/promotions/{request.pk}/").json()
    [entry] = seen["evidence"]
    assert entry["kind"] == "batch_compare" and entry["id"] == job_id
    assert entry["url"] == f"/api/v1/batch-jobs/{job_id}/" and entry["attached_by"] == engineer.username
    assert "mlp4 v1" in entry["summary"] and "mlp4 v2" in entry["summary"] and "labels" in entry["summary"]
    # Attaching again replaces the entry instead of listing it twice.
    api.post(f"/api/v1/batch-jobs/{job_id}/attach", {"promotion_request": request.pk}, format="json")
    assert len(client_for(approver).get(f"/api/v1/promotions/{request.pk}/").json()["evidence"]) == 1
    from django.test import Client

    browser = Client()
    browser.force_login(approver)
    page = browser.get(f"/approvals/{request.pk}/").content.decode()
    assert f'href="/batch/{job_id}/"' in page and f"compare job #{job_id}" in page


def test_only_a_succeeded_compare_job_of_the_requested_version_is_evidence(v2, mlp4, engineer, tmp_path):
    api = client_for(engineer)
    v3 = ready_version("mlp4", onnx_models.mlp(hidden=16, features=4, classes=3), version=3)
    request = promotions.promotion_request_create(version=v3, to_stage="Staging", justification="x", user=engineer)
    job_id = compare_job(api, tmp_path)
    attach = api.post(f"/api/v1/batch-jobs/{job_id}/attach", {"promotion_request": request.pk}, format="json")
    assert "did not compare" in error(attach, 400)["message"]
    plain = post(api, data=csv_input(tmp_path)).json()["id"]
    attach = api.post(f"/api/v1/batch-jobs/{plain}/attach", {"promotion_request": request.pk}, format="json")
    assert "not a compare job" in error(attach, 409)["message"]
    attach = api.post(f"/api/v1/batch-jobs/{job_id}/attach", {"promotion_request": 99999}, format="json")
    assert error(attach, 404)


# --- GPU jobs: their queue and the provider they got ----------------------------------------------------


def test_a_gpu_job_records_the_provider_it_really_got(mlp4, engineer, tmp_path):
    from inference.runtime.session import LoadedModel
    from registry.storage import artifact_path

    job_id = post(client_for(engineer), data=csv_input(tmp_path), device="gpu").json()["id"]
    services._job_drive(job_id)
    job = client_for(engineer).get(f"/api/v1/batch-jobs/{job_id}/").json()
    assert job["state"] == "succeeded"
    # What ONNX Runtime gives a GPU session on this machine (a CUDA build without a usable
    # GPU lists CUDAExecutionProvider as available and still hands out CPU).
    really = LoadedModel.load(str(artifact_path(mlp4.artifact_sha256)), device="gpu").provider
    assert job["providers"] == [really]
    assert {c["provider"] for c in job["chunks"]} == {really}
    if really != "CUDAExecutionProvider":
        assert "device=gpu" in job["status_detail"] and "CUDA is not usable" in job["status_detail"]
        assert really in job["status_detail"]


def test_gpu_jobs_go_to_the_gpu_queue(settings):
    settings.BATCH_QUEUE, settings.BATCH_GPU_QUEUE = "b", "b-gpu"
    assert services._queue_for("gpu") == "b-gpu" and services._queue_for("cpu") == "b"


# --- non-UTF-8 CSV -----------------------------------------------------------------------------------


def latin1_csv(n: int = 10, *, bad_line_at: int = 6) -> bytes:
    lines = ["id,f0,f1,f2,f3"] + [f"k{i},1,2,3,4" for i in range(n)]
    lines[bad_line_at] = "kéé,1,2,3,4,5"  # a line with one field too many, and not UTF-8
    return ("\n".join(lines) + "\n").encode("latin-1")


def test_a_csv_that_is_not_utf8_is_refused_with_the_line_named_under_error_policy_fail(mlp4, engineer, tmp_path):
    found = error(post(client_for(engineer), data=latin1_csv(bad_line_at=2), error_policy="fail"), 400)
    assert "not UTF-8" in found["message"] and "line 3" in found["message"] and "0xe9" in found["message"]


def test_a_non_utf8_line_past_the_checked_head_fails_the_job_with_its_line(
    mlp4, engineer, tmp_path, settings, monkeypatch
):
    from inference.batch import tables

    monkeypatch.setattr(tables, "_UTF8_HEAD_BYTES", 64)  # creation checks the first 64 bytes only
    job_id = post(client_for(engineer), data=latin1_csv(n=40, bad_line_at=30), error_policy="fail").json()["id"]
    unraisable: list[Any] = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    services._job_drive(job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "failed" and "not UTF-8" in job.error and "line 31" in job.error
    assert unraisable == []  # pyarrow's invalid-row handler never saw the line


def mixed_csv(n: int = 12) -> bytes:
    """UTF-8 rows, with Latin-1 bytes in the key of row 4 and in feature f2 of row 7."""
    lines = [b"id,f0,f1,f2,f3"] + [f"k{i},1,2,3,4".encode() for i in range(n)]
    lines[1 + 4] = "k4é,1,2,3,4".encode("latin-1")
    lines[1 + 7] = "k7,1,2,3é,4".encode("latin-1")
    lines[1 + 9] = b"k9,1,2,3,4,5"  # a line with one field too many: not a row
    return b"\n".join(lines) + b"\n"


def errors_of(api: Any, job_id: int) -> list[dict[str, str]]:
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job_id}/errors").streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def test_with_error_policy_skip_rows_that_are_not_utf8_go_to_the_errors_file(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    response = post(api, data=mixed_csv(), max_error_pct="40", chunk_rows="5")
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    services._job_drive(job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "succeeded", job.error
    assert (job.rows_total, job.rows_done, job.rows_failed) == (12, 9, 3)
    errors = errors_of(api, job_id)
    assert [(e["row"], e["column"]) for e in errors if e["row"]] == [("4", "id"), ("7", "f2")]
    assert all("invalid UTF-8 bytes" in e["reason"] for e in errors if e["row"])
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job_id}/result").streaming_content).decode()
    ids = [r["id"] for r in csv.DictReader(io.StringIO(body))]
    # Row numbers are the input's: the rows after a dropped one keep theirs (k10 is row 9,
    # because line 11 has a field too many and is not a row).
    assert ids == ["k0", "k1", "k2", "k3", "k5", "k6", "k8", "k10", "k11"]


def test_a_dry_run_with_error_policy_skip_counts_the_rows_that_are_not_utf8(mlp4, engineer, tmp_path):
    response = post(client_for(engineer), data=mixed_csv(), dry_run="true", dry_run_rows="9")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["bad_rows"] == 2 and [(e["row"], e["column"]) for e in body["errors"]] == [(4, "id"), (7, "f2")]


def test_a_csv_holding_its_own_replacement_character_is_still_refused_as_a_whole(mlp4, engineer, tmp_path):
    data = mixed_csv().replace(b"k2,", "k2\ufffd,".encode())  # a real U+FFFD: a replaced byte would look alike
    found = error(post(client_for(engineer), data=data, max_error_pct="40"), 400)
    assert "not UTF-8" in found["message"] and "line 6" in found["message"]


def test_a_csv_holding_its_own_replacement_character_past_the_head_fails_the_job(mlp4, engineer, tmp_path, monkeypatch):
    from inference.batch import tables

    monkeypatch.setattr(tables, "_UTF8_HEAD_BYTES", 32)  # creation checks the first 32 bytes only
    data = mixed_csv().replace(b"k2,", "k2\ufffd,".encode())
    job_id = post(client_for(engineer), data=data, max_error_pct="40").json()["id"]
    services._job_drive(job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "failed" and "not UTF-8" in job.error and "line 6" in job.error
