from __future__ import annotations

import pytest

from registry.models import ModelVersion, RegisteredModel
from tests.dashboard.conftest import seed_models

pytestmark = pytest.mark.django_db


def test_the_model_list_shows_models_with_their_latest_and_production_versions(browser_client, engineer):
    seed_models(2, 3, user=engineer)
    html = browser_client.get("/models/").content.decode()
    assert "model-000" in html and "model-001" in html
    assert 'href="/models/model-000/versions/3/"' in html


def test_the_model_list_filters_by_search_tag_stage_and_status(browser_client, engineer):
    seed_models(3, 1, user=engineer)
    RegisteredModel.objects.filter(name="model-001").update(tags=["vision"])
    ModelVersion.objects.filter(model__name="model-002").update(status="failed", stage="Staging")

    def names(query: str) -> set[str]:
        html = browser_client.get(f"/models/?{query}").content.decode()
        return {n for n in ("model-000", "model-001", "model-002") if f">{n}<" in html}

    assert names("search=001") == {"model-001"}
    assert names("tag=vision") == {"model-001"}
    assert names("status=failed") == {"model-002"}
    assert names("stage=Staging") == {"model-002"}


def test_an_unknown_filter_value_is_ignored_rather_than_an_error(browser_client, engineer):
    seed_models(1, 1, user=engineer)
    response = browser_client.get("/models/?stage=Bogus&status=%3Cscript%3E&page=zzz")
    assert response.status_code == 200
    assert "model-000" in response.content.decode()


def test_the_model_list_is_paginated(browser_client, engineer):
    seed_models(30, 1, user=engineer)
    first = browser_client.get("/models/").content.decode()
    second = browser_client.get("/models/?page=2").content.decode()
    assert "model-000" in first and "model-029" not in first
    assert "model-029" in second and "Page 2 of 2" in second


def test_the_model_page_shows_versions_stages_and_the_upload_panel_to_engineers(browser_client, engineer):
    seed_models(1, 3, user=engineer)
    html = browser_client.get("/models/model-000/").content.decode()
    assert "v3" in html and "Production" in html
    assert 'id="dropzone"' in html


def test_a_viewer_sees_no_upload_panel_or_register_form(viewer_client, engineer):
    seed_models(1, 1, user=engineer)
    assert 'id="dropzone"' not in viewer_client.get("/models/model-000/").content.decode()
    assert "Register a model" not in viewer_client.get("/models/").content.decode()


def test_the_version_page_shows_signature_metrics_lineage_and_checks(browser_client, engineer):
    seed_models(1, 1, user=engineer)
    ModelVersion.objects.filter(model__name="model-000").update(
        metadata={"metrics": {"auc": 0.88}, "code_commit": "4f2a9c1", "training_data": "s3://bucket/train.parquet"},
        validation_report={"ok": True, "checks": [{"name": "onnx_checker", "ok": True, "duration_ms": 3.25}]},
    )
    html = browser_client.get("/models/model-000/versions/1/").content.decode()
    for expected in ("auc", "0.88", "4f2a9c1", "s3://bucket/train.parquet", "onnx_checker", "3.2 ms", "float32"):
        assert expected in html, expected
    assert "/api/v1/models/model-000/versions/1/artifact" in html


def test_a_missing_model_or_version_is_a_404_page(browser_client):
    assert browser_client.get("/models/nope/").status_code == 404
    assert browser_client.get("/models/nope/versions/3/").status_code == 404
