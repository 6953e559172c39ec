"""The try-it panel's Explain button draws the attributions as a Plotly bar chart."""

from __future__ import annotations

import numpy as np
import pytest

from inference import api_keys, endpoints, traffic
from monitoring import drift
from tests import onnx_models
from tests.e2e.conftest import sign_in
from tests.inference.conftest import version_add

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_explain_draws_one_bar_per_feature(page, engineer):
    version_add("lin", onnx_models.linear(np.array([[1.0], [-2.0], [0.5]]), np.zeros(1)), engineer)
    endpoint = endpoints.endpoint_create(name="lin", user=engineer)
    traffic.traffic_policy_revise(
        endpoint=endpoint, routes=[{"model": "lin", "version": 1, "role": "primary", "weight": 100}], user=engineer
    )
    reference = np.random.default_rng(0).normal(size=(30, 3))
    drift.reference_stats_set(
        model="lin", version=1, features={f"x[{j}]": reference[:, j] for j in range(3)}, source="upload", user=engineer
    )
    _, key = api_keys.api_key_create(name="e2e", endpoints=[endpoint], user=engineer)

    sign_in(page, "erin")
    page.goto("/endpoints/lin/")
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_label("Request body (JSON)").fill('{"instances": [[1.0, 2.0, 3.0]]}')
    page.get_by_role("button", name="Explain").click()
    page.locator("#try-status[data-status]").wait_for()
    assert page.locator("#try-status").get_attribute("data-status") == "200", page.locator("#try-output").inner_text()
    chart = page.get_by_role("img", name="Feature attributions")
    chart.locator(".bars .point").first.wait_for()
    assert chart.locator(".bars .point").count() == 3
    assert chart.get_attribute("data-features") == "3"
    # The largest attribution (x[1]: -2 * (2 - mean)) is the top bar (sorted by magnitude).
    assert '"x[1]"' in page.locator("#try-output").inner_text()
