"""Jobs driven step by step in the test's process: plan, chunks, finalize (no broker)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from inference.batch import services, storage
from inference.batch.models import BatchChunk, BatchJob
from tests.batch.conftest import rows, write_csv, write_jsonl, write_parquet
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def start(api: Any, path: Any, **fields: Any) -> Any:
    body = {"model": "mlp4", "version": 1, "passthrough": '["id"]', **fields}
    body["input"] = SimpleUploadedFile(path.name, path.read_bytes())
    return api.post("/api/v1/batch-jobs/", body, format="multipart")


def run(job_id: int) -> BatchJob:
    services._job_drive(job_id)
    return BatchJob.objects.get(pk=job_id)


def result_rows(api: Any, job: BatchJob) -> list[dict[str, Any]]:
    response = api.get(f"/api/v1/batch-jobs/{job.pk}/result")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    if job.output_format == "csv":
        return list(csv.DictReader(io.StringIO(body.decode())))
    if job.output_format == "jsonl":
        return [json.loads(line) for line in body.splitlines()]
    return pq.read_table(io.BytesIO(body)).to_pylist()


@pytest.mark.parametrize(("fmt", "writer"), [("csv", write_csv), ("parquet", write_parquet), ("jsonl", write_jsonl)])
def test_a_job_scores_every_row_exactly_once_in_chunks(mlp4, engineer, tmp_path, fmt, writer):
    api = client_for(engineer)
    source = writer(tmp_path / f"input.{fmt}", rows(1000))
    response = start(api, source, chunk_rows="300")
    assert response.status_code == 201, response.json()
    job = run(response.json()["id"])
    assert job.state == "succeeded", job.error
    assert job.chunks_total == 4 and job.rows_total == 1000 and job.rows_done == 1000
    out = result_rows(api, job)
    assert [r["id"] for r in out] == [f"k{i}" for i in range(1000)]  # in order, once each
    assert set(out[0]) == {"id", "y_0", "y_1", "y_2"}
    detail = api.get(f"/api/v1/batch-jobs/{job.pk}/").json()
    assert detail["result"]["sha256"] == storage.file_sha256(storage.result_path(job.pk, fmt))[0]
    assert [c["attempts"] for c in detail["chunks"]] == [1, 1, 1, 1]
    assert detail["progress"]["fraction"] == 1.0


def test_the_job_records_the_model_and_input_digests(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    source = write_csv(tmp_path / "input.csv", rows(10))
    job = run(start(api, source).json()["id"])
    detail = api.get(f"/api/v1/batch-jobs/{job.pk}/").json()
    assert detail["model_sha256"] == mlp4.artifact_sha256
    assert detail["input"]["sha256"] == storage.file_sha256(source)[0]


def test_bad_values_go_to_the_errors_file_with_row_numbers(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    records = rows(100)
    records[7]["f1"] = "seven"
    records[42]["f3"] = ""
    source = write_csv(tmp_path / "input.csv", records)
    job = run(start(api, source, chunk_rows="30").json()["id"])
    assert job.state == "succeeded", job.error
    assert (job.rows_done, job.rows_failed) == (98, 2)
    ids = [r["id"] for r in result_rows(api, job)]
    assert "k7" not in ids and "k42" not in ids and len(ids) == 98
    errors = list(
        csv.DictReader(io.StringIO(b"".join(api.get(f"/api/v1/batch-jobs/{job.pk}/errors").streaming_content).decode()))
    )
    assert [(e["row"], e["column"]) for e in errors] == [("7", "f1"), ("42", "f3")]
    assert "seven" in errors[0]["reason"] and errors[1]["reason"] == "missing value"


def test_too_many_bad_rows_fail_the_job(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    records = rows(100)
    for i in range(0, 100, 10):
        records[i]["f0"] = "x"
    source = write_csv(tmp_path / "input.csv", records)
    job = run(start(api, source, max_error_pct="5").json()["id"])
    assert job.state == "failed"
    assert "10 of 100 rows failed" in job.error


def test_error_policy_fail_stops_at_the_first_bad_row(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    records = rows(50)
    records[3]["f2"] = "oops"
    source = write_csv(tmp_path / "input.csv", records)
    job = run(start(api, source, error_policy="fail").json()["id"])
    assert job.state == "failed"
    assert 'row 3, column "f2"' in job.error


def test_unparseable_csv_lines_are_skipped_into_the_errors_file(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    source = write_csv(tmp_path / "input.csv", rows(20))
    with open(source, "a") as out:
        out.write("k99,1,2\n")  # two fields short
    job = run(start(api, source, max_error_pct="10").json()["id"])
    assert job.state == "succeeded", job.error
    assert (job.rows_total, job.rows_done, job.rows_failed) == (21, 20, 1)
    body = b"".join(api.get(f"/api/v1/batch-jobs/{job.pk}/errors").streaming_content).decode()
    assert "a line with 3 fields where the header has 5" in body


def test_a_cancelled_job_runs_no_more_chunks_and_resumes_where_it_stopped(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    source = write_csv(tmp_path / "input.csv", rows(100))
    job_id = start(api, source, chunk_rows="25").json()["id"]
    services.job_plan(job_id=job_id)
    assert services.chunk_run(job_id=job_id, index=0).status == "done"
    assert api.post(f"/api/v1/batch-jobs/{job_id}/cancel").json()["state"] == "cancelled"
    assert services.chunk_run(job_id=job_id, index=1).status == "skipped"
    assert BatchChunk.objects.filter(job_id=job_id, state="done").count() == 1
    assert api.post(f"/api/v1/batch-jobs/{job_id}/cancel").status_code == 409

    assert api.post(f"/api/v1/batch-jobs/{job_id}/resume").json()["state"] == "running"
    job = run(job_id)
    assert job.state == "succeeded"
    assert BatchChunk.objects.get(job_id=job_id, index=0).attempts == 1  # kept, not run again
    assert [r["id"] for r in result_rows(api, job)] == [f"k{i}" for i in range(100)]


def test_a_chunk_run_twice_is_counted_once(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    source = write_csv(tmp_path / "input.csv", rows(60))
    job_id = start(api, source, chunk_rows="30").json()["id"]
    services.job_plan(job_id=job_id)
    assert services.chunk_run(job_id=job_id, index=0).status == "done"
    assert services.chunk_run(job_id=job_id, index=0).status == "skipped"
    assert BatchJob.objects.get(pk=job_id).rows_done == 30


def test_a_chunk_whose_rows_all_fail_leaves_the_result_columns_intact(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    records = rows(40)
    for record in records[:10]:
        record["f0"] = "bad"
    source = write_csv(tmp_path / "input.csv", records)
    job = run(start(api, source, chunk_rows="10", max_error_pct="50", output_format="parquet").json()["id"])
    assert job.state == "succeeded", job.error
    assert job.output_columns == ["id", "y_0", "y_1", "y_2"]
    assert [r["id"] for r in result_rows(api, job)] == [f"k{i}" for i in range(10, 40)]


def write_row_groups(path: Any, records: list[dict[str, Any]], group_rows: int) -> Any:
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(records), path, row_group_size=group_rows)
    return path


def test_a_parquet_input_is_planned_from_its_row_groups_and_read_in_place(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    records = rows(1000)
    records[250]["f2"] = None  # a bad value in the third row group: its row number is the input's
    source = write_row_groups(tmp_path / "input.parquet", records, group_rows=100)
    assert pq.ParquetFile(source).num_row_groups == 10
    job_id = start(api, source, chunk_rows="250").json()["id"]
    assert services.job_plan(job_id=job_id) == "planned 5 chunks"  # 2 whole row groups (200 rows) each
    job = BatchJob.objects.get(pk=job_id)
    assert job.chunks_from == "input"
    assert not storage.chunks_dir(job_id).exists()  # the input was not rewritten
    assert list(job.chunks.values_list("row_start", "row_count")) == [(i * 200, 200) for i in range(5)]
    job = run(job_id)
    assert job.state == "succeeded", job.error
    assert (job.rows_done, job.rows_failed) == (999, 1)
    assert [r["id"] for r in result_rows(api, job)] == [f"k{i}" for i in range(1000) if i != 250]
    errors = b"".join(api.get(f"/api/v1/batch-jobs/{job.pk}/errors").streaming_content).decode()
    assert errors.splitlines()[1:] == ["250,f2,missing value"]
    detail = api.get(f"/api/v1/batch-jobs/{job.pk}/").json()
    assert detail["input"]["sha256"] == storage.file_sha256(source)[0]


def test_a_parquet_row_group_larger_than_a_chunk_is_rewritten_into_chunk_files(mlp4, engineer, tmp_path):
    api = client_for(engineer)
    source = write_row_groups(tmp_path / "input.parquet", rows(600), group_rows=400)
    job_id = start(api, source, chunk_rows="250").json()["id"]
    services.job_plan(job_id=job_id)
    job = BatchJob.objects.get(pk=job_id)
    assert job.chunks_from == "files"
    assert list(job.chunks.values_list("row_count", flat=True)) == [250, 250, 100]
    job = run(job_id)
    assert job.state == "succeeded", job.error
    assert [r["id"] for r in result_rows(api, job)] == [f"k{i}" for i in range(600)]


def test_a_parquet_path_input_changed_after_the_plan_fails_the_job(mlp4, engineer, tmp_path, data_dir):
    api = client_for(engineer)
    source = write_row_groups(data_dir / "in.parquet", rows(400), group_rows=100)
    body = {"model": "mlp4", "version": 1, "passthrough": ["id"], "input_path": "in.parquet", "chunk_rows": 200}
    response = api.post("/api/v1/batch-jobs/", body, format="json")
    assert response.status_code == 201, response.json()
    job_id = response.json()["id"]
    services.job_plan(job_id=job_id)
    assert services.chunk_run(job_id=job_id, index=0).status == "done"
    write_row_groups(source, rows(400, start=5) + rows(5), group_rows=100)  # other rows, same count
    assert services.chunk_run(job_id=job_id, index=1).status == "error"
    job = BatchJob.objects.get(pk=job_id)
    assert job.state == "failed"
    assert "the input file changed since the job was planned" in job.error
