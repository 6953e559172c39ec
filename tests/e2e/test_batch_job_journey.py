"""A user uploads a CSV on a version's page, watches the job's progress and downloads the result."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.batch.conftest import FEATURES, ready_version, rows, write_csv
from tests.e2e.conftest import sign_in
from tests.onnx_models import mlp

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def batch_store(settings, tmp_path):
    settings.BATCH_STORE = tmp_path / "batch"


def test_a_csv_uploaded_on_the_version_page_is_scored_and_downloaded_with_its_keys(page, engineer, tmp_path):
    ready_version("mlp4", mlp(hidden=8, features=4, classes=3), metadata={"feature_names": FEATURES})
    records = rows(500)
    records[3]["f1"] = "n/a"
    data = write_csv(tmp_path / "customers.csv", records).read_bytes()
    sign_in(page, "erin")
    page.goto("/models/mlp4/versions/1/")
    page.get_by_label("Table to score (CSV, Parquet or JSON Lines)").set_input_files(
        files=[{"name": "customers.csv", "mimeType": "text/csv", "buffer": data}]
    )
    page.get_by_label("Key column(s) copied to the output").fill("id")
    page.get_by_role("button", name="Start a batch job").click()
    page.wait_for_url("**/batch/*/")
    page.locator("#job-state", has_text="succeeded").wait_for(timeout=60_000)  # the page polls the API
    assert page.locator("#job-progress").evaluate("bar => bar.value") == 1
    assert page.locator("#rows-done").inner_text() == "499"
    assert page.locator("#rows-failed").inner_text() == "1"
    with page.expect_download() as download:
        page.get_by_role("link", name="Download result (csv)").click()
    body = Path(download.value.path()).read_text()
    out = list(csv.DictReader(io.StringIO(body)))
    assert [r["id"] for r in out] == [f"k{i}" for i in range(500) if i != 3]
    assert set(out[0]) == {"id", "y_0", "y_1", "y_2"}
