"""In a real Chromium: the pipeline page draws the graph; the editor refuses what the API
refuses (naming step and types) and saves a corrected spec as a new version."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inference.pipelines import services as pipeline_services
from tests.e2e.conftest import sign_in
from tests.pipelines.conftest import fraud_spec, fraud_versions  # noqa: F401 - the fixture

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.mark.usefixtures("fraud_versions")
def test_the_editor_checks_like_the_api_and_saves_a_version(page: Any, engineer: Any) -> None:
    spec = fraud_spec("cards", 0.5)
    pipeline_services.pipeline_create(name="fraud", spec=spec, user=engineer)
    sign_in(page, "erin")
    page.goto("/pipelines/")
    page.get_by_role("link", name="fraud").click()
    page.wait_for_url("**/pipelines/fraud/")
    graph = page.get_by_role("img", name="pipeline graph")
    assert graph.locator("g.node").count() == 4 + 2 + 2  # steps, inputs, outputs
    assert graph.locator('g[data-step="ensemble"]').text_content().startswith("ensemble")
    bad = json.loads(json.dumps(spec))
    bad["steps"][2]["ops"][0]["datatype"] = "FP64"
    page.get_by_label("Spec (JSON)").fill(json.dumps(bad, indent=2))
    page.get_by_role("button", name="Check").click()
    result = page.locator("#editor-result")
    result.filter(has_text="FP64").wait_for()
    assert 'step "ensemble"' in result.inner_text() and "expects FP32 [-1, 4]" in result.inner_text()
    page.get_by_label("Spec (JSON)").fill(json.dumps(spec, indent=2))
    page.get_by_role("button", name="Check").click()
    result.filter(has_text="lookup → prep → ensemble → business").wait_for()
    page.get_by_label("Comment").fill("same graph, from the editor")
    page.get_by_role("button", name="Save as a new version").click()
    page.wait_for_url("**/pipelines/fraud/?version=2")
    assert page.get_by_role("heading", level=1).inner_text() == "fraud v2"
