"""The version page's global importance: mean |attribution| over sampled traffic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from accounts.models import Team
from inference import endpoints, traffic
from monitoring import drift
from monitoring.models import InputSample
from registry.models import RegisteredModel
from tests import onnx_models
from tests.inference.conftest import version_add

pytestmark = pytest.mark.django_db

WEIGHTS = np.array([[2.0], [-1.0], [0.0]])


def linear_with_traffic(engineer: Any, *, serve: bool = True, sampled: bool = True) -> np.ndarray:
    """Model "lin" v1 (y = 2 x0 - x1), served by endpoint "lin", with a reference and sampled rows."""
    version_add("lin", onnx_models.linear(WEIGHTS, np.zeros(1)), engineer)
    if serve:
        endpoint = endpoints.endpoint_create(name="lin", user=engineer)
        traffic.traffic_policy_revise(
            endpoint=endpoint, routes=[{"model": "lin", "version": 1, "role": "primary", "weight": 100}], user=engineer
        )
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(25, 3))
    drift.reference_stats_set(
        model="lin", version=1, features={f"x[{j}]": reference[:, j] for j in range(3)}, source="upload", user=engineer
    )
    rows = rng.normal(loc=1.0, size=(20, 3)).astype(np.float32).astype(float)
    if sampled:
        InputSample.objects.create(
            endpoint="lin",
            deployment="lin:1",
            minute=timezone.now().replace(second=0, microsecond=0),
            features={f"x[{j}]": rows[:, j].tolist() for j in range(3)},
            rows=20,
        )
    return np.abs(WEIGHTS[:, 0] * (rows - reference.mean(axis=0))).mean(axis=0)


def test_importance_is_the_mean_absolute_attribution_of_sampled_rows(browser_client: Any, engineer: Any) -> None:
    expected = linear_with_traffic(engineer)
    page = browser_client.get("/models/lin/versions/1/").content.decode()
    assert 'id="importance-compute"' in page and "/assets/plotly-" in page
    response = browser_client.get("/models/lin/versions/1/importance.json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["rows"] == 20 and body["model_calls"] >= 1
    got = [body["importance"][f"x[{j}]"] for j in range(3)]
    np.testing.assert_allclose(got, expected, atol=1e-3)
    assert got[2] == pytest.approx(0.0, abs=1e-6)


def test_importance_says_why_it_cannot_be_computed(browser_client: Any, engineer: Any) -> None:
    linear_with_traffic(engineer, serve=False)
    response = browser_client.get("/models/lin/versions/1/importance.json")
    assert response.status_code == 409 and "no ready deployment" in response.json()["error"]


def test_another_teams_version_is_a_404(browser_client: Any, engineer: Any) -> None:
    linear_with_traffic(engineer)
    RegisteredModel.objects.filter(name="lin").update(team=Team.objects.create(name="fraud"))
    assert browser_client.get("/models/lin/versions/1/importance.json").status_code == 404
